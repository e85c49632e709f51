"""The originals' train.py, kept importable: FOMM's `train`, TPSMM's `train_tps` and `train_avd`
(run.py --mode train / train_avd), implemented in toolkit.training."""
from toolkit.training import train, train_avd, train_tps

__all__ = ['train', 'train_tps', 'train_avd']
