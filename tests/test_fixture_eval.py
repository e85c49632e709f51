"""Eval-mode forward passes against the original implementation's outputs (fixture-small)."""
import pytest
import torch
import torch.nn.functional as F

from modules.build import build_models
from modules.checkpoint import load_state
from modules.model import ImagePyramide
from tests.conftest import FIXTURE_DIR, assert_close

T = 4


@pytest.fixture(scope='module')
def models(fixture_config):
    models = build_models(fixture_config['model_params'])
    load_state(FIXTURE_DIR / 'checkpoint.pth.tar', models)
    for m in models.values():
        m.eval()
    return models


def kp_of(ref, prefix):
    return {'value': ref[prefix + '/value'], 'jacobian': ref[prefix + '/jacobian']}


def test_keypoints_match_original(models, ref):
    with torch.no_grad():
        kp_source = models['kp_detector'](ref['inputs/source'])
        for name in ('value', 'jacobian'):
            assert_close(kp_source[name], ref['kp_source/' + name], 'kp_source/' + name)
        for t in range(T):
            kp_driving = models['kp_detector'](ref['inputs/driving'][:, :, t])
            for name in ('value', 'jacobian'):
                assert_close(kp_driving[name], ref[f'kp_driving/{t}/{name}'], f'kp_driving/{t}/{name}')


@pytest.mark.parametrize('t', range(T))
def test_generator_outputs_match_original(models, ref, t):
    with torch.no_grad():
        out = models['generator'](ref['inputs/source'], kp_source=kp_of(ref, 'kp_source'),
                                  kp_driving=kp_of(ref, f'kp_driving/{t}'))
    expected = {k.split('/')[-1]: v for k, v in ref.items() if k.startswith(f'generator/{t}/')}
    assert list(out) == list(expected), 'same keys in the same order'
    for name, value in expected.items():
        assert_close(out[name], value, f'generator/{t}/{name}')


@pytest.mark.parametrize('t', range(T))
def test_dense_motion_deformation_matches_original(models, ref, t):
    dense_motion = models['generator'].dense_motion_network
    with torch.no_grad():
        out = dense_motion(source_image=ref['inputs/source'], kp_driving=kp_of(ref, f'kp_driving/{t}'),
                           kp_source=kp_of(ref, 'kp_source'))
    assert_close(out['deformation'], ref[f'dense_motion/{t}/deformation'], 'deformation')
    assert_close(out['mask'], ref[f'generator/{t}/mask'], 'mask')


def test_dense_motion_internals_match_original(models, ref):
    dense_motion = models['generator'].dense_motion_network
    with torch.no_grad():
        source_downscaled = dense_motion.down(ref['inputs/source'])
        assert_close(source_downscaled, ref['dense_motion_internals/source_downscaled'], 'source_downscaled')
        kp_driving, kp_source = kp_of(ref, 'kp_driving/1'), kp_of(ref, 'kp_source')
        heatmap = dense_motion.create_heatmap_representations(source_downscaled, kp_driving, kp_source)
        assert_close(heatmap, ref['dense_motion_internals/heatmap_representation'], 'heatmap_representation')
        sparse = dense_motion.create_sparse_motions(source_downscaled, kp_driving, kp_source)
        assert_close(sparse, ref['dense_motion_internals/sparse_motions'], 'sparse_motions')


def test_discriminator_matches_original(models, ref):
    discriminator = models['discriminator']
    with torch.no_grad():
        pyramid = ImagePyramide(discriminator.scales, 3)(ref['inputs/source'])
        for key, value in ref.items():
            if key.startswith('discriminator_input_pyramid/'):
                assert_close(pyramid[key.split('/')[1]], value, key)
        out = discriminator(pyramid, kp=kp_of(ref, 'kp_source'))
    checked = 0
    for key, value in ref.items():
        if key.startswith('discriminator/'):
            parts = key.split('/')[1:]
            actual = out[parts[0]] if len(parts) == 1 else out[parts[0]][int(parts[1])]
            assert_close(actual, value, key)
            checked += 1
    assert checked == 5


def test_image_pyramid_matches_original(ref):
    pyramid = ImagePyramide([1, 0.5, 0.25, 0.125], 3)
    with torch.no_grad():
        out = pyramid(ref['inputs/driving'][:, :, 0])
    assert torch.equal(out['prediction_1'], ref['inputs/driving'][:, :, 0])
    for scale in ('0.5', '0.25', '0.125'):
        assert_close(out['prediction_' + scale], ref['pyramid_driving0/prediction_' + scale], scale)


