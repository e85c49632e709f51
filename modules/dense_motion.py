"""Dense motion network (Sec. 3.2): from the sparse keypoint motions to a dense backward flow
T_{S<-D}(z) and an occlusion map, predicted by an hourglass at low resolution."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.util import AntiAliasInterpolation2d, Hourglass, kp2gaussian, make_coordinate_grid


class DenseMotionNetwork(nn.Module):
    """Predicts the dense deformation (and occlusion map) from kp_source, kp_driving and the source.

    Built by OcclusionAwareGenerator from `dense_motion_params` (+ num_kp, num_channels,
    estimate_occlusion_map). Everything runs at `scale_factor` of the source resolution.
    """

    def __init__(self, block_expansion, num_blocks, max_features, num_kp, num_channels,
                 estimate_occlusion_map=False, scale_factor=1, kp_variance=0.01):
        super().__init__()
        # Input: K+1 heatmaps and K+1 deformed copies of the source, interleaved per keypoint.
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=(num_kp + 1) * (num_channels + 1),
                                   max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        else:
            self.occlusion = None
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        if self.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def create_heatmap_representations(self, source_image, kp_driving, kp_source):
        """Eq. 6: H_k(z) = G(kp_driving_k) - G(kp_source_k), plus an all-zero background channel first.

        source_image: (B, C, h, w) (only its size is used) -> (B, K+1, 1, h, w).
        """
        spatial_size = source_image.shape[2:]
        gaussian_driving = kp2gaussian(kp_driving, spatial_size=spatial_size, kp_variance=self.kp_variance)
        gaussian_source = kp2gaussian(kp_source, spatial_size=spatial_size, kp_variance=self.kp_variance)
        heatmap = gaussian_driving - gaussian_source  # (B, K, h, w)
        zeros = heatmap.new_zeros(heatmap.shape[0], 1, spatial_size[0], spatial_size[1])
        return torch.cat([zeros, heatmap], dim=1).unsqueeze(2)

    def create_sparse_motions(self, source_image, kp_driving, kp_source):
        """Eq. 4: T_{S<-D}(z) ~ kp_source_k + J_source_k J_driving_k^-1 (z - kp_driving_k) per keypoint,
        plus the identity for the background (index 0). -> (B, K+1, h, w, 2) as (x, y)."""
        bs, _, h, w = source_image.shape
        value_source = kp_source['value']
        identity_grid = make_coordinate_grid((h, w), device=value_source.device, dtype=value_source.dtype)
        identity_grid = identity_grid.view(1, 1, h, w, 2)
        coordinate_grid = identity_grid - kp_driving['value'].view(bs, self.num_kp, 1, 1, 2)  # z - kp_driving
        if 'jacobian' in kp_driving:
            jacobian = torch.matmul(kp_source['jacobian'], torch.inverse(kp_driving['jacobian']))  # (B, K, 2, 2)
            jacobian = jacobian.view(bs, self.num_kp, 1, 1, 2, 2)
            coordinate_grid = torch.matmul(jacobian, coordinate_grid.unsqueeze(-1)).squeeze(-1)
        driving_to_source = coordinate_grid + value_source.view(bs, self.num_kp, 1, 1, 2)
        identity_grid = identity_grid.expand(bs, 1, h, w, 2)
        return torch.cat([identity_grid, driving_to_source], dim=1)

    def create_deformed_source_image(self, source_image, sparse_motions):
        """Warps the source with each of the K+1 sparse motions: -> (B, K+1, C, h, w)."""
        bs, channels, h, w = source_image.shape
        source_repeat = source_image.unsqueeze(1).expand(bs, self.num_kp + 1, channels, h, w)
        source_repeat = source_repeat.reshape(bs * (self.num_kp + 1), channels, h, w)
        sparse_motions = sparse_motions.reshape(bs * (self.num_kp + 1), h, w, 2)
        # align_corners=False: torch>=1.3 default, what the original gets today; the fixtures encode it.
        sparse_deformed = F.grid_sample(source_repeat, sparse_motions, align_corners=False)
        return sparse_deformed.view(bs, self.num_kp + 1, channels, h, w)

    def forward(self, source_image, kp_driving, kp_source):
        """source_image: (B, C, H, W); kp dicts as KPDetector returns them ->
        {'sparse_deformed': (B, K+1, C, h, w), 'mask': (B, K+1, h, w) softmax over K+1,
         'deformation': (B, h, w, 2) backward flow as (x, y) sampling positions,
         'occlusion_map': (B, 1, h, w) in (0, 1), only if estimate_occlusion_map}
        with (h, w) = scale_factor * (H, W)."""
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        bs, _, h, w = source_image.shape

        out_dict = dict()
        heatmap_representation = self.create_heatmap_representations(source_image, kp_driving, kp_source)
        sparse_motion = self.create_sparse_motions(source_image, kp_driving, kp_source)
        deformed_source = self.create_deformed_source_image(source_image, sparse_motion)
        out_dict['sparse_deformed'] = deformed_source

        # (B, K+1, 1+C, h, w) -> (B, (K+1)(1+C), h, w): channels [heat_0, R_0, G_0, B_0, heat_1, ...]
        hourglass_input = torch.cat([heatmap_representation, deformed_source], dim=2).view(bs, -1, h, w)
        prediction = self.hourglass(hourglass_input)

        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, h, w)
        out_dict['mask'] = mask
        # Eq. 7: deformation = sum_k mask_k * sparse_motion_k
        deformation = (sparse_motion.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1)  # (B, 2, h, w)
        out_dict['deformation'] = deformation.permute(0, 2, 3, 1)

        if self.occlusion is not None:
            out_dict['occlusion_map'] = torch.sigmoid(self.occlusion(prediction))
        return out_dict
