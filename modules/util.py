"""Shared building blocks of FOMM: coordinate grids, Gaussian heatmaps, conv blocks, the Hourglass
and the anti-aliased downsampler.

Conventions used everywhere in this package (they are the original's, and the published checkpoints
were trained with them):

* An image or feature map is (B, C, H, W). A keypoint dict holds
  `kp['value']`: (B, K, 2) as (x, y) in [-1, 1] and, for first-order models,
  `kp['jacobian']`: (B, K, 2, 2), the local affine motion (row-major [[j00, j01], [j10, j11]]).
* In a coordinate grid -1 and +1 are the CENTRES of the first and last pixel
  (x_i = 2 i / (w - 1) - 1), the align_corners=True convention, while every `F.grid_sample` call keeps
  torch's default align_corners=False (the default changed in torch 1.3, after the checkpoints were
  trained; the reference numbers encode today's behaviour). Do not "fix" either one.
"""
import torch
import torch.nn.functional as F
from torch import nn

from sync_batchnorm import SynchronizedBatchNorm2d as BatchNorm2d

def unwrap(module):
    """The module inside DataParallel / DistributedDataParallel wrappers (for attributes and saving)."""
    while isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        module = module.module
    return module


# ----------------------------------------------------------------------------------------------
# Coordinates and heatmaps
# ----------------------------------------------------------------------------------------------

_LEGACY_TYPES = {
    'torch.FloatTensor': (torch.float32, 'cpu'), 'torch.DoubleTensor': (torch.float64, 'cpu'),
    'torch.HalfTensor': (torch.float16, 'cpu'), 'torch.BFloat16Tensor': (torch.bfloat16, 'cpu'),
    'torch.cuda.FloatTensor': (torch.float32, 'cuda'), 'torch.cuda.DoubleTensor': (torch.float64, 'cuda'),
    'torch.cuda.HalfTensor': (torch.float16, 'cuda'), 'torch.cuda.BFloat16Tensor': (torch.bfloat16, 'cuda'),
}


def make_coordinate_grid(spatial_size, type=None, device=None, dtype=None):
    """Grid of pixel-centre coordinates, (h, w, 2) with [..., 0] = x (width axis) and [..., 1] = y.

    x_i = 2 * i / (w - 1) - 1, so -1 and +1 are the centres of the first and last pixel.
    `type` is the original's legacy argument (a tensor type string such as 'torch.FloatTensor', or a
    torch.dtype) and is still accepted; new code passes `device` and `dtype` (default float32, CPU).
    """
    if isinstance(type, str):
        if type not in _LEGACY_TYPES:
            raise ValueError(f"make_coordinate_grid: unsupported tensor type {type!r}")
        dtype, legacy_device = _LEGACY_TYPES[type]
        device = device if device is not None else legacy_device
    elif isinstance(type, torch.dtype):
        dtype = type
    dtype = dtype or torch.float32
    h, w = int(spatial_size[0]), int(spatial_size[1])
    # Same operation order as the original (integer arange cast, then 2 * (x / (w - 1)) - 1) so the
    # grid is bit-identical.
    x = torch.arange(w, device=device).to(dtype)
    y = torch.arange(h, device=device).to(dtype)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    xx = x.view(1, w).expand(h, w)
    yy = y.view(h, 1).expand(h, w)
    return torch.stack([xx, yy], dim=2)  # (h, w, 2)


def kp_key(kp):
    """The key of a keypoint dict's (B, K, 2) positions: FOMM's 'value' or TPSMM's 'fg_kp'."""
    return 'value' if 'value' in kp else 'fg_kp'


def kp2gaussian(kp, spatial_size, kp_variance):
    """Gaussian heatmap around each keypoint (Eq. 6 of the paper, without the difference).

    kp['value']: (..., K, 2) -> (..., K, h, w), exp(-0.5 * |z - kp|^2 / kp_variance), with z on the
    make_coordinate_grid(spatial_size) grid. `kp` may also be the (..., K, 2) tensor itself (TPSMM's call).
    """
    mean = kp[kp_key(kp)] if isinstance(kp, dict) else kp
    grid = make_coordinate_grid(spatial_size, device=mean.device, dtype=mean.dtype)  # (h, w, 2)
    mean = mean.unsqueeze(-2).unsqueeze(-2)  # (..., K, 1, 1, 2)
    mean_sub = grid - mean  # (..., K, h, w, 2)
    return torch.exp(-0.5 * (mean_sub ** 2).sum(-1) / kp_variance)


