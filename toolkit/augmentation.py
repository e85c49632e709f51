"""Training-time augmentation of a clip (the source/driving frame pair), without torchvision.

The original took these transforms from torch_videovision: they act on a whole clip and draw their
random numbers once per clip, so every frame gets the same flip, angle, scale, crop window and colour
change. We keep the original's class names, constructor parameters and order

    RandomFlip -> RandomRotation -> RandomResize -> RandomCrop -> ColorJitter

(`AllAugmentationTransform` builds the parts named in `dataset_params.augmentation_params`). Geometry
uses scikit-image exactly as the original did (`skimage.transform.rotate` / `resize` with the same
arguments). The colour jitter is written here in numpy; see `ColorJitter` for the formulas and for the
two ways it differs from the original's PIL round trip.

A clip is a list of (H, W, C) arrays (or one (T, H, W, C) array), float in [0, 1] or uint8 / uint16;
every part returns a list of float32 (H, W, C) arrays in [0, 1]. Each part takes an optional
`rng` (a `numpy.random.Generator`); without one it makes its own with `torch_seeded_rng()`, so that
results follow `torch.manual_seed` and differ between DataLoader workers.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Optional

import numpy as np
import torch
from skimage.transform import resize, rotate

from modules.errors import ConfigError

__all__ = ['AllAugmentationTransform', 'RandomFlip', 'RandomRotation', 'RandomResize', 'RandomCrop',
           'ColorJitter', 'adjust_brightness', 'adjust_contrast', 'adjust_saturation', 'adjust_hue',
           'rgb_to_grayscale', 'rgb_to_hsv', 'hsv_to_rgb', 'to_float_clip', 'torch_seeded_rng']

# ITU-R 601-2 luma, as PIL's convert('L') (which the original's jitter went through).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def torch_seeded_rng() -> np.random.Generator:
    """A fresh numpy Generator seeded by one draw from torch's global RNG.

    torch reseeds its global RNG in every DataLoader worker (base_seed + worker_id), so generators
    made here differ between workers, and a run is reproducible under `torch.manual_seed`. (numpy's
    own global RNG is not reseeded per worker, which is why we do not draw from `np.random`.)
    """
    seed = int(torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64).item())
    return np.random.default_rng(seed)


def to_float_clip(clip) -> list:
    """A clip -> list of float32 (H, W, C) arrays in [0, 1].

    clip: a list/tuple of (H, W, C) or (H, W) arrays, or a (T, H, W, C) array. uint8 is divided by
    255, uint16 by 65535, bool becomes 0/1, floats are kept (cast to float32).
    """
    frames = list(clip) if not isinstance(clip, np.ndarray) else [clip[t] for t in range(clip.shape[0])]
    if not frames:
        raise ValueError('empty clip')
    out = []
    for frame in frames:
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = frame[:, :, None]
        if frame.ndim != 3:
            raise ValueError(f'expected (H, W, C) frames, got shape {frame.shape}')
        if frame.dtype == np.uint8:
            frame = frame.astype(np.float32) / 255.0
        elif frame.dtype == np.uint16:
            frame = frame.astype(np.float32) / 65535.0
        elif frame.dtype == np.bool_ or np.issubdtype(frame.dtype, np.floating):
            frame = frame.astype(np.float32)
        else:
            raise ValueError(f'unsupported frame dtype {frame.dtype} (use uint8, uint16 or float in [0, 1])')
        out.append(frame)
    return out


def _size_pair(size, where: str) -> tuple:
    """An int or (h, w) -> (h, w) of positive ints."""
    if isinstance(size, numbers.Number):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, numbers.Integral) and s > 0 for s in size):
        raise ConfigError(f'{where}: expected a positive int or [height, width], got {list(size)}')
    return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------

class RandomFlip:
    """Random time flip (reverse the clip) and horizontal flip (mirror left-right), each with p = 1/2.

    Kept from the original: the time flip is decided first and, when it happens, the clip is
    returned at once, so a clip is never both reversed and mirrored. With both enabled a clip is
    reversed with p = 1/2, mirrored with p = 1/4 and left as is with p = 1/4. For a (source, driving)
    pair the time flip swaps the two frames.
    """

    def __init__(self, time_flip: bool = False, horizontal_flip: bool = False):
        self.time_flip = bool(time_flip)
        self.horizontal_flip = bool(horizontal_flip)

    def __call__(self, clip, rng: Optional[np.random.Generator] = None) -> list:
        rng = torch_seeded_rng() if rng is None else rng
        clip = to_float_clip(clip)
        if rng.random() < 0.5 and self.time_flip:  # draw first, as the original, even when off
            return clip[::-1]
        if rng.random() < 0.5 and self.horizontal_flip:
            return [np.ascontiguousarray(frame[:, ::-1]) for frame in clip]
        return clip


class RandomRotation:
    """Rotate every frame by the same angle drawn uniformly from [-degrees, degrees] (or [min, max]).

    As the original: `skimage.transform.rotate(frame, angle, preserve_range=True)`, i.e. degrees
    counter-clockwise about the centre, bilinear (order 1 for float input), same output size,
    corners filled with 0 (black, mode='constant').
    """

    def __init__(self, degrees):
        where = 'augmentation_params.rotation_param.degrees'
        if isinstance(degrees, numbers.Number):
            if degrees < 0:
                raise ConfigError(f'{where}: a single number must be >= 0, got {degrees}')
            degrees = (-degrees, degrees)
        else:
            degrees = tuple(degrees)
            if len(degrees) != 2:
                raise ConfigError(f'{where}: expected a number or [min, max], got {list(degrees)}')
        self.degrees = (float(degrees[0]), float(degrees[1]))

    def __call__(self, clip, rng: Optional[np.random.Generator] = None) -> list:
        rng = torch_seeded_rng() if rng is None else rng
        clip = to_float_clip(clip)
        angle = rng.uniform(self.degrees[0], self.degrees[1])
        return [np.clip(rotate(frame, angle, preserve_range=True), 0, 1).astype(np.float32) for frame in clip]


class RandomResize:
    """Rescale every frame by the same factor s drawn uniformly from [ratio[0], ratio[1]].

    The new size is (int(H * s), int(W * s)). As the original: `skimage.transform.resize` with
    order 0 for interpolation='nearest' (the default) or 1 for 'bilinear', anti_aliasing=True (a
    Gaussian pre-filter, effective when shrinking), mode='constant', preserve_range=True.
    """

    def __init__(self, ratio=(3. / 4., 4. / 3.), interpolation: str = 'nearest'):
        where = 'augmentation_params.resize_param'
        ratio = tuple(ratio)
        if len(ratio) != 2 or not all(isinstance(r, numbers.Number) and r > 0 for r in ratio):
            raise ConfigError(f'{where}.ratio: expected [min, max] of positive numbers, got {list(ratio)}')
        if interpolation not in ('nearest', 'bilinear'):
            raise ConfigError(f"{where}.interpolation: expected 'nearest' or 'bilinear', got {interpolation!r}")
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = interpolation

    def __call__(self, clip, rng: Optional[np.random.Generator] = None) -> list:
        rng = torch_seeded_rng() if rng is None else rng
        clip = to_float_clip(clip)
        scaling_factor = rng.uniform(self.ratio[0], self.ratio[1])
        im_h, im_w = clip[0].shape[:2]
        new_h, new_w = max(1, int(im_h * scaling_factor)), max(1, int(im_w * scaling_factor))
        order = 1 if self.interpolation == 'bilinear' else 0
        return [np.clip(resize(frame, (new_h, new_w), order=order, preserve_range=True, mode='constant',
                               anti_aliasing=True), 0, 1).astype(np.float32) for frame in clip]


class RandomCrop:
    """Cut the same random window of `size` (h, w) out of every frame.

    A frame smaller than the window is first padded (centred, edge mode) up to the window size, as
    the original. The top-left corner is uniform over all valid positions. One fix: the original
    tested the window height against the frame width (and vice versa) when deciding whether to draw
    an offset, which only matters for non-square frames; here x depends on widths and y on heights.
    """

    def __init__(self, size):
        self.size = _size_pair(size, 'augmentation_params.crop_param.size')

    def __call__(self, clip, rng: Optional[np.random.Generator] = None) -> list:
        rng = torch_seeded_rng() if rng is None else rng
        clip = to_float_clip(clip)
        h, w = self.size
        im_h, im_w = clip[0].shape[:2]
        pad_h = ((h - im_h) // 2, (h - im_h + 1) // 2) if h > im_h else (0, 0)
        pad_w = ((w - im_w) // 2, (w - im_w + 1) // 2) if w > im_w else (0, 0)
        if pad_h != (0, 0) or pad_w != (0, 0):
            clip = [np.pad(frame, (pad_h, pad_w, (0, 0)), mode='edge') for frame in clip]
        im_h, im_w = clip[0].shape[:2]
        x1 = int(rng.integers(0, im_w - w + 1))
        y1 = int(rng.integers(0, im_h - h + 1))
        return [np.ascontiguousarray(frame[y1:y1 + h, x1:x1 + w]) for frame in clip]


# ----------------------------------------------------------------------------------------------
# Colour (torchvision.transforms.functional definitions, float images in [0, 1])
# ----------------------------------------------------------------------------------------------

def rgb_to_grayscale(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W, 1) luma 0.299 R + 0.587 G + 0.114 B (a 1-channel image is returned as is)."""
    if img.shape[-1] == 1:
        return img
    r, g, b = LUMA_WEIGHTS
    return (r * img[..., 0:1] + g * img[..., 1:2] + b * img[..., 2:3]).astype(img.dtype)


