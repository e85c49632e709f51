"""TPSMM's inpainting network (Sec. 3.3): an encoder-decoder that warps the source's features at every
resolution by the dense motion, masks them by the occlusion maps and paints the occluded parts."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.util import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, instance_norm


class InpaintingNetwork(nn.Module):
    """(source_image (B, C, H, W), dense_motion: DenseMotionNetwork's dict) -> {'contribution_maps',
    'deformed_source', 'occlusion_map' (passed through), 'deformed': the source warped by the
    deformation (B, C, H, W), 'warped_encoder_maps': list of num_down_blocks + 1 warped, occluded
    encoder maps, deepest first, detached (for the warp loss only), 'prediction': (B, C, H, W)}.

    Levels (deepest first): two ResBlock2d, an UpBlock2d, then [decoder, warped encoder map * occlusion]
    concatenated. At full resolution out = decoder * (1 - occ) + warped first features (occluded), and
    after the final conv + sigmoid, prediction = out * (1 - occ) + deformed * occ.
    """

    def __init__(self, num_channels, block_expansion, max_features, num_down_blocks, multi_mask=True, **kwargs):
        super().__init__()
        self.num_down_blocks = num_down_blocks
        self.multi_mask = multi_mask
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3), norm=instance_norm)

        def width(level):
            return min(max_features, block_expansion * (2 ** level))

        self.down_blocks = nn.ModuleList(DownBlock2d(width(i), width(i + 1), kernel_size=(3, 3), padding=(1, 1),
                                                     norm=instance_norm) for i in range(num_down_blocks))
        up_blocks, resblock = [], []
        for i in range(num_down_blocks):  # deepest level first
            in_features = (1 if i == 0 else 2) * width(num_down_blocks - i)
            up_blocks.append(UpBlock2d(in_features, width(num_down_blocks - i - 1), kernel_size=(3, 3),
                                       padding=(1, 1), norm=instance_norm))
            resblock += [ResBlock2d(in_features, kernel_size=(3, 3), padding=(1, 1), norm=instance_norm)
                         for _ in range(2)]
        self.up_blocks = nn.ModuleList(up_blocks)
        self.resblock = nn.ModuleList(resblock)
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.num_channels = num_channels

    @staticmethod
    def deform_input(inp, deformation):
        """inp (B, C, h, w) sampled at deformation (B, h', w', 2), the flow resized bilinearly (its
        values are coordinates: not rescaled) when the sizes differ."""
        _, h_old, w_old, _ = deformation.shape
        _, _, h, w = inp.shape
        if (h_old, w_old) != (h, w):
            deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode='bilinear',
                                        align_corners=True).permute(0, 2, 3, 1)
        return F.grid_sample(inp, deformation, align_corners=True)

    def occlude_input(self, inp, occlusion_map):
        """inp * occlusion_map; with a single map (multi_mask False) it is resized to inp first."""
        if not self.multi_mask and inp.shape[2:] != occlusion_map.shape[2:]:
            occlusion_map = F.interpolate(occlusion_map, size=inp.shape[2:], mode='bilinear', align_corners=True)
        return inp * occlusion_map

    def encode(self, source_image):
        """The encoder's maps [H, H/2, ..., H/2^num_down_blocks]."""
        out = self.first(source_image)
        encoder_map = [out]
        for down_block in self.down_blocks:
            out = down_block(out)
            encoder_map.append(out)
        return encoder_map

    def forward(self, source_image, dense_motion, encoder_map=None):
        """encoder_map: optional self.encode(source_image), computed once by callers that animate one
        source with many driving frames (the result is the same)."""
        encoder_map = self.encode(source_image) if encoder_map is None else encoder_map
        output_dict = {name: dense_motion[name] for name in ('contribution_maps', 'deformed_source', 'occlusion_map')}
        occlusion_map = dense_motion['occlusion_map']
        deformation = dense_motion['deformation']

        def warp(features, occlusion):
            """(warped * occlusion, the same from detached inputs: the warp loss trains the motion only;
            without gradients both are the same tensor, computed once)."""
            warped = self.occlude_input(self.deform_input(features, deformation), occlusion)
            if not torch.is_grad_enabled():
                return warped, warped
            return warped, self.occlude_input(self.deform_input(features.detach(), deformation), occlusion.detach())

        out, detached = warp(encoder_map[-1], occlusion_map[0])
        warped_encoder_maps = [detached]
        for i in range(self.num_down_blocks):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            encode_i, detached = warp(encoder_map[-(i + 2)], occlusion_map[i + 1 if self.multi_mask else 0])
            warped_encoder_maps.append(detached)
            if i < self.num_down_blocks - 1:
                out = torch.cat([out, encode_i], 1)

        deformed_source = self.deform_input(source_image, deformation)
        output_dict['deformed'] = deformed_source
        output_dict['warped_encoder_maps'] = warped_encoder_maps
        occlusion_last = occlusion_map[-1]
        if not self.multi_mask:
            occlusion_last = F.interpolate(occlusion_last, size=out.shape[2:], mode='bilinear', align_corners=True)
        out = out * (1 - occlusion_last) + encode_i
        out = torch.sigmoid(self.final(out))
        output_dict['prediction'] = out * (1 - occlusion_last) + deformed_source * occlusion_last
        return output_dict

    def get_encode(self, driver_image, occlusion_map):
        """The driving frame's encoder maps, occluded like the warped source's and detached, finest first
        (the warp loss' targets). TPSMM pairs encoder level i > 0 with occlusion_map[2 - i] (written for
        three down blocks)."""
        out = self.first(driver_image)
        encoder_map = [self.occlude_input(out.detach(), occlusion_map[-1].detach())]
        for i, down_block in enumerate(self.down_blocks):
            out = down_block(out.detach())
            encoder_map.append(self.occlude_input(out.detach(), occlusion_map[2 - i].detach()).detach())
        return encoder_map
