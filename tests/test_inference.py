"""modules/inference.py: the exact upsampling rewrite, the int8 convolution and demo --fast's model copy."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toolkit import demo
from modules.build import build_models
from modules.config import load_config
from modules.inference import (WINOGRAD_AT, WINOGRAD_BT, WINOGRAD_G, Int8Conv2d, NearestUpsampleConv2d,
                               WinogradConv2d, int8_supported, optimize_for_inference, prepare_fast)
from modules.util import ResBlock2d, UpBlock2d
from tests.conftest import FIXTURE_DIR, REPO

needs_int8 = pytest.mark.skipif(not int8_supported(), reason="oneDNN's int8 convolution is not available here")


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (8, 8), (16, 12)])  # below and above MIN_PIXELS
@pytest.mark.parametrize('bias', [True, False])
def test_nearest_upsample_conv_equals_upsample_then_conv(size, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1, bias=bias)
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        expected = F.conv2d(F.interpolate(x, scale_factor=2, mode='nearest'), conv.weight, conv.bias, padding=1)
        got = NearestUpsampleConv2d(conv)(x)
        transposed = F.conv_transpose2d(x, NearestUpsampleConv2d(conv).weight, conv.bias, stride=2, padding=1)
    assert got.shape == expected.shape == (2, 5, 2 * size[0], 2 * size[1])
    assert (got - expected).abs().max() < 1e-5
    assert (transposed - expected).abs().max() < 1e-5, 'the 4x4 transposed kernel, whatever the size'


@pytest.mark.parametrize('conv', [nn.Conv2d(4, 4, 5, padding=2), nn.Conv2d(4, 4, 3, padding=0),
                                  nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 4, 3, padding=1, stride=2)])
def test_nearest_upsample_conv_refuses_other_convolutions(conv):
    with pytest.raises(ValueError, match='3x3'):
        NearestUpsampleConv2d(conv)


def test_optimize_for_inference_keeps_other_upblocks_and_the_original_state_dict():
    torch.manual_seed(0)
    block = UpBlock2d(4, 3, kernel_size=5, padding=2).eval()  # not 3x3: stays as it is
    keys = set(block.state_dict())
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = block(x)
        optimize_for_inference(block)
        assert isinstance(block.upsample, nn.Upsample) and isinstance(block.conv, nn.Conv2d)
        assert (block(x) - expected).abs().max() < 1e-5
    assert set(UpBlock2d(4, 3).state_dict()) == keys, 'the upsampling layer has no weights: keys unchanged'


@needs_int8
@pytest.mark.parametrize('shape,signed', [((8, 16, 3, 1), False), ((8, 16, 3, 1), True), ((4, 8, 1, 0), True),
                                          ((3, 16, 7, 3), False)])
def test_int8_conv_is_close_to_float(shape, signed):
    out_channels, in_channels, kernel, padding = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding).eval()
    x = torch.randn(2, in_channels, 20, 24)
    x = x if signed else F.relu(x)
    with torch.no_grad():
        expected = conv(x)
        got = Int8Conv2d(conv)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    relative = float((got - expected).norm() / expected.norm())
    assert 0 < relative < 0.02, relative


@needs_int8
def test_int8_conv_follows_autocast_and_handles_constant_input():
    conv = nn.Conv2d(4, 4, 3, padding=1).eval()
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = Int8Conv2d(conv)(torch.rand(1, 4, 8, 8))
        assert out.dtype == torch.bfloat16
        zero = Int8Conv2d(conv)(torch.zeros(1, 4, 8, 8))  # scale of an all-zero input: no division by zero
    assert torch.isfinite(zero).all() and (zero - conv(torch.zeros(1, 4, 8, 8))).abs().max() < 1e-3


def test_prepare_fast_copy_leaves_the_callers_model_alone():
    generator, kp_detector = demo.load_checkpoints(str(FIXTURE_DIR / 'config.yaml'),
                                                   str(FIXTURE_DIR / 'checkpoint.pth.tar'), cpu=True)
    before = {name: value.clone() for name, value in generator.state_dict().items()}
    fast = prepare_fast(copy.deepcopy(generator), torch.bfloat16)
    blocks = [m for m in fast.modules() if isinstance(m, ResBlock2d)]
    assert blocks and all(isinstance(b.conv1, Int8Conv2d) == int8_supported() for b in blocks)
    assert all(m.weight.dtype == torch.bfloat16 for m in fast.modules() if isinstance(m, nn.Conv2d))
    after = generator.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in generator.parameters())


def test_winograd_matrices_compute_a_correlation():
    """F(4, 3) in one dimension, in float64: A^T [(G g) * (B^T d)] is the 'valid' cross-correlation
    of 6 samples d with 3 taps g, as numpy computes it."""
    rng = np.random.default_rng(0)
    bt, g_matrix, at = (np.array(m, dtype=np.float64) for m in (WINOGRAD_BT, WINOGRAD_G, WINOGRAD_AT))
    for _ in range(10):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        np.testing.assert_allclose(at @ ((g_matrix @ g) * (bt @ d)), np.correlate(d, g, mode='valid'), atol=1e-12)


@pytest.mark.parametrize('shape', [(1, 8, 8, 16, 16), (2, 5, 7, 37, 50), (3, 6, 4, 4, 9), (1, 2, 3, 1, 1)])
@pytest.mark.parametrize('bias', [True, False])
def test_winograd_conv_equals_conv2d(shape, bias, monkeypatch):
    """(B, C, O, H, W): sizes that are not multiples of the 4x4 tile, batches, C != O, channels-last input."""
    monkeypatch.setattr(WinogradConv2d, 'MIN_PIXELS', 0)
    batch, in_channels, out_channels, height, width = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
    winograd = WinogradConv2d(conv)
    x = torch.randn(batch, in_channels, height, width)
    with torch.no_grad():
        expected = conv(x)
        for layout in (torch.contiguous_format, torch.channels_last):
            got = winograd(x.to(memory_format=layout))
            assert got.shape == expected.shape
            assert (got - expected).abs().max() < 1e-5 * max(1.0, float(expected.abs().max()))
    assert winograd._weight is not None, 'the Winograd route ran (it made its weights)'
    assert set(winograd.state_dict()) == {'conv.weight'} | ({'conv.bias'} if bias else set())


def test_winograd_conv_outputs_outlive_the_shared_workspace(monkeypatch):
    """The scratch buffers are shared and reused: an earlier output must not change with later calls
    (of this or another convolution, larger or smaller)."""
    monkeypatch.setattr(WinogradConv2d, 'MIN_PIXELS', 0)
    torch.manual_seed(0)
    first, second = WinogradConv2d(nn.Conv2d(4, 4, 3, padding=1)), WinogradConv2d(nn.Conv2d(4, 6, 3, padding=1))
    with torch.no_grad():
        x = torch.randn(1, 4, 12, 12)
        out = first(x)
        kept = out.clone()
        second(torch.randn(2, 4, 40, 40))
        first(torch.randn(1, 4, 8, 8))
        assert torch.equal(out, kept)
        assert (first(x) - first.conv(x)).abs().max() < 1e-5
        first.conv.weight.mul_(2)  # the transformed weights follow the convolution's
        assert (first(x) - first.conv(x)).abs().max() < 1e-5


def test_winograd_conv_runs_under_inference_mode_then_no_grad_then_with_gradients(monkeypatch):
    """Scratch buffers made under torch.inference_mode are read-only outside it (demo.py uses
    inference_mode, run.py no_grad, in one process in the tests); with gradients on, the direct
    convolution runs and gradients flow as through the original module."""
    monkeypatch.setattr(WinogradConv2d, 'MIN_PIXELS', 0)
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    winograd = WinogradConv2d(conv)
    x = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        assert (winograd(x) - conv(x)).abs().max() < 1e-5
    with torch.no_grad():
        assert (winograd(x) - conv(x)).abs().max() < 1e-5
    out = winograd(x.requires_grad_())
    out.sum().backward()
    assert x.grad is not None and torch.equal(out, conv(x))


def test_winograd_conv_with_weights_made_under_inference_mode(monkeypatch):
    """Folding batch norms under torch.inference_mode makes inference-tensor weights (no version
    counter): the Winograd route still runs, inside inference mode and under no_grad."""
    monkeypatch.setattr(WinogradConv2d, 'MIN_PIXELS', 0)
    torch.manual_seed(0)
    x = torch.randn(1, 256, 8, 8)
    with torch.inference_mode():
        block = optimize_for_inference(ResBlock2d(256, kernel_size=3, padding=1).eval())
        assert block.conv1.conv.weight.is_inference()
        inside = block(x)
        reference = block.conv2.conv(F.relu(block.conv1.conv(F.relu(block.norm1(x))))) + x
    assert block.conv1._weight is not None
    assert (inside - reference).abs().max() < 1e-4
    with torch.no_grad():
        assert (block(x) - reference).abs().max() < 1e-4


def test_winograd_conv_takes_the_direct_route_where_it_does_not_pay():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    winograd = WinogradConv2d(conv)
    with torch.no_grad():
        small = torch.randn(1, 4, 8, 8)  # below MIN_PIXELS
        assert torch.equal(winograd(small), conv(small))
        big = torch.randn(1, 4, 32, 32)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert torch.equal(winograd(big), conv(big))
    assert WinogradConv2d.pays_off(nn.Conv2d(256, 512, 3, padding=1))
    assert not WinogradConv2d.pays_off(nn.Conv2d(64, 256, 3, padding=1)), 'measured slower at 64 channels'
    assert not WinogradConv2d.pays_off(nn.Conv2d(256, 256, 3, padding=1, stride=2))
    with pytest.raises(ValueError, match='3x3'):
        WinogradConv2d(nn.Conv2d(4, 4, 5, padding=2))


def test_optimize_for_inference_on_vox_sized_models_changes_outputs_by_rounding_only():
    """The rewrites where they matter: vox-256 models (random weights and batch-norm statistics) at
    256x256, where the residual blocks run at 64x64 with 256 channels through WinogradConv2d; the
    keypoints and the frame stay within 1e-4 of the original modules' (the default path's promise)."""
    torch.manual_seed(0)
    config = load_config(REPO / 'config' / 'vox-256.yaml')
    models = build_models(config['model_params'], names=['generator', 'kp_detector'])
    for model in models.values():
        for norm in model.modules():
            if isinstance(norm, nn.BatchNorm2d):
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.data.uniform_(0.5, 1.5)
                norm.bias.data.uniform_(-0.2, 0.2)
    original = {name: model.eval() for name, model in models.items()}
    optimized = {name: optimize_for_inference(copy.deepcopy(model)) for name, model in original.items()}
    bottleneck = optimized['generator'].bottleneck
    assert all(isinstance(block.conv1, WinogradConv2d) for block in bottleneck.children())
    assert all(block.conv1._weight is None for block in bottleneck.children())
    source, driving = torch.rand(1, 3, 256, 256), torch.rand(1, 3, 256, 256)
    outputs = {}
    for name, models_ in (('original', original), ('optimized', optimized)):
        features = []  # the residual blocks' output: random weights make the frame itself nearly flat
        hook = models_['generator'].bottleneck.register_forward_hook(lambda m, i, out: features.append(out))
        with torch.no_grad():
            kp_source, kp_driving = models_['kp_detector'](source), models_['kp_detector'](driving)
            frame = models_['generator'](source, kp_source=kp_source, kp_driving=kp_driving)['prediction']
        hook.remove()
        outputs[name] = kp_driving['value'], features[0], frame
    assert all(block.conv1._weight is not None for block in bottleneck.children()), 'the Winograd route ran'
    (kp_a, features_a, frame_a), (kp_b, features_b, frame_b) = outputs['original'], outputs['optimized']
    assert (kp_a - kp_b).abs().max() < 1e-4
    assert 0 < (features_a - features_b).abs().max() < 1e-4 * features_a.abs().max(), 'rewritten, rounding only'
    assert (frame_a - frame_b).abs().max() < 1e-4


def test_prepare_fast_quantizes_the_winograd_blocks(monkeypatch):
    """demo --fast copies a model that optimize_for_inference already rewrote: int8 replaces the
    Winograd convolutions of the residual blocks (with their original weights)."""
    torch.manual_seed(0)
    block = ResBlock2d(256, kernel_size=3, padding=1).eval()
    optimize_for_inference(block)
    assert isinstance(block.conv1, WinogradConv2d) and isinstance(block.conv2, WinogradConv2d)
    x = torch.randn(1, 256, 16, 16)
    with torch.no_grad():
        exact = block(x)
        fast = prepare_fast(copy.deepcopy(block), torch.bfloat16)
        if int8_supported():
            assert isinstance(fast.conv1, Int8Conv2d) and isinstance(fast.conv2, Int8Conv2d)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fast(x.to(memory_format=torch.channels_last)).float()
    assert float((out - exact).norm() / exact.norm()) < 0.03


@pytest.mark.parametrize('config_name', ['vox-256.yaml', 'tpsmm-vox-256.yaml'])
def test_keypoint_detectors_keep_direct_convolutions(config_name):
    """Keypoints feed TPS solves and heatmap softmaxes that amplify rounding (TPSMM's keypoints moved
    the frames by 2e-4 with Winograd in its ResNet): optimize_for_inference leaves them direct."""
    config = load_config(REPO / 'config' / config_name)
    kp_detector = optimize_for_inference(build_models(config['model_params'], names=['kp_detector'])['kp_detector']
                                         .eval())
    assert not any(isinstance(m, WinogradConv2d) for m in kp_detector.modules())
    assert any(isinstance(m, nn.Conv2d) and WinogradConv2d.pays_off(m) for m in kp_detector.modules()), \
        'it has convolutions that would qualify'
