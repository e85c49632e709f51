"""The generator's two options that the original FOMM does not have (both off in every official config;
tests/test_state_dict_keys.py checks those key for key): generator_params.skips, warped encoder
features at every level (a U-Net over warped features), and generator_params.paste_source, the warped
source image pasted where the occlusion map says visible (TPSMM's output). Here: keys, wiring, the
cached-source path, the fast path, the config rule and the checkpoint error that names skips."""
import pytest
import torch
import torch.nn.functional as F
import yaml

from toolkit.animation import Animator
from modules.checkpoint import load_state
from modules.config import load_config
from modules.errors import CheckpointError, ConfigError
from modules.generator import OcclusionAwareGenerator
from modules.keypoint_detector import KPDetector
from tests.conftest import REPO

DENSE_MOTION = dict(block_expansion=8, max_features=32, num_blocks=2, scale_factor=0.5)


def generator(skips, num_down_blocks=2, seed=0, paste_source=False):
    torch.manual_seed(seed)
    return OcclusionAwareGenerator(num_channels=3, num_kp=5, block_expansion=8, max_features=32,
                                   num_down_blocks=num_down_blocks, num_bottleneck_blocks=1,
                                   estimate_occlusion_map=True, dense_motion_params=DENSE_MOTION,
                                   estimate_jacobian=True, skips=skips, paste_source=paste_source).eval()


def random_kp(batch, seed):
    g = torch.Generator().manual_seed(seed)
    value = torch.rand(batch, 5, 2, generator=g) * 1.6 - 0.8
    jacobian = torch.eye(2) + 0.1 * torch.randn(batch, 5, 2, 2, generator=g)
    return {'value': value, 'jacobian': jacobian}


def test_same_keys_and_only_the_decoder_inputs_widen():
    plain, skips = generator(False).state_dict(), generator(True).state_dict()
    assert list(plain) == list(skips)
    widened = {k: (tuple(plain[k].shape), tuple(skips[k].shape)) for k in plain if plain[k].shape != skips[k].shape}
    # encoder widths 8, 16, 32: up block 1 gets 16 + 16 channels, final 8 + 8; up block 0 sees the bottleneck only
    assert widened == {'up_blocks.1.conv.weight': ((8, 16, 3, 3), (8, 32, 3, 3)),
                       'final.weight': ((3, 8, 7, 7), (3, 16, 7, 7))}


def test_encode_keeps_every_level_full_resolution_first():
    source = torch.rand(2, 3, 32, 32)
    levels = generator(True).encode(source)
    assert [tuple(level.shape) for level in levels] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8)]
    torch.testing.assert_close(levels[-1], generator(False).encode(source))  # same weights, same bottleneck input
    with pytest.raises(TypeError, match='a list of levels'):
        generator(True).decode(levels[-1])
    with pytest.raises(TypeError, match='one tensor'):
        generator(False).decode(levels)


def resize(x, size):
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def warped_levels(model, features, source, kp_driving, kp_source):
    """Every encoder level of `features` warped by the dense motion of `source` and masked by its
    occlusion map, both resized to the level (grid_sample called here, not the generator's warp)."""
    motion = model.dense_motion_network(source_image=source, kp_driving=kp_driving, kp_source=kp_source)
    deformation = motion['deformation'].permute(0, 3, 1, 2)
    return [F.grid_sample(level, resize(deformation, level.shape[2:]).permute(0, 2, 3, 1), align_corners=False)
            * resize(motion['occlusion_map'], level.shape[2:]) for level in features]


