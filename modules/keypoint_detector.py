"""Keypoint detector (Sec. 3.2 of the paper): K keypoints and, for first-order models, their local
affine Jacobians, predicted by an hourglass on the (anti-aliased, downscaled) image."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.util import AntiAliasInterpolation2d, Hourglass, make_coordinate_grid


class KPDetector(nn.Module):
    """Detects `num_kp` keypoints as the expected positions of softmax heatmaps.

    Built from a config as `KPDetector(**kp_detector_params, **common_params)`.

    Args:
        block_expansion, max_features, num_blocks: hourglass width, width cap and depth.
        num_kp: K, number of keypoints.
        num_channels: image channels (3).
        temperature: softmax temperature of the heatmaps (0.1 in every official config).
        estimate_jacobian: also predict a 2x2 Jacobian per keypoint (first-order motion).
        scale_factor: the image is anti-alias downscaled by this factor first (0.25 -> 64x64 for 256x256).
        single_jacobian_map: one set of 4 Jacobian maps shared by all keypoints (mgif).
        pad: padding of the 7x7 keypoint/Jacobian heads. The original default 0 is kept: the heads
            crop 3 pixels per side (64x64 features -> 58x58 heatmaps), and keypoints are expressed on
            a [-1, 1] grid over that cropped heatmap, not over the image.
    """
    # modules.inference.optimize_for_inference keeps direct convolutions here: keypoints feed TPS
    # solves and heatmap softmaxes that amplify Winograd's rounding, for well under 1 ms of gain
    direct_convolutions = True

    def __init__(self, block_expansion, num_kp, num_channels, max_features, num_blocks, temperature,
                 estimate_jacobian=False, scale_factor=1, single_jacobian_map=False, pad=0):
        super().__init__()
        # Attribute names are checkpoint keys (predictor, kp, jacobian, down), in registration order.
        self.predictor = Hourglass(block_expansion, in_features=num_channels,
                                   max_features=max_features, num_blocks=num_blocks)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps,
                                      kernel_size=(7, 7), padding=pad)
            self._init_jacobian_head()
        else:
            self.jacobian = None
        self.temperature = temperature
        self.scale_factor = scale_factor
        if self.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def _init_jacobian_head(self):
        """Start every Jacobian at the identity: zero weights, bias [1, 0, 0, 1] per map."""
        with torch.no_grad():
            self.jacobian.weight.zero_()
            self.jacobian.bias.copy_(torch.tensor([1, 0, 0, 1] * self.num_jacobian_maps, dtype=torch.float))

    @staticmethod
    def gaussian2kp(heatmap):
        """heatmap: (B, K, h, w), each map summing to 1 -> {'value': (B, K, 2)} expected (x, y) position."""
        grid = make_coordinate_grid(heatmap.shape[2:], device=heatmap.device, dtype=heatmap.dtype)  # (h, w, 2)
        value = (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))  # (B, K, 2)
        return {'value': value}

    def forward(self, x):
        """x: (B, C, H, W) in [0, 1] -> {'value': (B, K, 2) as (x, y) in [-1, 1],
        'jacobian': (B, K, 2, 2), present only if estimate_jacobian}."""
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        prediction = self.kp(feature_map)  # (B, K, h, w); h = H' - 6 when pad = 0

        bs, num_kp, h, w = prediction.shape
        heatmap = F.softmax(prediction.view(bs, num_kp, h * w) / self.temperature, dim=2)
        heatmap = heatmap.view(bs, num_kp, h, w)
        out = self.gaussian2kp(heatmap)

        if self.jacobian is not None:
            # Channels are [j00, j01, j10, j11] per map; each map is averaged under its keypoint's heatmap.
            jacobian_map = self.jacobian(feature_map).reshape(bs, self.num_jacobian_maps, 4, h, w)
            jacobian = heatmap.unsqueeze(2) * jacobian_map  # (B, K, 4, h, w)
            jacobian = jacobian.view(bs, num_kp, 4, h * w).sum(dim=-1)
            out['jacobian'] = jacobian.view(bs, num_kp, 2, 2)
        return out
