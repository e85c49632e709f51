"""CPABMM's dense motion network (Wang et al., AAAI 2024): TPSMM's, with CPAB transforms in place of
the thin-plate splines, plus one global CPAB over all keypoints."""
import torch

from modules.cpabmm.cpab import CPAB, fit_adam, fit_gauss_newton
from modules.tpsmm.dense_motion import DenseMotionNetwork, background_grid
from modules.util import make_coordinate_grid

PARTIAL_TESSELLATION = (4, 4)  # CPABMM's: d = 58 per 5-keypoint transform
GLOBAL_TESSELLATION = (6, 6)   # d = 130 for the transform of all 5K keypoints
# The global fit of all 5K keypoints meets groups that move differently where they overlap (and
# keypoints almost on top of each other): no smooth map matches them all, and unpenalised
# Gauss-Newton then grows theta without bound. This penalty keeps theta near CPABMM's Adam sizes
# while the fit error stays below Adam's (measured on the bundled model's keypoints and on
# benchmarks/cpab_fit.py's pairs).
GLOBAL_REGULARIZATION = 1e-5
# The partial fits (10 equations, 58 unknowns) have many exact solutions; a tiny penalty picks one
# that does not jump when the keypoints move by a rounding error (two keypoints close together make
# the unpenalised problem ill-conditioned).
PARTIAL_REGULARIZATION = 1e-7
FITS = ('gauss_newton', 'adam')
OUTSIDE = 4.0  # grids are clamped to [-4, 4] ([-1, 1] is the frame)


class CpabDenseMotionNetwork(DenseMotionNetwork):
    """(source_image, kp_driving, kp_source {'fg_kp': (B, 5K, 2)}, bg_param) -> TPSMM's output dict, with
    T = K + 2 transforms: 0 = background (identity or bg_param), 1..K = one CPAB per group of 5
    keypoints, K+1 = the global CPAB of all 5K keypoints ('deformed_source' (B, K+2, C, h, w),
    'contribution_maps' (B, K+2, h, w), ...).

    Each CPAB maps driving-frame coordinates to source coordinates: its theta is fitted so that
    T(kp_driving) = kp_source, on detached keypoints (as CPABMM: no gradient reaches the keypoints
    or any weight through the transforms, which are computed without autograd).
    fit='gauss_newton' (ours, fit_iterations damped Gauss-Newton steps on the whole batch) or 'adam'
    (CPABMM's: max_iter Adam steps, 1.5 max_iter for the global transform). integration_steps: the
    CPAB integrator's steps (libcpab's 50).

    Every fit starts from the identity, also in video animation: warm starts from the previous
    frame's theta were tried and drift (each Gauss-Newton step is the smallest change of theta, so
    the parts the 5 keypoints do not pin down pile up over a video until the fit stalls).
    """

    EXTRA_TRANSFORMS = 2  # background + global CPAB

    def __init__(self, block_expansion, num_blocks, max_features, num_cpab, num_channels, scale_factor=0.25,
                 bg=False, multi_mask=True, max_iter=100, kp_variance=0.01, fit='gauss_newton', fit_iterations=10,
                 integration_steps=50):
        super().__init__(block_expansion, num_blocks, max_features, num_cpab, num_channels, scale_factor=scale_factor,
                         bg=bg, multi_mask=multi_mask, kp_variance=kp_variance)
        if fit not in FITS:
            raise ValueError(f'fit must be one of {FITS}, got {fit!r}')
        self.num_cpab = num_cpab
        self.max_iter = max_iter
        self.fit = fit
        self.fit_iterations = fit_iterations
        self.partial = CPAB(PARTIAL_TESSELLATION, nsteps=integration_steps)
        self.global_cpab = CPAB(GLOBAL_TESSELLATION, nsteps=integration_steps)

    def fit_theta(self, cpab, driving, source, steps, regularization):
        """theta (N, d) for T(driving) = source, points (N, P, 2) in [0, 1]."""
        if self.fit == 'adam':
            return fit_adam(cpab, driving, source, steps=steps)[0]
        return fit_gauss_newton(cpab, driving, source, iterations=self.fit_iterations,
                                regularization=regularization)[0]

    def _transformations(self, source_image, kp_driving, kp_source, bg_param):
        bs, _, h, w = source_image.shape
        driving = (kp_driving.detach() + 1) / 2  # [-1, 1] -> the CPAB domain [0, 1]
        source = (kp_source.detach() + 1) / 2
        with torch.no_grad():
            theta_partial = self.fit_theta(self.partial, driving.reshape(bs * self.num_cpab, 5, 2),
                                           source.reshape(bs * self.num_cpab, 5, 2), self.max_iter,
                                           PARTIAL_REGULARIZATION)
            theta_global = self.fit_theta(self.global_cpab, driving, source, 1.5 * self.max_iter,
                                          GLOBAL_REGULARIZATION)
            grid = (make_coordinate_grid((h, w), device=driving.device, dtype=driving.dtype).view(-1, 2) + 1) / 2
            partial = self.partial.transform(grid, theta_partial).view(bs, self.num_cpab, h, w, 2)
            whole = self.global_cpab.transform(grid, theta_global).view(bs, 1, h, w, 2)
            # A field fitted to keypoints that nearly coincide but move apart can be huge: points it
            # throws far outside (or to inf) sample nothing either way; clamped they stay finite, so a
            # dropped transform's zero weight cannot turn them into NaN.
            cpab = (2 * torch.cat([partial, whole], dim=1) - 1).nan_to_num(OUTSIDE, OUTSIDE, -OUTSIDE)
        return torch.cat([background_grid(bs, h, w, bg_param, driving), cpab.clamp(-OUTSIDE, OUTSIDE)], dim=1)
