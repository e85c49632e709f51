"""Inference-only rewrites of a trained model that compute the same function with less work.

* `optimize_for_inference` (exact up to float rounding, ~1e-5; demo.py's default path): batch norms
  folded into the convolutions before them, every x2-nearest-upsample -> 3x3 convolution as one
  transposed convolution (`NearestUpsampleConv2d`: 16 instead of 36 multiply-adds per input pixel
  and channel pair), and the wide 3x3 convolutions (the residual blocks', most of the work) by
  Winograd's minimal filtering on CPU (`WinogradConv2d`: 36 instead of 144 multiply-adds per 4x4
  output tile and channel pair).
* `prepare_fast` (demo.py --fast): the above, channels-last, convolution weights in the autocast
  dtype and, on x86 CPUs, the residual blocks' convolutions (most of FOMM's work) in int8
  (`Int8Conv2d`: per-channel weights, activations quantized per call); the quality loss is measured
  by benchmarks/animate.py.

The rewritten modules have different state dicts and no gradients: never train or save them.
"""
import copy
import functools
import itertools
import logging
import math
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from modules.util import ResBlock2d, UpBlock2d, fold_batchnorm

log = logging.getLogger(__name__)


def is_3x3_same(conv):
    """True for a 3x3 convolution with padding 1, stride 1, dilation 1 and groups 1 (the size-keeping
    kind both rewrites below handle)."""
    return (conv.kernel_size, conv.padding, conv.stride, conv.dilation, conv.groups) == ((3, 3), (1, 1), (1, 1),
                                                                                      (1, 1), 1)


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
        if not is_3x3_same(conv):
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


# Winograd F(4x4, 3x3) (Lavin & Gray 2016, interpolation points 0, +-1, +-2 and infinity): for a 6x6
# input tile d and a 3x3 filter g (cross-correlation, as conv2d), the 4x4 output tile is
# A^T [(G g G^T) * (B^T d B)] A, with * elementwise.
WINOGRAD_BT = ((4, 0, -5, 0, 1, 0),
               (0, -4, -4, 1, 1, 0),
               (0, 4, -4, -1, 1, 0),
               (0, -2, -1, 2, 1, 0),
               (0, 2, -1, -2, 1, 0),
               (0, 4, 0, -5, 0, 1))
WINOGRAD_G = ((1 / 4, 0, 0),
              (-1 / 6, -1 / 6, -1 / 6),
              (-1 / 6, 1 / 6, -1 / 6),
              (1 / 24, 1 / 12, 1 / 6),
              (1 / 24, -1 / 12, 1 / 6),
              (0, 0, 1))
WINOGRAD_AT = ((1, 1, 1, 1, 1, 0),
               (0, 1, -1, 2, -2, 0),
               (0, 1, 1, 4, 4, 0),
               (0, 1, -1, 8, -8, 1))


class _Workspace(threading.local):
    """Scratch buffers shared by every WinogradConv2d of a thread, grown to the largest call: fresh
    large allocations cost page faults on every call, which is a third of the work at these sizes."""

    def __init__(self):
        self.buffers = {}

    def get(self, name, shape, like):
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if (buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device
                or buffer.is_inference() and not torch.is_inference_mode_enabled()):  # then read-only
            buffer = self.buffers[name] = like.new_empty(numel)
        return buffer[:numel].view(shape)