def test_every_level_is_warped_masked_and_decoded_at_its_resolution():
    """The prediction is decode() of every encoder level, each warped by the deformation and masked by
    the occlusion map, both resized to that level (computed here with grid_sample directly)."""
    model, source = generator(True), torch.rand(2, 3, 32, 32)
    kp_source, kp_driving = random_kp(2, 1), random_kp(2, 6)
    with torch.no_grad():
        prediction = model(source, kp_driving, kp_source)['prediction']
        warped = warped_levels(model, model.encode(source), source, kp_driving, kp_source)
        expected = model.decode(warped)
        unwarped_top = model.decode([model.encode(source)[0]] + warped[1:])
    assert (unwarped_top - expected).abs().max() > 1e-3  # the full-resolution level counts
    torch.testing.assert_close(prediction, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('num_down_blocks', [0, 1, 2])
def test_cached_source_features_are_the_ones_warped(num_down_blocks):
    """source_features replaces the encoding of the source: with the source's own features the frame
    is the same; with another image's, it is that image's features moved by the source's motion
    (computed here), so the argument is really used."""
    model, source, other = generator(True, num_down_blocks), torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    kp_source, kp_driving = random_kp(1, 3), random_kp(1, 4)
    with torch.no_grad():
        direct = model(source, kp_driving, kp_source)['prediction']
        cached = model(source, kp_driving, kp_source, source_features=model.encode(source))['prediction']
        swapped = model(source, kp_driving, kp_source, source_features=model.encode(other))['prediction']
        expected = model.decode(warped_levels(model, model.encode(other), source, kp_driving, kp_source))
    assert torch.equal(direct, cached)
    torch.testing.assert_close(swapped, expected, atol=1e-5, rtol=0)
    assert (swapped - direct).abs().max() > 1e-2, 'the features given are used, not the source re-encoded'


def test_the_cached_features_check_catches_a_generator_that_ignores_them(monkeypatch):
    """The check above fails for a forward that re-encodes the source whatever it is given (with the
    source's own features, both would give the same frame)."""
    forward = OcclusionAwareGenerator.forward
    monkeypatch.setattr(OcclusionAwareGenerator, 'forward', lambda self, source_image, kp_driving, kp_source,
                        source_features=None: forward(self, source_image, kp_driving, kp_source))
    with pytest.raises(AssertionError):
        test_cached_source_features_are_the_ones_warped(2)


@pytest.mark.parametrize('fast', [False, True])
@pytest.mark.parametrize('paste_source', [False, True])
def test_animator_batches_equal_one_frame_at_a_time(fast, paste_source):
    """The Animator tiles the cached list of levels over a batch of driving frames."""
    model = generator(True, paste_source=paste_source)
    torch.manual_seed(5)
    kp_detector = KPDetector(block_expansion=8, num_kp=5, num_channels=3, max_features=32, num_blocks=2,
                             temperature=0.1, estimate_jacobian=True, scale_factor=0.5).eval()
    source, frames = torch.rand(1, 3, 32, 32), torch.rand(4, 3, 32, 32)
    animator = Animator(model, kp_detector, source, fast=fast)
    batched = animator(frames)[1]['prediction']
    with torch.no_grad():
        kp_source = kp_detector(source)
        single = torch.cat([model(source, kp_detector(frames[i:i + 1]), kp_source)['prediction'] for i in range(4)])
    torch.testing.assert_close(batched.float(), single, atol=3e-2 if fast else 1e-5, rtol=0)


def test_a_checkpoint_of_the_other_kind_names_skips():
    with_skips = {'generator': generator(True).state_dict()}
    with pytest.raises(CheckpointError, match=r'final\.weight.*generator_params\.skips') as error:
        load_state(with_skips, {'generator': generator(False)}, source='new.pth.tar')
    assert '\n' not in str(error.value)
    with pytest.raises(CheckpointError, match='generator_params.skips'):
        load_state({'generator': generator(False).state_dict()}, {'generator': generator(True)})
    # other mismatches get no such note
    with pytest.raises(CheckpointError) as error:
        load_state({'generator': generator(True, num_down_blocks=1).state_dict()}, {'generator': generator(True)})
    assert 'skips' not in str(error.value)


@pytest.mark.parametrize('skips', [False, True])
def test_paste_source_takes_the_warped_source_where_visible(skips):
    plain, pasting = generator(skips), generator(skips, paste_source=True)
    assert list(plain.state_dict()) == list(pasting.state_dict())  # no parameters of its own
    pasting.load_state_dict(plain.state_dict())
    source, kp_source, kp_driving = torch.rand(2, 3, 32, 32), random_kp(2, 7), random_kp(2, 8)
    with torch.no_grad():
        decoded = plain(source, kp_driving, kp_source)
        pasted = pasting(source, kp_driving, kp_source)
    visible = resize(decoded['occlusion_map'], (32, 32))  # (2, 1, 32, 32), from 16x16
    assert 0.05 < visible.mean() < 0.95
    expected = decoded['prediction'] * (1 - visible) + decoded['deformed'] * visible
    torch.testing.assert_close(pasted['prediction'], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(pasted['deformed'], decoded['deformed'])
    # the limits: fully visible -> the warped source itself, fully occluded -> the decoder's output
    ones, zeros = torch.ones(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)
    assert torch.equal(pasting.paste(decoded['prediction'], decoded['deformed'], ones), decoded['deformed'])
    assert torch.equal(pasting.paste(decoded['prediction'], decoded['deformed'], zeros), decoded['prediction'])


def test_paste_source_needs_an_occlusion_map(tmp_path):
    with pytest.raises(ValueError, match='paste_source needs an occlusion map'):
        OcclusionAwareGenerator(3, 5, 8, 32, 2, 1, estimate_occlusion_map=False, dense_motion_params=DENSE_MOTION,
                                paste_source=True)
    config = yaml.safe_load((REPO / 'config' / 'cartoon-64.yaml').read_text())
    config['model_params']['generator_params']['estimate_occlusion_map'] = False
    path = tmp_path / 'no-occlusion.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match=r'generator_params\.paste_source.*estimate_occlusion_map: True') as error:
        load_config(path)
    assert '\n' not in str(error.value)


def test_the_comparison_trains_the_bundled_recipe_and_the_original_fomm(tmp_path):
    """benchmarks/compare_families.py: 'FOMM' is config/cartoon-64.yaml with all three options, 'FOMM-original'
    the same config with them off; both load, and the original builds the original generator layout."""
    from toolkit import cartoon_quality as compare
    ours = load_config(compare.budget_config(compare.FAMILIES['FOMM'], 3, tmp_path))
    original = load_config(compare.budget_config(compare.FAMILIES['FOMM-original'], 3, tmp_path, original=True))
    for config, on in ((ours, True), (original, False)):
        generator_params = config['model_params']['generator_params']
        assert generator_params['skips'] is on and generator_params['paste_source'] is on
        assert (config['train_params']['loss_weights']['l1'] > 0) is on
        assert config['train_params']['num_epochs'] == 3 and config['train_params']['epoch_milestones'] == []
    params = dict(original['model_params']['generator_params'])
    built = OcclusionAwareGenerator(**params, **original['model_params']['common_params'])
    assert tuple(built.final.weight.shape) == (3, 32, 7, 7)  # the original's: block_expansion inputs


def test_fast_copy_of_a_pasting_generator_keeps_its_dense_motion_in_float32():
    """prepare_fast (demo.py --fast): the flow decides where the pasted source's edges land, so the
    dense-motion network stays float32 outside autocast; the rest of the generator is bfloat16."""
    from modules.inference import Float32Island, prepare_fast
    model, plain = prepare_fast(generator(True, paste_source=True), torch.bfloat16), prepare_fast(generator(True), torch.bfloat16)
    assert isinstance(model.dense_motion_network, Float32Island)
    assert not isinstance(plain.dense_motion_network, Float32Island)
    dense_motion = {p.dtype for p in model.dense_motion_network.parameters()}
    rest = {p.dtype for name, p in model.named_parameters() if not name.startswith('dense_motion_network')
            and p.dim() == 4}
    assert dense_motion == {torch.float32} and rest == {torch.bfloat16}
    source, kp_source, kp_driving = torch.rand(1, 3, 32, 32), random_kp(1, 9), random_kp(1, 10)
    exact = generator(True, paste_source=True)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        fast = model.dense_motion_network(source_image=source, kp_driving=kp_driving,
                                          kp_source=kp_source)
    with torch.inference_mode():
        reference = exact.dense_motion_network(source_image=source, kp_driving=kp_driving, kp_source=kp_source)
    assert fast['deformation'].dtype == torch.float32
    # the same float32 flow up to the batch norms folded into the convolutions
    torch.testing.assert_close(fast['deformation'], reference['deformation'], atol=1e-5, rtol=0)