def _blend(img: np.ndarray, other, factor: float) -> np.ndarray:
    """clip(factor * img + (1 - factor) * other, 0, 1), torchvision's `_blend` for float images."""
    return np.clip(factor * img + (1.0 - factor) * other, 0.0, 1.0).astype(np.float32)


def adjust_brightness(img: np.ndarray, factor: float) -> np.ndarray:
    """Brightness: clip(factor * img, 0, 1); factor 1 = identity, 0 = black."""
    return _blend(img, 0.0, factor)


def adjust_contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Contrast: blend with the mean of the image's grayscale (one scalar per frame); factor 1 =
    identity, 0 = a uniform grey image at that mean."""
    return _blend(img, float(rgb_to_grayscale(img).mean()), factor)


def adjust_saturation(img: np.ndarray, factor: float) -> np.ndarray:
    """Saturation: blend with the grayscale image; factor 1 = identity, 0 = grayscale. A 1-channel
    image is returned unchanged (as torchvision)."""
    if img.shape[-1] == 1:
        return img
    return _blend(img, rgb_to_grayscale(img), factor)


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 3) HSV, all in [0, 1] (hexcone model; grey pixels get h = 0)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    maxc = img.max(axis=-1)
    minc = img.min(axis=-1)
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
    safe = np.where(delta > 0, delta, 1)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(..., 3) HSV in [0, 1] -> (..., 3) RGB in [0, 1] (inverse of `rgb_to_hsv`)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    h6 = (h % 1.0) * 6.0
    sector = np.floor(h6)
    f = h6 - sector
    sector = sector.astype(np.int64) % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    cases = [sector == k for k in range(6)]
    r = np.select(cases, [v, q, p, p, t, v])
    g = np.select(cases, [t, v, v, q, p, p])
    b = np.select(cases, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def adjust_hue(img: np.ndarray, factor: float) -> np.ndarray:
    """Hue: RGB -> HSV, h = (h + factor) mod 1, -> RGB; factor in [-0.5, 0.5], 0 = identity. A
    1-channel image is returned unchanged (as torchvision)."""
    if not -0.5 <= factor <= 0.5:
        raise ValueError(f'hue factor must be in [-0.5, 0.5], got {factor}')
    if img.shape[-1] == 1:
        return img
    hsv = rgb_to_hsv(img.astype(np.float64))
    hsv[..., 0] = (hsv[..., 0] + factor) % 1.0
    return np.clip(hsv_to_rgb(hsv), 0.0, 1.0).astype(np.float32)


class ColorJitter:
    """Random brightness, contrast, saturation and hue, drawn once per clip.

    Factors, drawn in this order (as the original): brightness from [max(0, 1 - b), 1 + b], contrast
    from [max(0, 1 - c), 1 + c], saturation from [max(0, 1 - s), 1 + s], hue from [-h, h]; a
    parameter of 0 leaves that adjustment out. The enabled adjustments are then applied in a random
    order (a random permutation, as torchvision's ColorJitter), the same order for every frame.
    Formulas (torchvision.transforms.functional on float images; `_blend(a, b, f) = clip(f a + (1-f) b, 0, 1)`):

        brightness  _blend(img, 0, f)
        contrast    _blend(img, mean(gray(img)), f)      gray = 0.299 R + 0.587 G + 0.114 B
        saturation  _blend(img, gray(img), f)
        hue         HSV with h <- (h + f) mod 1

    Differences from the original, which round-tripped every frame through an 8-bit PIL image: we
    stay in float (no quantisation to 1/255 steps), the contrast mean is not rounded to an integer
    grey level, and the hue shift is not quantised to 1/255 of a turn. These are at most a few
    1/255 steps per pixel.
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        where = 'augmentation_params.jitter_param'
        for name, value in (('brightness', brightness), ('contrast', contrast), ('saturation', saturation)):
            if not isinstance(value, numbers.Number) or value < 0:
                raise ConfigError(f'{where}.{name}: must be a number >= 0, got {value!r}')
        if not isinstance(hue, numbers.Number) or not 0 <= hue <= 0.5:
            raise ConfigError(f'{where}.hue: must be in [0, 0.5], got {hue!r}')
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)

    def get_params(self, rng: np.random.Generator):
        """-> (brightness, contrast, saturation, hue) factors, None for a disabled one."""
        def factor(amount):
            return rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount) if amount > 0 else None
        brightness = factor(self.brightness)
        contrast = factor(self.contrast)
        saturation = factor(self.saturation)
        hue = rng.uniform(-self.hue, self.hue) if self.hue > 0 else None
        return brightness, contrast, saturation, hue

    def __call__(self, clip, rng: Optional[np.random.Generator] = None) -> list:
        rng = torch_seeded_rng() if rng is None else rng
        clip = to_float_clip(clip)
        brightness, contrast, saturation, hue = self.get_params(rng)
        steps = []  # the original's list order before shuffling: brightness, saturation, hue, contrast
        if brightness is not None:
            steps.append((adjust_brightness, brightness))
        if saturation is not None:
            steps.append((adjust_saturation, saturation))
        if hue is not None:
            steps.append((adjust_hue, hue))
        if contrast is not None:
            steps.append((adjust_contrast, contrast))
        steps = [steps[i] for i in rng.permutation(len(steps))]
        out = []
        for frame in clip:
            for fn, value in steps:
                frame = fn(frame, value)
            out.append(frame.astype(np.float32, copy=False))
        return out


