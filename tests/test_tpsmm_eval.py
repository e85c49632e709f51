"""TPSMM modules: state-dict keys of every official config, and eval-mode outputs against the original
implementation's (tests/data/tpsmm_fixture_small, checkpoint rebuilt from its recipe)."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from modules.build import build_models, model_names
from modules.config import motion_model
from modules.model import ImagePyramide
from modules.tpsmm import TPS
from modules.tpsmm.anti_alias import TpsAntiAliasInterpolation2d
from tests.conftest import DATA, assert_close, flat
from tests.tpsmm_fixture import TPSMM_FIXTURE_DIR, build_checkpoint, fingerprint_mismatches

TPS_KEYS_DIR = DATA / 'tpsmm_keys'
TPS_CONFIGS = ['vox-256', 'taichi-256', 'ted-384', 'mgif-256']
T = 4


@pytest.fixture(scope='module')
def tps_ref():
    return torch.load(TPSMM_FIXTURE_DIR / 'fixtures.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def tps_config():
    return yaml.safe_load((TPSMM_FIXTURE_DIR / 'config.yaml').read_text())


@pytest.fixture(scope='module')
def checkpoint():
    return build_checkpoint()


@pytest.fixture(scope='module')
def models(tps_config, checkpoint):
    models = build_models(tps_config['model_params'])
    for name, model in models.items():
        model.load_state_dict(checkpoint[name], strict=True)
        model.eval()
    return models


def test_rebuilt_checkpoint_matches_the_fingerprints(checkpoint):
    assert fingerprint_mismatches(checkpoint=checkpoint) == []
    assert list(checkpoint) == ['inpainting_network', 'dense_motion_network', 'kp_detector', 'avd_network',
                                'optimizer_avd', 'bg_predictor', 'epoch']


@pytest.mark.parametrize('config', TPS_CONFIGS)
def test_state_dict_keys_match_the_original(config):
    reference = json.loads((TPS_KEYS_DIR / f'{config}.json').read_text())
    model_params = reference['model_params']
    assert motion_model(model_params) == 'tps'
    models = build_models(model_params, device='meta')
    expected = [name for name in ('inpainting_network', 'kp_detector', 'bg_predictor', 'dense_motion_network',
                                  'avd_network') if reference[name] is not None]
    assert sorted(models) == sorted(expected) == sorted(model_names(model_params))
    for name, model in models.items():
        ours = [(key, list(value.shape)) for key, value in model.state_dict().items()]
        assert ours == list(reference[name].items()), name  # same keys, shapes and order
        assert sum(p.numel() for p in model.parameters()) == reference['num_parameters'][name], name
        dtypes = {key: str(value.dtype).replace('torch.', '') for key, value in model.state_dict().items()
                  if value.dtype != torch.float32}
        assert dtypes == reference['details'][name]['non_float32_keys'], name


def kp(ref, prefix):
    return {'fg_kp': ref[prefix + '/fg_kp']}


def test_keypoints(models, tps_ref):
    captured = {}
    hook = models['kp_detector'].fg_encoder.fc.register_forward_hook(
        lambda module, inputs, output: captured.update(fc_input=inputs[0], fc_output=output))
    with torch.no_grad():
        kp_source = models['kp_detector'](tps_ref['inputs/source'])
        hook.remove()
        assert_close(kp_source['fg_kp'], tps_ref['kp_source/fg_kp'], 'kp_source')
        for name, value in captured.items():
            assert_close(value, tps_ref[f'kp_detector_internals/source/{name}'], name)
        for t in range(T):
            kp_driving = models['kp_detector'](tps_ref['inputs/driving'][:, :, t])
            assert_close(kp_driving['fg_kp'], tps_ref[f'kp_driving/{t}/fg_kp'], f'kp_driving/{t}')


def test_background_motion(models, tps_ref):
    source, driving = tps_ref['inputs/source'], tps_ref['inputs/driving']
    with torch.no_grad():
        for t in range(T):
            assert_close(models['bg_predictor'](source, driving[:, :, t]), tps_ref[f'bg_param/{t}'], f'bg_param/{t}')
            assert_close(models['bg_predictor'](driving[:, :, t], source), tps_ref[f'bg_param_reverse/{t}'],
                         f'bg_param_reverse/{t}')


@pytest.mark.parametrize('variant', ['bg', 'nobg'])
@pytest.mark.parametrize('t', [1, 3])
def test_dense_motion_and_inpainting(models, tps_ref, variant, t):
    source = tps_ref['inputs/source']
    bg_param = tps_ref[f'bg_param/{t}'] if variant == 'bg' else None
    with torch.no_grad():
        dense_motion = models['dense_motion_network'](source_image=source, kp_driving=kp(tps_ref, f'kp_driving/{t}'),
                                                      kp_source=kp(tps_ref, 'kp_source'), bg_param=bg_param,
                                                      dropout_flag=False)
        out = models['inpainting_network'](source, dense_motion)
    compared = 0
    for group, outputs in (('dense_motion', dense_motion), ('inpainting', out)):
        for name, value in outputs.items():
            for key, tensor in flat(f'{group}/{variant}/{t}/{name}', value).items():
                if key in tps_ref:
                    assert_close(tensor, tps_ref[key], key)
                    compared += 1
    assert compared >= (12 if (variant, t) == ('bg', 1) else 8)
    assert set(out) == {'contribution_maps', 'deformed_source', 'occlusion_map', 'deformed', 'warped_encoder_maps',
                        'prediction'}


def test_dense_motion_internals(models, tps_ref):
    network = models['dense_motion_network']
    with torch.no_grad():
        small = network.down(tps_ref['inputs/source'])
        assert_close(small, tps_ref['dense_motion_internals/source_downscaled'], 'source_downscaled')
        heatmaps = network.create_heatmap_representations(small, kp(tps_ref, 'kp_driving/1'), kp(tps_ref, 'kp_source'))
        assert_close(heatmaps, tps_ref['dense_motion_internals/heatmap_representation'], 'heatmaps')
        transformations = network.create_transformations(small, kp(tps_ref, 'kp_driving/1'),
                                                         kp(tps_ref, 'kp_source'), tps_ref['bg_param/1'])
        assert_close(transformations, tps_ref['dense_motion_internals/transformations'], 'transformations')
        assert_close(network.create_deformed_source_image(small, transformations),
                     tps_ref['dense_motion/bg/1/deformed_source'], 'deformed_source')


def test_avd_network(models, tps_ref):
    with torch.no_grad():
        for t in range(T):
            out = models['avd_network'](kp(tps_ref, 'kp_source'), kp(tps_ref, f'kp_driving/{t}'))
            assert_close(out['fg_kp'], tps_ref[f'avd/{t}/fg_kp'], f'avd/{t}')


def test_tps_from_keypoints(tps_ref):
    kp_1, kp_2 = tps_ref['tps_kp/kp_1'], tps_ref['tps_kp/kp_2']
    tps = TPS(mode='kp', bs=2, kp_1=kp_1, kp_2=kp_2)
    assert_close(tps.theta, tps_ref['tps_kp/theta'], 'theta')
    assert_close(tps.control_params, tps_ref['tps_kp/control_params'], 'control_params')
    assert torch.equal(tps.control_points, kp_1)
    assert_close(tps.transform_frame(torch.zeros(2, 3, 12, 16)), tps_ref['tps_kp/transform_frame_12x16'], 'grid')
    assert_close(tps.warp_coordinates(tps_ref['tps_kp/coordinates']), tps_ref['tps_kp/warp_coordinates'], 'warp')
    warped = tps.warp_coordinates(kp_1.reshape(1, 30, 2))
    assert_close(warped, tps_ref['tps_kp/warp_of_kp_1'], 'warp of kp_1')
    # the 30 points are batch-major: batch b's group k at 15 b + 5 k .. + 5
    own = torch.stack([torch.stack([warped[b, k, 15 * b + 5 * k:15 * b + 5 * k + 5] for k in range(3)])
                       for b in range(2)])
    assert 1e-3 < (own - kp_2).abs().max() < 0.05, 'the regularised spline does not interpolate its points'


def test_random_tps_for_the_equivariance_loss(tps_config, tps_ref):
    torch.manual_seed(1534)
    tps = TPS(mode='random', bs=2, **tps_config['train_params']['transform_params'])
    for name in ('theta', 'control_points', 'control_params'):
        assert_close(getattr(tps, name), tps_ref[f'tps_random/{name}'], name)
    frames = torch.cat([tps_ref['inputs/driving'][:, :, 0], tps_ref['inputs/source']])
    grid = tps.transform_frame(frames)
    assert_close(grid, tps_ref['tps_random/transform_frame'], 'transform_frame')
    assert_close(F.grid_sample(frames, grid, padding_mode='reflection', align_corners=True),
                 tps_ref['tps_random/transformed_frame'], 'transformed_frame')
    assert_close(tps.warp_coordinates(tps_ref['tps_random/coordinates']), tps_ref['tps_random/warp_coordinates'],
                 'warp_coordinates')
    with pytest.raises(ValueError, match='mode'):
        TPS(mode='affine', bs=1)


def test_dropout_softmax(models, tps_ref):
    torch.manual_seed(1734)
    out = models['dense_motion_network'].dropout_softmax(tps_ref['dropout_softmax/logits'], 0.3)
    assert_close(out, tps_ref['dropout_softmax/output_p0.3'], 'dropout_softmax')
    torch.manual_seed(1734)
    assert torch.equal(torch.rand(2, 4), tps_ref['dropout_softmax/rand']), 'the first draw is the keep mask'


def test_image_pyramid_matches_tpsmm(tps_ref):
    pyramid = ImagePyramide([1, 0.5, 0.25, 0.125], 3, down_class=TpsAntiAliasInterpolation2d)
    with torch.no_grad():
        out = pyramid(tps_ref['inputs/driving'][:, :, 0])
    for scale in ('0.5', '0.25', '0.125'):
        assert_close(out[f'prediction_{scale}'], tps_ref[f'pyramid_driving0/prediction_{scale}'], scale)


def test_instance_norm_blocks_are_mode_independent(models, tps_ref):
    """TPSMM's own blocks normalise per instance: train and eval modes give the same outputs."""
    network = models['inpainting_network']
    source = tps_ref['inputs/source']
    with torch.no_grad():
        evaluated = network.encode(source)[-1]
        network.train()
        trained = network.encode(source)[-1]
        network.eval()
    assert torch.equal(evaluated, trained)


def test_single_occlusion_map_keeps_tpsmms_keys(tps_config, tps_ref):
    """multi_mask: False: one occlusion map at the dense-motion resolution, stored as TPSMM's one-element
    list (keys occlusion.0.*), resized by the inpainting network where needed."""
    import copy
    model_params = copy.deepcopy(tps_config['model_params'])
    model_params['common_params']['multi_mask'] = False
    models = build_models(model_params, names=['inpainting_network', 'dense_motion_network'])
    keys = list(models['dense_motion_network'].state_dict())
    assert 'occlusion.0.weight' in keys and not any(k.startswith('up.') for k in keys)
    with torch.no_grad():
        dense_motion = models['dense_motion_network'](tps_ref['inputs/source'], kp(tps_ref, 'kp_driving/1'),
                                                      kp(tps_ref, 'kp_source'))
        out = models['inpainting_network'](tps_ref['inputs/source'], dense_motion)
    assert [tuple(m.shape) for m in dense_motion['occlusion_map']] == [(1, 1, 16, 16)]
    assert out['prediction'].shape == (1, 3, 64, 64) and torch.isfinite(out['prediction']).all()
