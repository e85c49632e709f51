"""Occlusion-aware generator (Sec. 3.3): encodes the source, warps its features with the dense
motion, masks them with the occlusion map and decodes the driving frame."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.dense_motion import DenseMotionNetwork
from modules.util import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d


class OcclusionAwareGenerator(nn.Module):
    """Renders the source image with the motion kp_source -> kp_driving.

    Built from a config as `OcclusionAwareGenerator(**generator_params, **common_params)`.
    `estimate_jacobian` comes with common_params and is unused here: the dense-motion network reads
    the Jacobians from the keypoint dicts when they are present.
    """

    def __init__(self, num_channels, num_kp, block_expansion, max_features, num_down_blocks,
                 num_bottleneck_blocks, estimate_occlusion_map=False, dense_motion_params=None,
                 estimate_jacobian=False):
        super().__init__()
        # Registration order = checkpoint key order: dense_motion_network, first, down_blocks,
        # up_blocks, bottleneck, final (the up blocks come before the bottleneck).
        if dense_motion_params is not None:
            self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, num_channels=num_channels,
                                                           estimate_occlusion_map=estimate_occlusion_map,
                                                           **dense_motion_params)
        else:
            self.dense_motion_network = None

        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))

        def width(level):
            return min(max_features, block_expansion * (2 ** level))

        self.down_blocks = nn.ModuleList([
            DownBlock2d(width(i), width(i + 1), kernel_size=(3, 3), padding=(1, 1)) for i in range(num_down_blocks)])
        self.up_blocks = nn.ModuleList([
            UpBlock2d(width(num_down_blocks - i), width(num_down_blocks - i - 1), kernel_size=(3, 3), padding=(1, 1))
            for i in range(num_down_blocks)])

        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module('r' + str(i), ResBlock2d(width(num_down_blocks), kernel_size=(3, 3),
                                                                padding=(1, 1)))

        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.estimate_occlusion_map = estimate_occlusion_map
        self.num_channels = num_channels

    @staticmethod
    def deform_input(inp, deformation):
        """Backward-warps inp (B, C, H, W) with deformation (B, h, w, 2), resized bilinearly to (H, W)
        first if needed."""
        _, h_old, w_old, _ = deformation.shape
        _, _, h, w = inp.shape
        if h_old != h or w_old != w:
            deformation = deformation.permute(0, 3, 1, 2)
            deformation = F.interpolate(deformation, size=(h, w), mode='bilinear', align_corners=False)
            deformation = deformation.permute(0, 2, 3, 1)
        # align_corners=False: torch>=1.3 default, what the original gets today; the fixtures encode it.
        return F.grid_sample(inp, deformation, align_corners=False)

    def encode(self, source_image):
        """Source features before warping: (B, C, H, W) -> (B, width(num_down_blocks), H/2^n, W/2^n)."""
        out = self.first(source_image)
        for down_block in self.down_blocks:
            out = down_block(out)
        return out

    def decode(self, out):
        """Warped (and occlusion-masked) features -> prediction (B, C, H, W) in (0, 1)."""
        out = self.bottleneck(out)
        for up_block in self.up_blocks:
            out = up_block(out)
        return torch.sigmoid(self.final(out))

    def forward(self, source_image, kp_driving, kp_source, source_features=None):
        """source_image: (B, C, H, W) in [0, 1]; kp dicts as KPDetector returns them.

        source_features: optional `self.encode(source_image)`, computed once by callers that animate
        one source with many driving frames (the result is the same).

        Returns {'mask': (B, K+1, h, w), 'sparse_deformed': (B, K+1, C, h, w),
        'occlusion_map': (B, 1, h, w) if estimated, 'deformed': (B, C, H, W) the source warped by the
        deformation, 'prediction': (B, C, H, W)}; (h, w) is the dense-motion resolution. Without a
        dense-motion network only 'prediction' (an auto-encoding of the source) is returned.
        """
        out = self.encode(source_image) if source_features is None else source_features
        output_dict = {}
        if self.dense_motion_network is not None:
            out, output_dict = self.warp_features(out, source_image, kp_driving, kp_source)
            del output_dict['deformation']  # not in the original's output
        output_dict['prediction'] = self.decode(out)
        return output_dict

    def warp_features(self, features, source_image, kp_driving, kp_source):
        """The motion half of forward: the source's encoder features warped to the driving pose and
        masked by the occlusion map (resized to the features' size).

        Returns (warped features, {'mask', 'sparse_deformed', 'occlusion_map' if estimated,
        'deformation': (B, h, w, 2), 'deformed'}) with the shapes of forward's docstring.
        """
        dense_motion = self.dense_motion_network(source_image=source_image, kp_driving=kp_driving,
                                                 kp_source=kp_source)
        output_dict = {'mask': dense_motion['mask'], 'sparse_deformed': dense_motion['sparse_deformed']}
        occlusion_map = dense_motion.get('occlusion_map')
        if occlusion_map is not None:
            output_dict['occlusion_map'] = occlusion_map

        deformation = output_dict['deformation'] = dense_motion['deformation']
        out = self.deform_input(features, deformation)
        if occlusion_map is not None:
            if out.shape[2:] != occlusion_map.shape[2:]:
                occlusion_map = F.interpolate(occlusion_map, size=out.shape[2:], mode='bilinear',
                                              align_corners=False)
            out = out * occlusion_map
        output_dict['deformed'] = self.deform_input(source_image, deformation)
        return out, output_dict
