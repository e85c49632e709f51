"""Animation: relative keypoint transfer (normalize_kp) and the `animate` mode of run.py."""
import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


def convex_hull_area(points):
    """Area of the convex hull of 2-D points (N, 2) (Andrew's monotone chain + shoelace, float64).

    Equals scipy.spatial.ConvexHull(points).volume, which the original uses; 0 for degenerate sets.
    """
    pts = sorted(set(map(tuple, np.asarray(points, dtype=np.float64).tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    x = np.array([p[0] for p in hull])
    y = np.array([p[1] for p in hull])
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def adapt_movement_scale_factor(kp_source, kp_driving_initial):
    """sqrt(hull area of kp_source) / sqrt(hull area of kp_driving_initial), from batch element 0
    only (as the original)."""
    source_area = convex_hull_area(kp_source['value'][0].detach().cpu().numpy())
    driving_area = convex_hull_area(kp_driving_initial['value'][0].detach().cpu().numpy())
    return np.sqrt(source_area) / np.sqrt(driving_area)


def normalize_kp(kp_source, kp_driving, kp_driving_initial, adapt_movement_scale=False,
                 use_relative_movement=False, use_relative_jacobian=False):
    """Driving keypoints expressed relative to the first driving frame, applied to the source (Sec. 3.5).

    With use_relative_movement: value = (kp_driving - kp_driving_initial) * scale + kp_source, where
    scale is adapt_movement_scale_factor(...) if adapt_movement_scale else 1 (the scale is only used
    with relative movement, as in the original). With use_relative_jacobian as well:
    jacobian = J_driving @ inverse(J_driving_initial) @ J_source. Unlike the original, a model
    without jacobians does not crash there: the relative jacobian is skipped.
    Returns a new dict (the inputs are not modified).
    """
    scale = adapt_movement_scale_factor(kp_source, kp_driving_initial) if adapt_movement_scale else 1
    kp_new = dict(kp_driving)
    if use_relative_movement:
        kp_value_diff = (kp_driving['value'] - kp_driving_initial['value']) * scale
        kp_new['value'] = kp_value_diff + kp_source['value']
        if use_relative_jacobian and 'jacobian' in kp_driving:
            jacobian_diff = torch.matmul(kp_driving['jacobian'], torch.inverse(kp_driving_initial['jacobian']))
            kp_new['jacobian'] = torch.matmul(jacobian_diff, kp_source['jacobian'])
    return kp_new