# ----------------------------------------------------------------------------------------------
# Convolution blocks (generator, keypoint detector and dense-motion hourglasses)
# ----------------------------------------------------------------------------------------------

def batch_norm(num_features):
    """FOMM's normalisation: (synchronised) BatchNorm2d with affine parameters and running statistics."""
    return BatchNorm2d(num_features, affine=True)


def instance_norm(num_features):
    """TPSMM's normalisation: InstanceNorm2d with affine parameters, no running statistics (the state
    dict holds only `weight` and `bias`; train and eval modes compute the same)."""
    return nn.InstanceNorm2d(num_features, affine=True)


class ResBlock2d(nn.Module):
    """Pre-activation residual block that keeps the resolution: x + conv(relu(norm(conv(relu(norm(x)))))).
    `norm`: batch_norm (FOMM) or instance_norm (TPSMM), as in every block below."""

    def __init__(self, in_features, kernel_size, padding, norm=batch_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = norm(in_features)
        self.norm2 = norm(in_features)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    """x2 nearest upsampling -> conv -> norm -> ReLU: (B, in, H, W) -> (B, out, 2H, 2W)."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1, groups=1, norm=batch_norm):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode='nearest')  # as the original; the weights expect it
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)

    def forward(self, x):
        return F.relu(self.norm(self.conv(self.upsample(x))))


class DownBlock2d(nn.Module):
    """conv -> norm -> ReLU -> 2x2 average pooling: (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1, groups=1, norm=batch_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """conv -> norm -> ReLU at the same resolution: (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_features, out_features, groups=1, kernel_size=3, padding=1, norm=batch_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


def _hourglass_width(block_expansion, max_features, level):
    """Channels at hourglass level `level` (level 0 = full resolution)."""
    return min(max_features, block_expansion * (2 ** level))


class Encoder(nn.Module):
    """Hourglass encoder: `num_blocks` DownBlock2d; returns the input and every block's output."""

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256, norm=batch_norm):
        super().__init__()
        self.down_blocks = nn.ModuleList([
            DownBlock2d(in_features if i == 0 else _hourglass_width(block_expansion, max_features, i),
                        _hourglass_width(block_expansion, max_features, i + 1), kernel_size=3, padding=1, norm=norm)
            for i in range(num_blocks)])

    def forward(self, x):
        """x: (B, in_features, H, W) -> [x, (B, c1, H/2, W/2), ..., (B, cN, H/2^N, W/2^N)]."""
        outs = [x]
        for down_block in self.down_blocks:
            outs.append(down_block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: UpBlock2d per level, each followed by concatenation [upsampled, skip].

    The last concatenation is with the hourglass input itself, so the output has
    `out_filters = block_expansion + in_features` channels; `out_channels` lists the channels of every
    level's output, deepest first (TPSMM's attribute).
    """

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256, norm=batch_norm):
        super().__init__()
        up_blocks = []
        self.out_channels = []
        for i in reversed(range(num_blocks)):
            # The deepest block sees only the bottleneck; the others see [upsampled, skip] of equal width.
            in_filters = (1 if i == num_blocks - 1 else 2) * _hourglass_width(block_expansion, max_features, i + 1)
            out_filters = _hourglass_width(block_expansion, max_features, i)
            up_blocks.append(UpBlock2d(in_filters, out_filters, kernel_size=3, padding=1, norm=norm))
            self.out_channels.append(2 * out_filters if i else out_filters + in_features)
        self.up_blocks = nn.ModuleList(up_blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, x, mode=0):
        """x: the Encoder's list (consumed from the end) -> (B, out_filters, H, W); mode=1: the list of
        every level's output [(B, out_channels[0], H/2^(N-1), W/2^(N-1)), ..., (B, out_filters, H, W)]."""
        skips = list(x)
        out = skips.pop()
        outs = []
        for up_block in self.up_blocks:
            out = up_block(out)
            out = torch.cat([out, skips.pop()], dim=1)  # upsampled first, then the skip
            outs.append(out)
        return outs if mode == 1 else out


class Hourglass(nn.Module):
    """U-Net style hourglass: (B, in_features, H, W) -> (B, out_filters, H, W), or with mode=1 the
    list of every decoder level's output (Decoder.forward).

    H and W must be divisible by 2 ** num_blocks.
    """

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256, norm=batch_norm):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features, norm=norm)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features, norm=norm)
        self.out_filters = self.decoder.out_filters
        self.out_channels = self.decoder.out_channels

    def forward(self, x, mode=0):
        return self.decoder(self.encoder(x), mode)


