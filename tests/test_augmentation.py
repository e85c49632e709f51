"""augmentation.py: same draws for every frame, exact flips, the geometry the original used, and the
colour-jitter formulas against independent computations (scikit-image's HSV, explicit luma)."""

import numpy as np
import pytest
import torch
from skimage.color import hsv2rgb, rgb2hsv
from skimage.transform import resize, rotate

from toolkit.augmentation import (AllAugmentationTransform, ColorJitter, RandomCrop, RandomFlip, RandomResize,
                          RandomRotation, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation,
                          hsv_to_rgb, rgb_to_hsv, torch_seeded_rng)
from modules.errors import ConfigError

FULL = dict(flip_param={'horizontal_flip': True, 'time_flip': True}, rotation_param={'degrees': 20},
            resize_param={'ratio': [0.8, 1.2]}, crop_param={'size': [40, 48]},
            jitter_param={'brightness': 0.3, 'contrast': 0.3, 'saturation': 0.3, 'hue': 0.2})


class Scripted:
    """A stand-in Generator whose random() returns the given values in turn."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def image(seed=0, h=32, w=48):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def test_order_of_parts_is_the_originals():
    transform = AllAugmentationTransform(**FULL)
    assert [type(t) for t in transform.transforms] == [RandomFlip, RandomRotation, RandomResize, RandomCrop,
                                                       ColorJitter]
    assert AllAugmentationTransform().transforms == []


@pytest.mark.parametrize('seed', range(4))
def test_every_frame_gets_the_same_draws(seed):
    frame = image(seed)
    out = AllAugmentationTransform(**FULL)([frame, frame.copy(), frame.copy()], np.random.default_rng(seed))
    assert len(out) == 3 and out[0].shape == (40, 48, 3) and out[0].dtype == np.float32
    assert 0 <= out[0].min() and out[0].max() <= 1
    assert not np.allclose(out[0][:32], frame)  # something happened
    for other in out[1:]:
        np.testing.assert_array_equal(other, out[0])


def test_geometry_keeps_frame_differences():
    """Frames that differ by a constant keep differing by it: same angle, scale and window for all."""
    frame = image(1) * 0.5
    transform = AllAugmentationTransform(**{k: FULL[k] for k in ('rotation_param', 'resize_param', 'crop_param')})
    constant = np.full_like(frame, 0.25)
    first, second, third = transform([frame, frame + constant, constant], np.random.default_rng(3))
    assert third.min() == 0 and third.max() > 0.249  # black rotation corners
    np.testing.assert_allclose(second - first, third, atol=1e-5)  # every step is linear in the frame


def test_flips_are_exact():
    clip = [image(0), image(1)]
    mirrored = RandomFlip(horizontal_flip=True)(clip, Scripted(0.9, 0.1))
    for out, frame in zip(mirrored, clip):
        np.testing.assert_array_equal(out, frame[:, ::-1])
    reversed_ = RandomFlip(time_flip=True)(clip, Scripted(0.1))
    np.testing.assert_array_equal(reversed_[0], clip[1])
    np.testing.assert_array_equal(reversed_[1], clip[0])
    kept = RandomFlip(time_flip=True, horizontal_flip=True)(clip, Scripted(0.7, 0.6))
    np.testing.assert_array_equal(kept[0], clip[0])
    # the original's quirk: a time-flipped clip is never also mirrored
    both = RandomFlip(time_flip=True, horizontal_flip=True)(clip, Scripted(0.1, 0.1))
    np.testing.assert_array_equal(both[0], clip[1])
    # disabled flips still consume their draw (as the original): the second draw decides the mirror
    np.testing.assert_array_equal(RandomFlip(horizontal_flip=True)(clip, Scripted(0.1, 0.1))[0], clip[0][:, ::-1])


def test_uint8_clip_and_array_clip():
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    out = RandomFlip(horizontal_flip=True)(frames, Scripted(0.9, 0.1))
    assert isinstance(out, list) and out[0].dtype == np.float32
    np.testing.assert_allclose(out[1], frames[1, :, ::-1] / 255.0, atol=1e-7)


def test_rotation_as_the_original():
    frame = image(0, 32, 32)
    np.testing.assert_allclose(RandomRotation(0)([frame])[0], frame, atol=1e-6)
    np.testing.assert_allclose(RandomRotation((90, 90))([frame])[0], np.rot90(frame), atol=1e-5)  # counter-clockwise
    angle = np.random.default_rng(5).uniform(-30, 30)
    expected = rotate(frame, angle, preserve_range=True)  # the original's call
    np.testing.assert_allclose(RandomRotation(30)([frame], np.random.default_rng(5))[0], expected, atol=1e-6)


def test_resize_as_the_original():
    frame = image(0, 30, 40)
    scale = np.random.default_rng(2).uniform(0.5, 0.9)
    out = RandomResize(ratio=(0.5, 0.9))([frame], np.random.default_rng(2))[0]
    assert out.shape == (int(30 * scale), int(40 * scale), 3)
    expected = resize(frame, out.shape[:2], order=0, preserve_range=True, mode='constant', anti_aliasing=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    out = RandomResize(ratio=(2, 2), interpolation='bilinear')([frame])[0]
    assert out.shape == (60, 80, 3)


def test_crop_and_edge_padding():
    frame = image(0, 20, 30)
    out = RandomCrop(10)([frame], np.random.default_rng(0))[0]
    assert out.shape == (10, 10, 3)
    rng = np.random.default_rng(0)
    x1, y1 = int(rng.integers(0, 21)), int(rng.integers(0, 11))  # x drawn first, then y
    np.testing.assert_array_equal(out, frame[y1:y1 + 10, x1:x1 + 10])
    padded = RandomCrop((24, 30))([frame])[0]  # 2 rows of edge padding on top, 2 below
    assert padded.shape == (24, 30, 3)
    np.testing.assert_array_equal(padded[2:22], frame)
    np.testing.assert_array_equal(padded[0], frame[0])
    np.testing.assert_array_equal(padded[23], frame[-1])
    # non-square frames: both offsets vary (the original's swapped test would pin x to 0 here)
    xs = {np.argwhere([np.array_equal(frame[:, x:x + 5], c) for x in range(26)])[0][0]
          for c in (RandomCrop((20, 5))([frame], np.random.default_rng(s))[0] for s in range(20))}
    assert len(xs) > 3


# ----------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------

def luma(img):
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def test_brightness():
    img = image(0)
    np.testing.assert_array_equal(adjust_brightness(img, 1.0), img)
    np.testing.assert_allclose(adjust_brightness(img, 0.5), img * 0.5, atol=1e-7)
    np.testing.assert_allclose(adjust_brightness(img, 1.7), np.clip(img * 1.7, 0, 1), atol=1e-6)


def test_contrast():
    img = image(1)
    np.testing.assert_allclose(adjust_contrast(img, 1.0), img, atol=1e-6)
    mean = luma(img.astype(np.float64)).mean()
    np.testing.assert_allclose(adjust_contrast(img, 0.0), np.full_like(img, mean), atol=1e-6)
    np.testing.assert_allclose(adjust_contrast(img, 1.4), np.clip(1.4 * img - 0.4 * mean, 0, 1), atol=1e-6)


def test_saturation():
    img = image(2)
    np.testing.assert_allclose(adjust_saturation(img, 1.0), img, atol=1e-6)
    gray = luma(img.astype(np.float64))[..., None]
    np.testing.assert_allclose(adjust_saturation(img, 0.0), np.repeat(gray, 3, axis=2), atol=1e-6)
    np.testing.assert_allclose(adjust_saturation(img, 0.3), 0.3 * img + 0.7 * gray, atol=1e-6)


def test_hsv_and_hue_against_skimage():
    img = image(3).astype(np.float64)
    img[0, :4] = [[0.5, 0.5, 0.5], [0, 0, 0], [1, 0, 0], [0, 1, 1]]  # grey, black, pure colours
    np.testing.assert_allclose(rgb_to_hsv(img), rgb2hsv(img), atol=1e-7)
    np.testing.assert_allclose(hsv_to_rgb(rgb2hsv(img)), img, atol=1e-7)
    np.testing.assert_allclose(adjust_hue(img, 0.0), img, atol=1e-6)
    for factor in (0.1, -0.25, 0.5):
        hsv = rgb2hsv(img)
        hsv[..., 0] = (hsv[..., 0] + factor) % 1.0
        np.testing.assert_allclose(adjust_hue(img, factor), hsv2rgb(hsv), atol=1e-6)
    np.testing.assert_allclose(adjust_hue(img, 1 / 3)[1, 1], img[1, 1][[2, 0, 1]], atol=1e-6)  # R->G->B->R
    with pytest.raises(ValueError):
        adjust_hue(img, 0.6)


def jitter_differences(jitter, clip, seeds):
    """max |jitter(clip)| - the same clip jittered here| for each seed, the draws made here from the
    generator in the documented order (brightness, contrast, saturation, hue from their ranges, then a
    permutation of the steps brightness, saturation, hue, contrast, as the original) -> (differences,
    the orders drawn)."""
    differences, orders = [], set()
    for seed in seeds:
        rng = np.random.default_rng(seed)
        b, c, s, h = (rng.uniform(1 - jitter.brightness, 1 + jitter.brightness),
                      rng.uniform(1 - jitter.contrast, 1 + jitter.contrast),
                      rng.uniform(1 - jitter.saturation, 1 + jitter.saturation), rng.uniform(-jitter.hue, jitter.hue))
        steps = [(adjust_brightness, b), (adjust_saturation, s), (adjust_hue, h), (adjust_contrast, c)]
        order = rng.permutation(4)
        orders.add(tuple(order))
        out = jitter(clip, np.random.default_rng(seed))
        for frame, result in zip(clip, out):
            expected = frame
            for k in order:
                expected = steps[k][0](expected, steps[k][1])
            differences.append(float(np.abs(result - expected).max()))
    return differences, orders


def test_color_jitter_draws_and_random_order():
    jitter = ColorJitter(brightness=0.1, contrast=0.2, saturation=0.3, hue=0.05)
    rng = np.random.default_rng(0)
    for _ in range(200):
        b, c, s, h = jitter.get_params(rng)
        assert 0.9 <= b <= 1.1 and 0.8 <= c <= 1.2 and 0.7 <= s <= 1.3 and -0.05 <= h <= 0.05
    assert ColorJitter(brightness=2).get_params(rng)[0] >= 0  # lower bound max(0, 1 - b)
    assert ColorJitter(hue=0.1).get_params(rng)[:3] == (None, None, None)

    differences, orders = jitter_differences(jitter, [image(4), image(5)], range(12))
    assert max(differences) < 1e-6, differences
    assert len(orders) > 1  # the order really changes from clip to clip


def test_the_jitter_check_catches_draws_in_another_order(monkeypatch):
    """Contrast and saturation drawn the other way round: each still within its range, so only the
    draws made independently above tell."""
    def swapped(self, rng):
        brightness = rng.uniform(1 - self.brightness, 1 + self.brightness)
        saturation = rng.uniform(1 - self.saturation, 1 + self.saturation)
        contrast = rng.uniform(1 - self.contrast, 1 + self.contrast)
        return brightness, contrast, saturation, rng.uniform(-self.hue, self.hue)

    monkeypatch.setattr(ColorJitter, 'get_params', swapped)
    jitter = ColorJitter(brightness=0.1, contrast=0.2, saturation=0.3, hue=0.05)
    assert max(jitter_differences(jitter, [image(4), image(5)], range(12))[0]) > 1e-3


def test_torch_seeded_rng_follows_torch_seed():
    torch.manual_seed(11)
    first = torch_seeded_rng().random(3)
    torch.manual_seed(11)
    np.testing.assert_array_equal(torch_seeded_rng().random(3), first)
    assert not np.array_equal(torch_seeded_rng().random(3), first)
    torch.manual_seed(11)
    out1 = AllAugmentationTransform(**FULL)([image(0)])
    torch.manual_seed(11)
    np.testing.assert_array_equal(AllAugmentationTransform(**FULL)([image(0)])[0], out1[0])


@pytest.mark.parametrize('params, message', [
    ({'flip_param': {'horizontal': True}},
     "augmentation_params.flip_param: unknown key 'horizontal' (allowed: time_flip, horizontal_flip)"),
    ({'crop_param': {}}, "augmentation_params.crop_param: required key 'size' is missing"),
    ({'crop_param': {'size': [0, 4]}}, 'augmentation_params.crop_param.size: expected a positive int or '
                                       '[height, width], got [0, 4]'),
    ({'jitter_param': {'hue': 0.7}}, 'augmentation_params.jitter_param.hue: must be in [0, 0.5], got 0.7'),
    ({'jitter_param': {'contrast': -1}}, 'augmentation_params.jitter_param.contrast: must be a number >= 0, got -1'),
    ({'rotation_param': {'degrees': -5}}, 'augmentation_params.rotation_param.degrees: a single number must be '
                                          '>= 0, got -5'),
    ({'resize_param': 3}, 'augmentation_params.resize_param: expected a mapping, got int'),
])
def test_config_errors(params, message):
    with pytest.raises(ConfigError) as e:
        AllAugmentationTransform(**params)
    assert str(e.value) == message