class WinogradConv2d(nn.Module):
    """A 3x3 convolution with padding 1 by Winograd's F(4x4, 3x3) on the CPU in float32: (B, C, H, W)
    -> (B, O, H, W), 36 instead of 144 multiply-adds per 4x4 output tile and channel pair, as one
    batched matrix product over the 36 tile positions; the transforms are small matrix products.
    Same outputs up to float rounding (~1e-5 relative), without gradients: only under torch.no_grad
    or torch.inference_mode. Otherwise, and on other devices and dtypes (CUDA, whose cuDNN picks
    Winograd itself; autocast) and on maps smaller than MIN_PIXELS, the direct convolution runs.

    Transformed weights U: (36, O, C), u[(i, j)] = (G g G^T)[i, j], made on the first call that takes
    this route (4x the convolution's weights; layers that only ever see small maps never hold them);
    the input as 6x6 tiles with stride 4 (zero-padded), V = (B^T (x) B^T) tiles: (36, C, tiles);
    M = U @ V: (36, O, tiles); the output Y = (A^T (x) A^T) M: (16, O, tiles), scattered back into
    4x4 blocks.
    """
    # measured on a 2-core AVX-512 CPU (one thread per core): 1.6-1.9x faster than oneDNN's direct
    # convolution at 256 or 512 channels and 32x32 to 128x128, 1.2x at 512 channels and 16x16, only
    # 1.1-1.2x at 128 channels (not worth the scratch memory), slower at 64 channels or below and at 8x8
    MIN_CHANNELS = 256
    MIN_PIXELS = 16 * 16
    _workspace = _Workspace()

    def __init__(self, conv):
        super().__init__()
        if not is_3x3_same(conv):
            raise ValueError('WinogradConv2d needs a 3x3 convolution with padding 1, stride 1, groups 1')
        self.conv = conv
        self._weight, self._weight_of = None, None  # U, and the key of the weights it was made of
        bt, at = torch.tensor(WINOGRAD_BT, dtype=torch.float32), torch.tensor(WINOGRAD_AT, dtype=torch.float32)
        self.register_buffer('input_transform', bt, persistent=False)  # along each axis of the tile in turn
        self.register_buffer('output_transform', torch.kron(at, at), persistent=False)  # (16, 36)

    @classmethod
    def pays_off(cls, conv):
        """True for the 3x3 convolutions worth rewriting: wide enough (MIN_CHANNELS) in and out."""
        return is_3x3_same(conv) and min(conv.in_channels, conv.out_channels) >= cls.MIN_CHANNELS

    def transformed_weight(self):
        """U: (36, O, C) float32, from the convolution's current weights."""
        weight = self.conv.weight
        # in-place edits bump the version (not edits through .data: edit the weights before
        # optimize_for_inference); inference tensors have no version and cannot be edited outside it
        key = (id(weight), weight.data_ptr(), None if weight.is_inference() else weight._version)
        if self._weight_of != key or self._weight.is_inference() and not torch.is_inference_mode_enabled():
            g = torch.tensor(WINOGRAD_G, dtype=torch.float64)
            u = torch.einsum('ik,ockl,jl->ijoc', g, weight.detach().double(), g)  # (6, 6, O, C)
            self._weight, self._weight_of = u.reshape(36, *u.shape[2:]).float().contiguous(), key
        return self._weight

    def forward(self, x):
        if (torch.is_grad_enabled() or x.device.type != 'cpu' or x.dtype != torch.float32
                or torch.is_autocast_enabled('cpu') or x.shape[-1] * x.shape[-2] < self.MIN_PIXELS):
            return self.conv(x)
        weight = self.transformed_weight()
        (B, C, H, W), O = x.shape, weight.shape[1]
        th, tw = -(-H // 4), -(-W // 4)
        tiles = B * th * tw
        padded = F.pad(x, (1, 4 * tw + 1 - W, 1, 4 * th + 1 - H)).contiguous()  # (B, C, 4 th + 2, 4 tw + 2)
        hp, wp = padded.shape[-2:]
        work = self._workspace
        d = work.get('d', (6, 6, C, B, th, tw), x)
        d.copy_(padded.as_strided((6, 6, C, B, th, tw), (wp, 1, hp * wp, C * hp * wp, 4 * wp, 4)))
        rows = work.get('rows', (6, 6 * C * tiles), x)
        torch.mm(self.input_transform, d.view(6, -1), out=rows)
        v = d.view(6, 6, C * tiles)  # d is used up: V takes its place
        torch.matmul(self.input_transform, rows.view(6, 6, -1), out=v)
        m = work.get('m', (36, O, tiles), x)
        torch.bmm(weight, v.view(36, C, tiles), out=m)
        y = work.get('y', (16, O * tiles), x)
        torch.mm(self.output_transform, m.view(36, -1), out=y)
        y = y.view(4, 4, O, B, th, tw).permute(3, 2, 4, 0, 5, 1)  # (B, O, th, 4, tw, 4)
        out = x.new_empty(B, O, th, 4, tw, 4)
        if self.conv.bias is None:
            out.copy_(y)
        else:
            torch.add(y, self.conv.bias.view(1, O, 1, 1, 1, 1), out=out)
        return out.view(B, O, 4 * th, 4 * tw)[:, :, :H, :W]


def optimize_for_inference(module):
    """Folds batch norms into convolutions, replaces every UpBlock2d's upsample + conv with a
    NearestUpsampleConv2d and every wide 3x3 convolution (WinogradConv2d.pays_off) with a
    WinogradConv2d, except inside modules that set `direct_convolutions = True` (the keypoint
    detectors), in place; the outputs change by float rounding only. Eval mode only. Returns the
    module."""
    fold_batchnorm(module)
    for block in module.modules():
        if isinstance(block, UpBlock2d) and isinstance(block.upsample, nn.Upsample):
            try:
                conv = NearestUpsampleConv2d(block.conv)
            except ValueError:
                continue
            block.conv, block.upsample = conv, nn.Identity()
    direct = {id(m) for part in module.modules() if getattr(part, 'direct_convolutions', False)
              for m in part.modules()}  # e.g. keypoint detectors
    for parent in list(module.modules()):
        if isinstance(parent, (NearestUpsampleConv2d, WinogradConv2d)) or id(parent) in direct:
            continue  # their own convolutions stay as they are
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and WinogradConv2d.pays_off(child):
                setattr(parent, name, WinogradConv2d(child))
    return module


_INFERENCE_COPIES = weakref.WeakKeyDictionary()  # model -> (weights_version, its optimized copy)


def weights_version(module):
    """A key that changes whenever a parameter or buffer of `module` is replaced, moved, re-typed or
    changed in place (an optimizer step, load_state_dict, `.data` assignment: torch bumps a tensor's
    version counter on every in-place change)."""
    return tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device)
                 for t in itertools.chain(module.parameters(), module.buffers()))


