"""The original's logger.py, kept importable: `Logger` (checkpoints, losses, visualisations) and
`Visualizer`, implemented in toolkit.logger."""
from toolkit.logger import Logger, Visualizer

__all__ = ['Logger', 'Visualizer']
