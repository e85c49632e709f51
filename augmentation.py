"""The original's augmentation.py, kept importable: the clip transforms `AllAugmentationTransform`,
`RandomFlip`, `RandomResize`, `RandomCrop`, `RandomRotation` and `ColorJitter`, implemented in
toolkit.augmentation."""
from toolkit.augmentation import (AllAugmentationTransform, ColorJitter, RandomCrop, RandomFlip, RandomResize,
                                  RandomRotation)

__all__ = ['AllAugmentationTransform', 'RandomFlip', 'RandomResize', 'RandomCrop', 'RandomRotation', 'ColorJitter']