# ----------------------------------------------------------------------------------------------
# Anti-aliased downsampling
# ----------------------------------------------------------------------------------------------

class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then strided subsampling: (B, C, H, W) -> (B, C, ceil(H*scale), ceil(W*scale)).

    sigma = (1/scale - 1) / 2, kernel size 2 * round(4 * sigma) + 1, zero padding (not reflection),
    depthwise conv, then every int(1/scale)-th pixel starting at index 0 (FOMM's rule; a family
    with another rule overrides `subsample`, e.g. modules.tpsmm.anti_alias). Returns the input itself
    for scale 1. The kernel is a persistent buffer `weight` (C, 1, k, k): it is stored in the
    published checkpoints (`down.weight`), so it must stay a state-dict entry.
    """

    def __init__(self, channels, scale):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1  # Python round (banker's rounding), as the original
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        self.register_buffer('weight', self._gaussian_kernel(channels, kernel_size, sigma))
        self.groups = channels
        self.scale = scale
        self.int_inv_scale = int(1 / scale)

    @staticmethod
    def _gaussian_kernel(channels, kernel_size, sigma):
        """Separable Gaussian (product of two 1-D Gaussians), normalised to sum 1, in float32."""
        coords = torch.arange(kernel_size, dtype=torch.float32)
        mean = (kernel_size - 1) / 2
        # The original multiplies the two meshgrid factors elementwise; the outer product of the
        # same 1-D factors gives the same float32 values.
        g = torch.exp(-(coords - mean) ** 2 / (2 * sigma ** 2))
        kernel = g.view(-1, 1) * g.view(1, -1)
        kernel = kernel / torch.sum(kernel)
        return kernel.view(1, 1, kernel_size, kernel_size).repeat(channels, 1, 1, 1)

    def forward(self, x):
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight, groups=self.groups)
        return self.subsample(out)

    def subsample(self, blurred):
        """FOMM's subsampling: rows and columns 0, k, 2k, ... (k = int(1/scale)), ceil(size / k) of them."""
        return blurred[:, :, ::self.int_inv_scale, ::self.int_inv_scale]


# ----------------------------------------------------------------------------------------------
# Inference-only speed-up
# ----------------------------------------------------------------------------------------------

def fold_batchnorm(module):
    """Folds every BatchNorm that directly follows a convolution into that convolution, in place, for
    eval-mode inference (less work per frame; outputs change by float rounding only).

    Blocks handled: SameBlock2d, DownBlock2d, UpBlock2d (conv -> norm) and ResBlock2d (conv1 -> norm2;
    its norm1 precedes a ReLU and stays). The folded module has a different state dict: never save
    or train it. Returns the module.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError('fold_batchnorm is for eval-mode inference: call .eval() first')
    batch_norms = nn.modules.batchnorm._BatchNorm  # instance norms depend on the input: never folded
    for block in module.modules():
        if isinstance(block, (SameBlock2d, DownBlock2d, UpBlock2d)) and isinstance(block.norm, batch_norms):
            block.conv = fuse_conv_bn_eval(block.conv, block.norm)
            block.norm = nn.Identity()
        elif isinstance(block, ResBlock2d) and isinstance(block.norm2, batch_norms):
            block.conv1 = fuse_conv_bn_eval(block.conv1, block.norm2)
            block.norm2 = nn.Identity()
    return module
