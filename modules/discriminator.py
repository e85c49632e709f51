"""Pix2Pix-style multi-scale discriminator (LSGAN), used by the *-adv configs' GAN and
feature-matching losses."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.util import kp2gaussian


class DiscriminatorBlock2d(nn.Module):
    """conv4x4 (no padding) -> InstanceNorm (optional) -> LeakyReLU(0.2) -> 2x2 average pool (optional).

    Named `DownBlock2d` in the original's discriminator module (an alias is kept below); it is a
    different block from `modules.util.DownBlock2d`.
    """

    def __init__(self, in_features, out_features, norm=False, kernel_size=4, pool=False, sn=False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        if sn:
            # The hook-based spectral norm: its state-dict keys (weight_orig, weight_u, weight_v) are
            # those of the published checkpoints. One power iteration per forward in train mode.
            self.conv = nn.utils.spectral_norm(self.conv)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x):
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        if self.pool:
            out = F.avg_pool2d(out, (2, 2))
        return out


DownBlock2d = DiscriminatorBlock2d  # the original's name for this block in this module


class Discriminator(nn.Module):
    """Patch discriminator for one scale: (B, C, H, W) -> (feature_maps, prediction_map).

    `use_kp` appends kp2gaussian(kp_driving) (K channels, not a difference, no background) to the
    image. Built by MultiScaleDiscriminator with `**discriminator_params, **common_params`;
    `estimate_jacobian` comes with common_params and is unused here.
    """

    def __init__(self, num_channels=3, block_expansion=64, num_blocks=4, max_features=512,
                 sn=False, use_kp=False, num_kp=10, kp_variance=0.01, estimate_jacobian=False):
        super().__init__()
        down_blocks = []
        for i in range(num_blocks):
            in_features = num_channels + num_kp * use_kp if i == 0 else min(max_features, block_expansion * (2 ** i))
            down_blocks.append(DiscriminatorBlock2d(in_features, min(max_features, block_expansion * (2 ** (i + 1))),
                                                    norm=(i != 0), kernel_size=4, pool=(i != num_blocks - 1), sn=sn))
        self.down_blocks = nn.ModuleList(down_blocks)
        self.conv = nn.Conv2d(self.down_blocks[-1].conv.out_channels, out_channels=1, kernel_size=1)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.use_kp = use_kp
        self.kp_variance = kp_variance

    def forward(self, x, kp=None):
        """x: (B, C, H, W); kp: keypoint dict (read only if use_kp) ->
        (list of num_blocks feature maps, each recorded after pooling; prediction_map (B, 1, h, w))."""
        feature_maps = []
        out = x
        if self.use_kp:
            heatmap = kp2gaussian(kp, x.shape[2:], self.kp_variance)
            out = torch.cat([out, heatmap], dim=1)
        for down_block in self.down_blocks:
            out = down_block(out)
            feature_maps.append(out)
        prediction_map = self.conv(out)
        return feature_maps, prediction_map


class MultiScaleDiscriminator(nn.Module):
    """One Discriminator per scale; reads x['prediction_<scale>'] (an ImagePyramide output).

    Submodule keys are `discs.<str(scale) with '.' -> '-'>` (so `1` -> `discs.1`, `0.5` -> `discs.0-5`,
    and `1.0` -> `discs.1-0`: the key depends on how the YAML writes the scale). Outputs
    `feature_maps_<scale>` (list) and `prediction_map_<scale>` per scale.
    """

    def __init__(self, scales=(), **kwargs):
        super().__init__()
        self.scales = scales
        self.discs = nn.ModuleDict({str(scale).replace('.', '-'): Discriminator(**kwargs) for scale in scales})

    def forward(self, x, kp=None):
        out_dict = {}
        for scale, disc in self.discs.items():
            scale = str(scale).replace('-', '.')
            feature_maps, prediction_map = disc(x['prediction_' + scale], kp)
            out_dict['feature_maps_' + scale] = feature_maps
            out_dict['prediction_map_' + scale] = prediction_map
        return out_dict
