"""Inference-only rewrites of a trained model that compute the same function with less work.

* `optimize_for_inference` (exact up to float rounding, ~1e-6; demo.py's default path): batch norms
  folded into the convolutions before them, and every x2-nearest-upsample -> 3x3 convolution as one
  transposed convolution (`NearestUpsampleConv2d`: 16 instead of 36 multiply-adds per input pixel
  and channel pair).
* `prepare_fast` (demo.py --fast): the above, channels-last, convolution weights in the autocast
  dtype and, on x86 CPUs, the residual blocks' convolutions (most of FOMM's work) in int8
  (`Int8Conv2d`: per-channel weights, activations quantized per call); the quality loss is measured
  by benchmarks/animate.py.

The rewritten modules have different state dicts and no gradients: never train or save them.
"""
import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

from modules.util import ResBlock2d, UpBlock2d, fold_batchnorm

log = logging.getLogger(__name__)


class NearestUpsampleConv2d(nn.Module):
    """conv3x3(nearest_upsample_x2(x)) with padding 1, as one stride-2 transposed convolution with a
    4x4 kernel: (B, C, H, W) -> (B, O, 2H, 2W), 16 instead of 36 multiply-adds per input pixel and
    channel pair.

    Along one axis, output pixel p sees input pixel i = floor((p + k - 1) / 2) through tap k of the
    3x3 kernel (w0, w1, w2), so input i reaches outputs 2i - 1 .. 2i + 2 with the weights
    (w2, w1 + w2, w0 + w1, w0): a transposed convolution with stride 2 and padding 1. Inputs smaller
    than MIN_PIXELS (an hourglass' innermost levels, where oneDNN's transposed convolution is slower
    than upsampling) take the original route with the original weights.
    """
    MIN_PIXELS = 64  # measured with benchmarks/animate.py's models on a 2-core AVX-512 CPU

    def __init__(self, conv):
        super().__init__()
        if (conv.kernel_size, conv.padding, conv.stride, conv.dilation, conv.groups) != ((3, 3), (1, 1), (1, 1),
                                                                                          (1, 1), 1):
            raise ValueError('NearestUpsampleConv2d needs a 3x3 convolution with padding 1, stride 1, groups 1')
        self.conv = conv
        weight = self._taps(self._taps(conv.weight.detach(), 2), 3)  # (O, C, 4, 4)
        self.register_buffer('weight', weight.transpose(0, 1).contiguous())  # conv_transpose2d's (C, O, 4, 4)

    @staticmethod
    def _taps(weight, dim):
        w0, w1, w2 = weight.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)

    def forward(self, x):
        if x.shape[-1] * x.shape[-2] < self.MIN_PIXELS:
            return self.conv(F.interpolate(x, scale_factor=2, mode='nearest'))
        return F.conv_transpose2d(x, self.weight, self.conv.bias, stride=2, padding=1)


def optimize_for_inference(module):
    """Folds batch norms into convolutions and replaces every UpBlock2d's upsample + conv with a
    NearestUpsampleConv2d, in place; the outputs change by float rounding only. Eval mode only.
    Returns the module."""
    fold_batchnorm(module)
    for block in module.modules():
        if isinstance(block, UpBlock2d) and isinstance(block.upsample, nn.Upsample):
            try:
                conv = NearestUpsampleConv2d(block.conv)
            except ValueError:
                continue
            block.conv, block.upsample = conv, nn.Identity()
    return module


# ----------------------------------------------------------------------------------------------
# int8
# ----------------------------------------------------------------------------------------------

@functools.cache
def int8_supported():
    """True where oneDNN's int8 convolution runs (x86 CPUs with torch's oneDNN build)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, 'qconv2d_pointwise')):
        return False
    try:
        conv = nn.Conv2d(2, 2, 3, padding=1)
        x = torch.rand(1, 2, 4, 4)
        return bool(torch.allclose(Int8Conv2d(conv)(x), conv(x), atol=0.05))
    except (RuntimeError, NotImplementedError):
        return False


class Int8Conv2d(nn.Module):
    """A convolution in int8 through oneDNN: weights quantized once, symmetric per output channel;
    the input quantized on every call, per tensor (uint8, asymmetric, from its min and max), so no
    calibration data is needed. Output in the input's float dtype, channels-last. CPU only."""

    def __init__(self, conv):
        super().__init__()
        weight = conv.weight.detach().float()
        scale = weight.abs().amax(dim=(1, 2, 3)).clamp(min=1e-12) / 127
        self.register_buffer('weight_scale', scale)
        self.register_buffer('weight_zero_point', torch.zeros_like(scale, dtype=torch.long))
        quantized = torch.round(weight / scale[:, None, None, None]).clamp(-127, 127).to(torch.int8)
        # an opaque oneDNN tensor: a plain attribute, so .to() and state_dict() leave it alone
        self.packed_weight = torch.ops.onednn.qconv_prepack(
            quantized, scale, 1.0, 0, list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups, None)
        self.register_buffer('bias', None if conv.bias is None else conv.bias.detach().float())
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups

    def forward(self, x):
        dtype = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else x.dtype
        x = x.to(torch.float32, memory_format=torch.channels_last, copy=True)
        low, high = (float(v) for v in torch.aminmax(x))
        low = min(low, 0.0)
        scale = max(high - low, 1e-8) / 255
        zero_point = int(round(-low / scale))
        quantized = x.mul_(1 / scale).add_(zero_point).round_().clamp_(0, 255).to(torch.uint8)
        return torch.ops.onednn.qconv2d_pointwise(
            quantized, scale, zero_point, self.packed_weight, self.weight_scale, self.weight_zero_point, self.bias,
            self.stride, self.padding, self.dilation, self.groups, 1.0, 0, dtype, 'none', [], '')


def quantize_residual_blocks(module):
    """Replaces both convolutions of every ResBlock2d with Int8Conv2d, in place (fold batch norms
    first: optimize_for_inference). Returns the module."""
    for block in module.modules():
        if isinstance(block, ResBlock2d):
            block.conv1, block.conv2 = Int8Conv2d(block.conv1), Int8Conv2d(block.conv2)
    return module


def prepare_fast(module, dtype):
    """demo.py --fast's copy of the generator, in place: optimize_for_inference, channels-last, the
    residual blocks in int8 on x86 CPUs, and the other convolutions' weights stored in `dtype` (the
    autocast dtype the module will run under, so that autocast does not cast them on every call).
    Returns the module."""
    optimize_for_inference(module).to(memory_format=torch.channels_last)
    if next(module.parameters()).device.type == 'cpu' and int8_supported():
        quantize_residual_blocks(module)
    for block in module.modules():
        if isinstance(block, (nn.Conv2d, NearestUpsampleConv2d)):
            block.to(dtype)
    return module