def warp_and_decode(generator, features, source, kp_driving, kp_source):
    """The generator's forward written out from its pieces: `features` warped by the dense motion of
    `source` (grid_sample called here, not the generator's warp), masked by the occlusion map, both
    resized bilinearly to the features' size, then decode()."""
    motion = generator.dense_motion_network(source_image=source, kp_driving=kp_driving, kp_source=kp_source)
    size = features.shape[2:]
    deformation = F.interpolate(motion['deformation'].permute(0, 3, 1, 2), size=size, mode='bilinear',
                                align_corners=False).permute(0, 2, 3, 1)
    occlusion = F.interpolate(motion['occlusion_map'], size=size, mode='bilinear', align_corners=False)
    return generator.decode(F.grid_sample(features, deformation, align_corners=False) * occlusion)


def test_source_features_can_be_reused(models, ref):
    """source_features replaces the encoding of the source: the source's own features give the
    original's frame; another image's features (driving frame 0) give those features moved by the
    source's motion (computed here from the generator's pieces), a different frame, so the argument
    is really used."""
    generator, source = models['generator'], ref['inputs/source']
    kp_source, kp_driving = kp_of(ref, 'kp_source'), kp_of(ref, 'kp_driving/2')
    with torch.no_grad():
        own = generator(source, kp_source=kp_source, kp_driving=kp_driving,
                        source_features=generator.encode(source))['prediction']
        other_features = generator.encode(ref['inputs/driving'][:, :, 0])
        other = generator(source, kp_source=kp_source, kp_driving=kp_driving,
                          source_features=other_features)['prediction']
        expected_other = warp_and_decode(generator, other_features, source, kp_driving, kp_source)
        expected_own = warp_and_decode(generator, generator.encode(source), source, kp_driving, kp_source)
    assert_close(own, ref['generator/2/prediction'], 'prediction')
    assert_close(expected_own, ref['generator/2/prediction'], 'hand-written warp and decode')
    assert_close(other, expected_other, 'prediction from the other features', atol=1e-5, rtol=0)
    assert (other - ref['generator/2/prediction']).abs().max() > 1e-2, 'the features given are used'


@pytest.mark.parametrize('min_pixels', [None, 0])
def test_inference_rewrites_give_the_same_outputs(fixture_config, ref, min_pixels, monkeypatch):
    """optimize_for_inference (batch norms folded, upsampling convolutions as transposed ones) changes
    the outputs by float rounding only; min_pixels=0 sends every upsampling through the transposed
    convolution (the fixture's feature maps are small)."""
    from modules.inference import NearestUpsampleConv2d, optimize_for_inference
    from modules.util import fold_batchnorm
    if min_pixels is not None:
        monkeypatch.setattr(NearestUpsampleConv2d, 'MIN_PIXELS', min_pixels)
    models = build_models(fixture_config['model_params'], names=['kp_detector', 'generator'])
    load_state(FIXTURE_DIR / 'checkpoint.pth.tar', models)
    kp_detector = optimize_for_inference(models['kp_detector'].eval())
    generator = optimize_for_inference(models['generator'].eval())
    remaining = [name for name, m in generator.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert remaining == ['bottleneck.r0.norm1', 'bottleneck.r1.norm1'], 'only norms before a ReLU stay'
    upsampling = [name for name, m in generator.named_modules() if isinstance(m, NearestUpsampleConv2d)]
    assert 'up_blocks.0.conv' in upsampling and 'dense_motion_network.hourglass.decoder.up_blocks.0.conv' in upsampling
    with torch.no_grad():
        kp_source = kp_detector(ref['inputs/source'])
        kp_driving = kp_detector(ref['inputs/driving'][:, :, 3])
        out = generator(ref['inputs/source'], kp_source=kp_source, kp_driving=kp_driving)
    assert_close(kp_driving['value'], ref['kp_driving/3/value'], 'value')
    for name in ('mask', 'occlusion_map', 'deformed', 'prediction'):
        assert_close(out[name], ref[f'generator/3/{name}'], name)
    with pytest.raises(ValueError, match='eval'):
        fold_batchnorm(build_models(fixture_config['model_params'], names=['kp_detector'])['kp_detector'])
