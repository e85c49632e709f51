"""TPSMM's dense motion network (Sec. 3.2): K thin-plate splines plus a background transform, blended
by predicted contribution maps, and multi-resolution occlusion maps."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.tpsmm.anti_alias import TpsAntiAliasInterpolation2d
from modules.tpsmm.transform import TPS
from modules.util import Hourglass, UpBlock2d, instance_norm, kp2gaussian, make_coordinate_grid

OCCLUSION_NUM = 4  # TPSMM's fixed number of occlusion maps with multi_mask (H/8, H/4, H/2, H at scale 0.25)


def background_grid(bs, h, w, bg_param, like):
    """(B, 1, h, w, 2): the identity grid, moved by the background affine bg_param (B, 3, 3) if given."""
    identity = make_coordinate_grid((h, w), device=like.device, dtype=like.dtype)
    identity = identity.view(1, 1, h, w, 2).repeat(bs, 1, 1, 1, 1)
    if bg_param is None:
        return identity
    homogeneous = torch.cat([identity, torch.ones_like(identity[..., :1])], dim=-1)
    moved = torch.matmul(bg_param.view(bs, 1, 1, 1, 3, 3), homogeneous.unsqueeze(-1)).squeeze(-1)
    return moved[..., :2] / moved[..., 2:3]


def _at_least_float32(tensor):
    """float16 / bfloat16 -> float32; float32 and float64 as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class DenseMotionNetwork(nn.Module):
    """(source_image (B, C, H, W), kp_driving, kp_source {'fg_kp': (B, 5K, 2)}, bg_param (B, 3, 3) or None)
    -> {'deformed_source': (B, K+1, C, h, w), 'contribution_maps': (B, K+1, h, w) (channel 0 = background),
    'deformation': (B, h, w, 2), 'occlusion_map': list of (B, 1, *, *)}, at h, w = H, W * scale_factor.

    multi_mask: four occlusion maps from the hourglass' two last levels and two UpBlock2d after it
    (H/8, H/4, H/2, H for scale_factor 0.25; TPSMM's layout assumes that scale and a 3-level
    inpainting network), else one map at (h, w). dropout_flag: TPS dropout (dropout_softmax) with
    probability dropout_p, as TPSMM's training asks for it in its first epochs.

    Subclasses change the motion model: _transformations builds the num_transforms sampling grids
    (K + EXTRA_TRANSFORMS; CpabDenseMotionNetwork blends K + 2).
    """

    EXTRA_TRANSFORMS = 1  # the background transform (identity or bg_param), channel 0

    def __init__(self, block_expansion, num_blocks, max_features, num_tps, num_channels, scale_factor=0.25, bg=False,
                 multi_mask=True, kp_variance=0.01):
        super().__init__()
        self.num_transforms = num_tps + self.EXTRA_TRANSFORMS
        if scale_factor != 1:
            self.down = TpsAntiAliasInterpolation2d(num_channels, scale_factor)  # h = floor(H * scale)
        self.scale_factor = scale_factor
        self.multi_mask = multi_mask
        self.hourglass = Hourglass(block_expansion=block_expansion,
                                   in_features=num_channels * self.num_transforms + num_tps * 5 + 1,
                                   max_features=max_features, num_blocks=num_blocks, norm=instance_norm)
        channels = self.hourglass.out_channels
        self.maps = nn.Conv2d(channels[-1], self.num_transforms, kernel_size=(7, 7), padding=(3, 3))
        if multi_mask:
            self.up_nums = int(math.log(1 / scale_factor, 2))
            self.occlusion_num = OCCLUSION_NUM
            self.up = nn.ModuleList(UpBlock2d(channels[-1] // 2 ** i, channels[-1] // 2 ** (i + 1), kernel_size=3,
                                              padding=1, norm=instance_norm) for i in range(self.up_nums))
            from_levels = self.occlusion_num - self.up_nums  # maps read from the last hourglass levels
            in_channels = list(channels[-from_levels:]) + [channels[-1] // 2 ** (i + 1) for i in range(self.up_nums)]
            self.occlusion = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=(7, 7), padding=(3, 3)) for c in in_channels)
        else:  # a list of one, as TPSMM's (its keys are occlusion.0.*)
            self.occlusion = nn.ModuleList([nn.Conv2d(channels[-1], 1, kernel_size=(7, 7), padding=(3, 3))])
        self.num_tps = num_tps
        self.bg = bg
        self.kp_variance = kp_variance

    def create_heatmap_representations(self, source_image, kp_driving, kp_source):
        """(B, 5K + 1, h, w): a zero channel, then driving-minus-source Gaussians of every keypoint."""
        spatial_size = source_image.shape[2:]
        heatmap = (kp2gaussian(kp_driving['fg_kp'], spatial_size, self.kp_variance)
                   - kp2gaussian(kp_source['fg_kp'], spatial_size, self.kp_variance))
        zeros = heatmap.new_zeros(heatmap.shape[0], 1, *spatial_size)
        return torch.cat([zeros, heatmap], dim=1)

    def create_transformations(self, source_image, kp_driving, kp_source, bg_param):
        """(B, K+1, h, w, 2) sampling grids: 0 = identity or the background affine, 1..K = the TPS warps.
        In the keypoints' dtype (float64 keypoints stay float64, as TPSMM's), but never below float32,
        also under autocast (demo.py --fast): the spline solve and its matrix products in bfloat16
        would move the grids by a good part of a pixel."""
        with torch.autocast(device_type=source_image.device.type, enabled=False):
            return self._transformations(source_image, _at_least_float32(kp_driving['fg_kp']),
                                         _at_least_float32(kp_source['fg_kp']),
                                         None if bg_param is None else _at_least_float32(bg_param))

    def _transformations(self, source_image, kp_driving, kp_source, bg_param):
        bs, _, h, w = source_image.shape
        kp_1 = kp_driving.view(bs, -1, 5, 2)
        kp_2 = kp_source.view(bs, -1, 5, 2)
        driving_to_source = TPS(mode='kp', bs=bs, kp_1=kp_1, kp_2=kp_2).transform_frame(source_image)
        return torch.cat([background_grid(bs, h, w, bg_param, kp_1), driving_to_source], dim=1)

    def create_deformed_source_image(self, source_image, transformations):
        """The source warped by each transformation: (B, T, C, h, w), T = num_transforms."""
        bs, _, h, w = source_image.shape
        n = self.num_transforms
        repeated = source_image.unsqueeze(1).repeat(1, n, 1, 1, 1).view(bs * n, -1, h, w)
        deformed = F.grid_sample(repeated, transformations.view(bs * n, h, w, -1), align_corners=True)
        return deformed.view(bs, n, -1, h, w)

    @staticmethod
    def dropout_softmax(X, P):
        """Softmax over dim 1 with whole channels dropped (Eq. 7-8): keep = rand(B, K+1) < 1 - P drawn on
        the CPU generator, channel 0 (background) always kept; exp(X - max) * keep / (sum + 1e-6). The max
        runs over all channels, dropped ones included, as TPSMM's."""
        keep = (torch.rand(X.shape[0], X.shape[1]) < (1 - P)).to(X)
        keep[..., 0] = 1
        exp = (X - X.max(1, keepdim=True).values).exp() * keep[:, :, None, None]
        return exp / (exp.sum(dim=1, keepdim=True) + 1e-6)

    def create_occlusion(self, prediction):
        """prediction: the hourglass' level outputs -> list of occlusion maps, coarsest first."""
        if not self.multi_mask:
            return [torch.sigmoid(self.occlusion[0](prediction[-1]))]
        from_levels = self.occlusion_num - self.up_nums
        maps = [torch.sigmoid(conv(level)) for conv, level in zip(self.occlusion, prediction[-from_levels:])]
        out = prediction[-1]
        for up, conv in zip(self.up, list(self.occlusion)[from_levels:]):
            out = up(out)
            maps.append(torch.sigmoid(conv(out)))
        return maps

    def forward(self, source_image, kp_driving, kp_source, bg_param=None, dropout_flag=False, dropout_p=0):
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        bs, _, h, w = source_image.shape
        heatmap_representation = self.create_heatmap_representations(source_image, kp_driving, kp_source)
        transformations = self.create_transformations(source_image, kp_driving, kp_source, bg_param)
        deformed_source = self.create_deformed_source_image(source_image, transformations)
        out_dict = {'deformed_source': deformed_source}
        # [zero, heatmaps..., T0 RGB, T1 RGB, ...]: not interleaved (unlike FOMM)
        prediction = self.hourglass(torch.cat([heatmap_representation, deformed_source.view(bs, -1, h, w)], dim=1),
                                    mode=1)
        logits = self.maps(prediction[-1])
        contribution_maps = self.dropout_softmax(logits, dropout_p) if dropout_flag else F.softmax(logits, dim=1)
        out_dict['contribution_maps'] = contribution_maps
        deformation = (transformations.permute(0, 1, 4, 2, 3) * contribution_maps.unsqueeze(2)).sum(dim=1)
        out_dict['deformation'] = deformation.permute(0, 2, 3, 1)
        out_dict['occlusion_map'] = self.create_occlusion(prediction)
        return out_dict
