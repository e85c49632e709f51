"""The original's animate.py, kept importable: `normalize_kp` (relative keypoint transfer) and
`animate` (run.py --mode animate). The animation core lives in toolkit.animation."""
from toolkit.animation import animate, normalize_kp

__all__ = ['animate', 'normalize_kp']
