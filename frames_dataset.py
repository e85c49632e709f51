"""The original's frames_dataset.py, kept importable: `FramesDataset`, `DatasetRepeater`,
`PairedDataset` and `read_video`, implemented in toolkit.datasets."""
from toolkit.datasets import DatasetRepeater, FramesDataset, PairedDataset, read_video

__all__ = ['FramesDataset', 'DatasetRepeater', 'PairedDataset', 'read_video']
