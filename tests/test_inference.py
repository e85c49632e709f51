"""modules/inference.py: the exact upsampling rewrite, the int8 convolution and demo --fast's model copy."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import demo
from modules.inference import (Int8Conv2d, NearestUpsampleConv2d, int8_supported, optimize_for_inference,
                               prepare_fast)
from modules.util import ResBlock2d, UpBlock2d
from tests.conftest import FIXTURE_DIR

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
