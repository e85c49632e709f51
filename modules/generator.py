"""Occlusion-aware generator (Sec. 3.3): encodes the source, warps its features with the dense
motion, masks them with the occlusion map and decodes the driving frame."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.dense_motion import DenseMotionNetwork
from modules.util import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d


def resize(x, size):
    """x (B, C, h, w) resized bilinearly to size (H, W); unchanged when it already has that size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)


class OcclusionAwareGenerator(nn.Module):
    """Renders the source image with the motion kp_source -> kp_driving.

    Built from a config as `OcclusionAwareGenerator(**generator_params, **common_params)`.
    `estimate_jacobian` comes with common_params and is unused here: the dense-motion network reads
    the Jacobians from the keypoint dicts when they are present.

    skips (not in the original FOMM, whose checkpoints are all skips=False): the encoder keeps every
    level, from `first`'s full-resolution map down to the bottleneck; every level is warped and
    masked by the occlusion map, and after each up block the warped level of the same resolution is
    concatenated to the decoder's features (a U-Net over warped features), so the final convolution
    sees the source's warped full-resolution features. The key names stay the same; up_blocks.1..
    and final get more input channels.

    paste_source (not in the original FOMM either; no parameters): the prediction takes the warped
    source image itself where the occlusion map says visible and the decoder's output where it says
    occluded, `deformed * occlusion + decoded * (1 - occlusion)` (TPSMM's output), so colours and
    edges come straight from the source. Needs estimate_occlusion_map.
    """

    def __init__(self, num_channels, num_kp, block_expansion, max_features, num_down_blocks,
                 num_bottleneck_blocks, estimate_occlusion_map=False, dense_motion_params=None,
                 estimate_jacobian=False, skips=False, paste_source=False):
        super().__init__()
        if paste_source and not (estimate_occlusion_map and dense_motion_params is not None):
            raise ValueError('paste_source needs an occlusion map: set estimate_occlusion_map: True and give '
                             'dense_motion_params')
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

        def skip_width(level):  # channels concatenated to the decoder's features at this level
            return width(level) if skips and level < num_down_blocks else 0

        self.up_blocks = nn.ModuleList([
            UpBlock2d(width(num_down_blocks - i) + skip_width(num_down_blocks - i), width(num_down_blocks - i - 1),
                      kernel_size=(3, 3), padding=(1, 1))
            for i in range(num_down_blocks)])

        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module('r' + str(i), ResBlock2d(width(num_down_blocks), kernel_size=(3, 3),
                                                                padding=(1, 1)))

        self.final = nn.Conv2d(block_expansion + skip_width(0), num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.estimate_occlusion_map = estimate_occlusion_map
        self.skips = skips
        self.paste_source = paste_source
        self.num_channels = num_channels

    @staticmethod
    def deform_input(inp, deformation):
        """Backward-warps inp (B, C, H, W) with deformation (B, h, w, 2), resized bilinearly to (H, W)
        first if needed."""
        deformation = resize(deformation.permute(0, 3, 1, 2), inp.shape[2:]).permute(0, 2, 3, 1)
        # align_corners=False: torch>=1.3 default, what the original gets today; the fixtures encode it.
        return F.grid_sample(inp, deformation, align_corners=False)

    def encode(self, source_image):
        """Source features before warping: (B, C, H, W) -> (B, width(n), H/2^n, W/2^n), n =
        num_down_blocks; with skips, the list of every level's map, full resolution first."""
        out = self.first(source_image)
        levels = [out]
        for down_block in self.down_blocks:
            out = down_block(out)
            if self.skips:
                levels.append(out)
        return levels if self.skips else out

    def decode(self, out):
        """Warped (and occlusion-masked) features, as encode returns them -> prediction (B, C, H, W)
        in (0, 1)."""
        if isinstance(out, (list, tuple)) != self.skips:
            raise TypeError(f'decode takes {"a list of levels" if self.skips else "one tensor"} (skips={self.skips}), '
                            f'as encode returns it; got {type(out).__name__}')
        skips = list(out[:-1]) if self.skips else []
        out = self.bottleneck(out[-1] if self.skips else out)
        for up_block in self.up_blocks:
            out = up_block(out)
            if skips:
                out = torch.cat([out, skips.pop()], dim=1)
        return torch.sigmoid(self.final(out))

    def forward(self, source_image, kp_driving, kp_source, source_features=None):
        """source_image: (B, C, H, W) in [0, 1]; kp dicts as KPDetector returns them.

        source_features: optional `self.encode(source_image)` (a tensor, or a list of levels with
        skips), computed once by callers that animate one source with many driving frames (the result
        is the same).

        Returns {'mask': (B, K+1, h, w), 'sparse_deformed': (B, K+1, C, h, w),
        'occlusion_map': (B, 1, h, w) if estimated, 'deformed': (B, C, H, W) the source warped by the
        deformation, 'prediction': (B, C, H, W), with paste_source paste(decoded, deformed,
        occlusion_map)}; (h, w) is the dense-motion resolution. Without a
        dense-motion network only 'prediction' (an auto-encoding of the source) is returned.
        """
        out = self.encode(source_image) if source_features is None else source_features
        output_dict = {}
        if self.dense_motion_network is not None:
            out, output_dict = self.warp_features(out, source_image, kp_driving, kp_source)
            del output_dict['deformation']  # not in the original's output
        output_dict['prediction'] = self.decode(out)
        if self.paste_source:
            output_dict['prediction'] = self.paste(output_dict['prediction'], output_dict['deformed'],
                                                   output_dict['occlusion_map'])
        return output_dict

    @staticmethod
    def paste(decoded, deformed, occlusion_map):
        """paste_source's prediction: deformed (B, C, H, W) where occlusion_map (B, 1, h, w), resized
        to (H, W), is 1 (visible), decoded where it is 0."""
        occlusion_map = resize(occlusion_map, decoded.shape[2:])
        return decoded * (1 - occlusion_map) + deformed * occlusion_map

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
        if isinstance(features, (list, tuple)):  # skips: every level
            out = [self._warp_level(level, deformation, occlusion_map) for level in features]
        else:
            out = self._warp_level(features, deformation, occlusion_map)
        output_dict['deformed'] = self.deform_input(source_image, deformation)
        return out, output_dict

    def _warp_level(self, features, deformation, occlusion_map):
        """One encoder map warped by the deformation and masked by the occlusion map (both resized
        to its size)."""
        out = self.deform_input(features, deformation)
        return out if occlusion_map is None else out * resize(occlusion_map, out.shape[2:])