# ----------------------------------------------------------------------------------------------
# All together
# ----------------------------------------------------------------------------------------------

_PARTS = (('flip_param', RandomFlip), ('rotation_param', RandomRotation), ('resize_param', RandomResize),
          ('crop_param', RandomCrop), ('jitter_param', ColorJitter))


class AllAugmentationTransform:
    """The augmentation of `dataset_params.augmentation_params`: the parts whose section is given,
    applied in the original's order flip, rotation, resize, crop, jitter.

    Each section is a dict of the part's constructor arguments, e.g. flip_param={'horizontal_flip':
    True, 'time_flip': True}, jitter_param={'hue': 0.5}; None leaves the part out. Call it on a clip
    (list of (H, W, C) frames or a (T, H, W, C) array, float in [0, 1] or uint8) with an optional
    numpy Generator; it returns a list of float32 (H, W, C) frames in [0, 1], every frame transformed
    with the same random draws. Without resize/crop the frame size is unchanged.
    """

    def __init__(self, resize_param=None, rotation_param=None, flip_param=None, crop_param=None,
                 jitter_param=None):
        given = {'resize_param': resize_param, 'rotation_param': rotation_param, 'flip_param': flip_param,
                 'crop_param': crop_param, 'jitter_param': jitter_param}
        self.transforms = []
        for name, cls in _PARTS:
            params = given[name]
            if params is None:
                continue
            if not isinstance(params, dict):
                raise ConfigError(f'augmentation_params.{name}: expected a mapping, got {type(params).__name__}')
            signature = inspect.signature(cls.__init__).parameters
            allowed = [key for key in signature if key != 'self']
            unknown = sorted(set(params) - set(allowed))
            if unknown:
                raise ConfigError(f'augmentation_params.{name}: unknown key {unknown[0]!r} '
                                  f'(allowed: {", ".join(allowed)})')
            missing = [key for key in allowed if signature[key].default is inspect.Parameter.empty
                       and key not in params]
            if missing:
                raise ConfigError(f'augmentation_params.{name}: required key {missing[0]!r} is missing')
            self.transforms.append(cls(**params))

    def __call__(self, clip, rng: Optional[np.random.Generator] = None) -> list:
        rng = torch_seeded_rng() if rng is None else rng
        clip = to_float_clip(clip)
        for transform in self.transforms:
            clip = transform(clip, rng)
        return clip

    def __repr__(self) -> str:
        return f'{type(self).__name__}({", ".join(type(t).__name__ for t in self.transforms)})'
