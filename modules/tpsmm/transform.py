"""Thin-plate-spline transforms of TPSMM (Zhao & Zhang, CVPR 2022, Eq. 1-2).

    T(p) = A [p; 1] + sum_j w_j U(|p - c_j|),   U(r) = r^2 log(r^2 + 1e-9)

(the log of r squared, r^2 a plain sum of squares: TPSMM's convention, kept for its checkpoints).
Coordinates are (x, y) in [-1, 1] on make_coordinate_grid's pixel-centre grid.
"""
import torch

from modules.util import make_coordinate_grid


def tps_kernel(squared_distance):
    """U as a function of r^2: r^2 log(r^2 + 1e-9)."""
    return squared_distance * torch.log(squared_distance + 1e-9)


class TPS:
    """A batch of thin-plate splines.

    mode='kp' (the motion model): one TPS per group of 5 keypoints, from driving-frame coordinates to
    source coordinates: kp_1 = driving keypoints, kp_2 = source keypoints, both (bs, K, 5, 2). Solved as
    [[U(|c_i - c_j|), P], [P^T, 0]] + 0.01 I (the regulariser on the whole diagonal, the affine block
    included) times [w; A^T] = [kp_2; 0]. So the spline neither interpolates its control points exactly
    nor is the identity for identical keypoint sets. Fields: theta (bs, K, 2, 3) = A,
    control_points (bs, K, 5, 2) = kp_1, control_params (bs, K, 5, 2) = w.

    mode='random' (the equivariance loss): theta = [I | 0] + N(0, sigma_affine) (bs, 2, 3), control
    points on a points_tps x points_tps grid (1, P^2, 2), control_params N(0, sigma_tps) (bs, 1, P^2)
    added equally to x and y; drawn in this order from torch's global generator.
    """

    def __init__(self, mode, bs, **kwargs):
        self.bs = bs
        self.mode = mode
        if mode == 'random':
            noise = torch.normal(mean=0, std=kwargs['sigma_affine'] * torch.ones([bs, 2, 3]))
            self.theta = noise + torch.eye(2, 3).view(1, 2, 3)
            points = kwargs['points_tps']
            self.control_points = make_coordinate_grid((points, points), dtype=noise.dtype).unsqueeze(0)
            self.control_params = torch.normal(mean=0, std=kwargs['sigma_tps'] * torch.ones([bs, 1, points ** 2]))
        elif mode == 'kp':
            kp_1, kp_2 = kwargs['kp_1'], kwargs['kp_2']
            self.gs = kp_1.shape[1]
            n = kp_1.shape[2]
            squared = torch.norm(kp_1[:, :, :, None] - kp_1[:, :, None, :], dim=4, p=2) ** 2
            kernel = tps_kernel(squared)  # (bs, K, n, n)
            ones = torch.ones(*kp_1.shape[:3], 1, dtype=kp_1.dtype, device=kp_1.device)
            affine = torch.cat([kp_1, ones], 3)  # (bs, K, n, 3): P
            top = torch.cat([kernel, affine], 3)  # [K, P]
            bottom = torch.cat([affine.transpose(2, 3), kp_1.new_zeros(*kp_1.shape[:2], 3, 3)], 3)  # [P^T, 0]
            system = torch.cat([top, bottom], 2) + 0.01 * torch.eye(n + 3, dtype=kp_1.dtype, device=kp_1.device)
            target = torch.cat([kp_2, kp_2.new_zeros(*kp_2.shape[:2], 3, 2)], 2)  # (bs, K, n + 3, 2)
            param = torch.matmul(torch.inverse(system), target)
            self.theta = param[:, :, n:, :].transpose(2, 3)
            self.control_points = kp_1
            self.control_params = param[:, :, :n, :]
        else:
            raise ValueError(f"TPS mode must be 'kp' or 'random', got {mode!r}")

    def transform_frame(self, frame):
        """The warped coordinate grid of `frame` (bs, C, H, W): (bs, H, W, 2) in 'random' mode,
        (bs, K, H, W, 2) in 'kp' mode. Sampling is left to the caller."""
        height, width = frame.shape[2:]
        grid = make_coordinate_grid((height, width), device=frame.device, dtype=frame.dtype).view(1, height * width, 2)
        shape = [self.bs, height, width, 2] if self.mode == 'random' else [self.bs, self.gs, height, width, 2]
        return self.warp_coordinates(grid).view(*shape)

    def warp_coordinates(self, coordinates):
        """coordinates (N, P, 2), N = 1 or bs -> 'random': (bs, P, 2); 'kp': (bs, K, P, 2)."""
        theta = self.theta.to(coordinates)
        control_points = self.control_points.to(coordinates)
        control_params = self.control_params.to(coordinates)
        if self.mode == 'kp':
            transformed = torch.matmul(theta[..., :2], coordinates.transpose(1, 2)) + theta[..., 2:]  # (bs, K, 2, P)
            delta = coordinates.view(coordinates.shape[0], 1, 1, -1, 2) - control_points.view(
                self.bs, control_points.shape[1], -1, 1, 2)  # (bs, K, n, P, 2)
            spline = tps_kernel((delta ** 2).sum(-1))  # (bs, K, n, P)
            return transformed.transpose(2, 3) + torch.matmul(spline.transpose(2, 3), control_params)
        theta = theta.unsqueeze(1)  # (bs, 1, 2, 3)
        transformed = (torch.matmul(theta[..., :2], coordinates.unsqueeze(-1)) + theta[..., 2:]).squeeze(-1)
        delta = coordinates.view(coordinates.shape[0], -1, 1, 2) - control_points.view(1, 1, -1, 2)  # (N, P, n, 2)
        spline = (tps_kernel((delta ** 2).sum(-1)) * control_params).sum(dim=2)  # (bs, P)
        return transformed + spline.view(self.bs, coordinates.shape[1], 1)
