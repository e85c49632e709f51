"""TPSMM's anti-aliased down-sampling: FOMM's Gaussian blur, then TPSMM's own subsampling rule."""
import torch.nn.functional as F

from modules.util import AntiAliasInterpolation2d


class TpsAntiAliasInterpolation2d(AntiAliasInterpolation2d):
    """(B, C, H, W) -> (B, C, floor(H*scale), floor(W*scale)): the same Gaussian kernel (buffer `weight`,
    so the state-dict keys are FOMM's), subsampled by nearest interpolation with the scale itself as
    the interpolation factor, as TPSMM does. For scale 1/k (every config: 0.5, 0.25, 0.125) that keeps
    rows and columns 0, k, ..., k * (floor(size / k) - 1): FOMM's pixels without FOMM's last row or
    column when k does not divide the size (45x61 at 0.5: 22x30 here, 23x31 with FOMM's rule).
    Recomputing the factor from the output size (recompute_scale_factor=True) would pick other pixels,
    so it is pinned off."""

    def subsample(self, blurred):
        return F.interpolate(blurred, scale_factor=(self.scale, self.scale), mode='nearest',
                             recompute_scale_factor=False)
