"""The original's reconstruction.py, kept importable: `reconstruction` (run.py --mode reconstruction),
implemented in toolkit.reconstruction."""
from toolkit.reconstruction import reconstruction

__all__ = ['reconstruction']