def inference_copy(module):
    """An optimize_for_inference copy of an eval-mode `module`, made on first use and reused while its
    weights are unchanged (weights_version); the module itself and its state_dict() are untouched,
    so it can still be saved or fine-tuned. This is how the original's Python API
    (demo.make_animation) gets demo.py's exact speed-ups. A module with any part in training mode is
    returned as it is (its batch norms use batch statistics, which folding would change)."""
    if any(part.training for part in module.modules()):
        return module
    version = weights_version(module)
    cached = _INFERENCE_COPIES.get(module)
    if cached is not None and cached[0] == version:
        return cached[1]
    with torch.no_grad():
        optimized = optimize_for_inference(copy.deepcopy(module))
    _INFERENCE_COPIES[module] = (version, optimized)
    return optimized


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
    def plain(conv):
        return conv.conv if isinstance(conv, WinogradConv2d) else conv
    for block in module.modules():
        if isinstance(block, ResBlock2d):
            block.conv1, block.conv2 = Int8Conv2d(plain(block.conv1)), Int8Conv2d(plain(block.conv2))
    return module


def _float32(value):
    """A tensor, or a dict of them (keypoints), in float32."""
    if isinstance(value, dict):
        return {name: _float32(item) for name, item in value.items()}
    return value.float() if torch.is_tensor(value) and value.is_floating_point() else value


class Float32Island(nn.Module):
    """Runs `module` in float32 with autocast off, whatever its caller runs under. Keyword arguments
    only (tensors or dicts of tensors, cast to float32)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, **inputs):
        device_type = next(self.module.parameters()).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self.module(**{name: _float32(value) for name, value in inputs.items()})


def prepare_fast(module, dtype):
    """demo.py --fast's copy of the generator, in place: optimize_for_inference, channels-last, the
    residual blocks in int8 on x86 CPUs, and the other convolutions' weights stored in `dtype` (the
    autocast dtype the module will run under, so that autocast does not cast them on every call).
    A generator that pastes the warped source (FOMM's paste_source) keeps its dense-motion network in
    float32: there the flow's rounding would move the pasted source's edges (by up to half a pixel at
    64x64 in bfloat16). Returns the module."""
    optimize_for_inference(module).to(memory_format=torch.channels_last)
    if next(module.parameters()).device.type == 'cpu' and int8_supported():
        quantize_residual_blocks(module)
    exact = set()
    if getattr(module, 'paste_source', False) and getattr(module, 'dense_motion_network', None) is not None:
        module.dense_motion_network = Float32Island(module.dense_motion_network)
        exact = set(module.dense_motion_network.modules())
    for block in module.modules():
        if isinstance(block, (nn.Conv2d, NearestUpsampleConv2d)) and block not in exact:
            block.to(dtype)
    return module
