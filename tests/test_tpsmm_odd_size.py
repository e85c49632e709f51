"""TPSMM at frame sizes its anti-aliased down-sampling does not divide, against the original
implementation's numbers (tests/data/tpsmm_fixture_odd, see its README.md).

TPSMM subsamples with nearest interpolation (floor(H * scale) rows), FOMM by slicing every
1/scale-th row (ceil(H * scale) rows); each family must keep its own rule."""
import copy

import pytest
import torch
import yaml

from modules.build import build_models
from modules.model import ImagePyramide
from modules.tpsmm.anti_alias import TpsAntiAliasInterpolation2d
from modules.tpsmm.model import GeneratorFullModel
from modules.util import AntiAliasInterpolation2d
from tests.conftest import DATA, assert_close
from tests.tpsmm_fixture import TPSMM_FIXTURE_DIR, build_checkpoint

ODD_DIR = DATA / 'tpsmm_fixture_odd'
SCALES = (0.5, 0.25, 0.125)
TRAIN_SEED, TRAIN_EPOCH = 2434, 2  # as the fixture's README
FIXTURE_KEYS = 54


@pytest.fixture(scope='module')
def odd_ref():
    return torch.load(ODD_DIR / 'fixtures.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def base_config():
    return yaml.safe_load((TPSMM_FIXTURE_DIR / 'config.yaml').read_text())


@pytest.fixture(scope='module')
def checkpoint():
    return build_checkpoint()


def images(ref):
    return {'45x61': ref['inputs/image_45x61'], '66x98': ref['inputs/source'], '67x99': ref['inputs/image_67x99']}


def single_mask_config(config):
    """The fixture config with one inpainting down block and one occlusion map (the README's
    'single-mask config'), the only TPSMM layout whose inpainting network runs at 66x98."""
    config = copy.deepcopy(config)
    config['model_params']['common_params']['multi_mask'] = False
    config['model_params']['generator_params']['num_down_blocks'] = 1
    config['train_params']['loss_weights']['warp_loss'] = 0
    config['train_params']['vgg19_weights'] = 'portable'
    return config


def single_mask_state(checkpoint):
    """State dicts of the single-mask config, taken from the fixture checkpoint by the README's rule:
    dense motion without `up.*`, its `occlusion.1` (the map on the last hourglass level) as
    `occlusion.0`; inpainting `first`, `down_blocks.0`, `final` as they are, `up_blocks.0` from the
    finest level `up_blocks.2` (input channels [:16]), `resblock.0/1` from `resblock.4/5` (channels [:16])."""
    state = {name: checkpoint[name] for name in ('kp_detector', 'bg_predictor')}
    dense = {k: v for k, v in checkpoint['dense_motion_network'].items() if not k.startswith(('up.', 'occlusion.'))}
    dense.update({f'occlusion.0.{p}': checkpoint['dense_motion_network'][f'occlusion.1.{p}']
                  for p in ('weight', 'bias')})
    state['dense_motion_network'] = dense
    inpainting = {}
    for key, value in checkpoint['inpainting_network'].items():
        module, index, rest = (key.split('.', 2) + [''])[:3]
        if module in ('first', 'final') or (module == 'down_blocks' and index == '0'):
            inpainting[key] = value
        elif module == 'up_blocks' and index == '2':
            inpainting[f'up_blocks.0.{rest}'] = value[:, :16] if rest == 'conv.weight' else value
        elif module == 'resblock' and index in ('4', '5'):
            inpainting[f'resblock.{int(index) - 4}.{rest}'] = value[:16, :16] if value.dim() == 4 else value[:16]
    state['inpainting_network'] = inpainting
    return state


def loaded(config, state, names, train=False):
    models = build_models(config['model_params'], names=names)
    for name, model in models.items():
        model.load_state_dict(state[name], strict=True)
        model.train(train)
    return models


def test_the_fixture_is_small_and_complete(odd_ref):
    assert (ODD_DIR / 'fixtures.pt').stat().st_size < 2_000_000
    assert len(odd_ref) == FIXTURE_KEYS


@pytest.mark.parametrize('size', ['45x61', '66x98', '67x99'])
@pytest.mark.parametrize('scale', SCALES)
def test_tpsmm_anti_alias_floors_as_the_original(odd_ref, size, scale):
    image = images(odd_ref)[size]
    ours = TpsAntiAliasInterpolation2d(3, scale)
    with torch.no_grad():
        out = ours(image)
        fomm = AntiAliasInterpolation2d(3, scale)(image)
    h, w = image.shape[2:]
    assert out.shape[2:] == (int(h * scale), int(w * scale))  # floor
    assert_close(out, odd_ref[f'anti_alias/{size}/{scale}'], f'{size}@{scale}')
    # the same rows and columns (0, k, 2k, ...) as FOMM's, without FOMM's last one when k does not divide
    assert torch.equal(out, fomm[:, :, :out.shape[2], :out.shape[3]])
    assert list(ours.state_dict()) == ['weight'] and torch.equal(ours.weight, AntiAliasInterpolation2d(3, scale).weight)


def test_tpsmm_rule_picks_every_kth_pixel_floor_many():
    """Nearest interpolation by 1/k keeps rows 0, k, ..., k * (floor(n / k) - 1) at every size."""
    for scale in SCALES:
        k = int(1 / scale)
        down = TpsAntiAliasInterpolation2d(1, scale)
        for n in range(k, 140):
            x = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1).expand(1, 1, n, n).contiguous()
            assert torch.equal(down.subsample(x)[0, 0, :, 0], torch.arange(0, k * (n // k), k).float()), (scale, n)


def test_fomm_anti_alias_still_ceils(odd_ref):
    image = odd_ref['inputs/image_45x61']
    with torch.no_grad():
        out = AntiAliasInterpolation2d(3, 0.5)(image)
    assert out.shape[2:] == (23, 31)
    assert_close(out[:, :, :22, :30], odd_ref['anti_alias/45x61/0.5'], 'the rows both rules keep')
    for scale, size in ((0.25, (12, 16)), (0.125, (6, 8))):
        assert AntiAliasInterpolation2d(3, scale)(image).shape[2:] == size
    assert ImagePyramide([1, 0.5], 3)(image)['prediction_0.5'].shape[2:] == (23, 31)


def test_image_pyramid_with_tpsmms_down_sampling(odd_ref):
    image = odd_ref['inputs/image_45x61']
    pyramid = ImagePyramide([1, 0.5, 0.25, 0.125], 3, down_class=TpsAntiAliasInterpolation2d)
    with torch.no_grad():
        out = pyramid(image)
    assert out['prediction_1'] is image
    for scale in ('0.5', '0.25', '0.125'):
        assert_close(out[f'prediction_{scale}'], odd_ref[f'pyramid/45x61/prediction_{scale}'], scale)
    # same modules, same keys as FOMM's pyramid
    assert list(pyramid.state_dict()) == list(ImagePyramide([1, 0.5, 0.25, 0.125], 3).state_dict())


def test_keypoints_and_background_at_odd_size(base_config, checkpoint, odd_ref):
    models = loaded(base_config, checkpoint, ['kp_detector', 'bg_predictor'])
    source, driving = odd_ref['inputs/source'], odd_ref['inputs/driving'][:, :, 1]
    with torch.no_grad():
        assert_close(models['kp_detector'](source)['fg_kp'], odd_ref['kp_source/fg_kp'], 'kp_source')
        assert_close(models['kp_detector'](driving)['fg_kp'], odd_ref['kp_driving/1/fg_kp'], 'kp_driving')
        assert_close(models['bg_predictor'](source, driving), odd_ref['bg_param/1'], 'bg_param')


def kp(ref, name):
    return {'fg_kp': ref[f'{name}/fg_kp']}


@pytest.mark.parametrize('variant', ['bg', 'nobg'])
def test_dense_motion_at_odd_size(base_config, checkpoint, odd_ref, variant):
    """The fixture config (3 hourglass blocks, four occlusion maps) at 66x98: TPSMM works on 16x24."""
    network = loaded(base_config, checkpoint, ['dense_motion_network'])['dense_motion_network']
    with torch.no_grad():
        out = network(source_image=odd_ref['inputs/source'], kp_driving=kp(odd_ref, 'kp_driving/1'),
                      kp_source=kp(odd_ref, 'kp_source'), bg_param=odd_ref['bg_param/1'] if variant == 'bg' else None)
    prefix = f'dense_motion/{variant}'
    for name in ('deformed_source', 'contribution_maps', 'deformation'):
        assert_close(out[name], odd_ref[f'{prefix}/{name}'], name)
    assert len(out['occlusion_map']) == 4
    for i, occlusion in enumerate(out['occlusion_map']):
        assert_close(occlusion, odd_ref[f'{prefix}/occlusion_map/{i}'], f'occlusion_map/{i}')
    assert out['deformation'].shape[1:3] == (16, 24)


@pytest.mark.parametrize('variant', ['bg', 'nobg'])
def test_single_mask_inpainting_at_odd_size(base_config, checkpoint, odd_ref, variant):
    """One occlusion map at 16x24, resized by the inpainting network to its 33x49 and 66x98 maps."""
    config = single_mask_config(base_config)
    models = loaded(config, single_mask_state(checkpoint), ['dense_motion_network', 'inpainting_network'])
    source = odd_ref['inputs/source']
    with torch.no_grad():
        dense_motion = models['dense_motion_network'](
            source_image=source, kp_driving=kp(odd_ref, 'kp_driving/1'), kp_source=kp(odd_ref, 'kp_source'),
            bg_param=odd_ref['bg_param/1'] if variant == 'bg' else None)
        out = models['inpainting_network'](source, dense_motion)
    prefix = f'single_mask/dense_motion/{variant}'
    assert_close(dense_motion['deformation'], odd_ref[f'{prefix}/deformation'], 'deformation')
    assert_close(dense_motion['contribution_maps'], odd_ref[f'{prefix}/contribution_maps'], 'contribution_maps')
    assert [tuple(m.shape) for m in dense_motion['occlusion_map']] == [(1, 1, 16, 24)]
    assert_close(dense_motion['occlusion_map'][0], odd_ref[f'{prefix}/occlusion_map/0'], 'occlusion_map')
    prefix = f'single_mask/inpainting/{variant}'
    assert_close(out['prediction'], odd_ref[f'{prefix}/prediction'], 'prediction')
    if variant == 'bg':
        assert_close(out['deformed'], odd_ref[f'{prefix}/deformed'], 'deformed')
        assert_close(out['warped_encoder_maps'][0], odd_ref[f'{prefix}/warped_encoder_maps/0'], 'warped_encoder_maps')
        assert [tuple(m.shape) for m in out['warped_encoder_maps']] == [(1, 16, 33, 49), (1, 8, 66, 98)]


def test_training_iteration_at_odd_size(base_config, checkpoint, odd_ref):
    """One GeneratorFullModel step (train mode, epoch 2: TPS dropout and the bg loss on) of the
    single-mask config at 66x98; the perceptual pyramid works at 33x49 and 16x24."""
    config = single_mask_config(base_config)
    names = ['kp_detector', 'bg_predictor', 'dense_motion_network', 'inpainting_network']
    models = loaded(config, single_mask_state(checkpoint), names, train=True)
    full = GeneratorFullModel(models['kp_detector'], models['bg_predictor'], models['dense_motion_network'],
                              models['inpainting_network'], config['train_params'])
    source, driving = odd_ref['inputs/source'], odd_ref['inputs/driving']
    x = {'source': torch.cat([source, driving[:, :, 0]]), 'driving': torch.cat([driving[:, :, 2], driving[:, :, 1]])}
    torch.manual_seed(TRAIN_SEED)
    losses, generated = full(x, epoch=TRAIN_EPOCH)
    assert sorted(losses) == ['bg', 'equivariance_value', 'perceptual']
    for name, value in losses.items():
        assert_close(value.detach(), odd_ref[f'train/losses/{name}'], name)
    for name in ('prediction', 'contribution_maps'):
        assert_close(generated[name].detach(), odd_ref[f'train/generated/{name}'], name)
    assert_close(generated['occlusion_map'][0].detach(), odd_ref['train/generated/occlusion_map/0'], 'occlusion_map')
    for name in ('kp_source', 'kp_driving', 'transformed_kp'):
        assert_close(generated[name]['fg_kp'].detach(), odd_ref[f'train/generated/{name}/fg_kp'], name)
    with torch.no_grad():
        pyramid = full.pyramid(x['driving'])
    for scale in ('0.5', '0.25'):
        assert_close(pyramid[f'prediction_{scale}'], odd_ref[f'train/pyramid_driving/prediction_{scale}'], scale)
