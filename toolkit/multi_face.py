"""Multi-face animation: every face of a (group) photo follows one driving video, and each animated
face is blended back into the full-resolution photo.

    from toolkit.multi_face import animate_faces, detect_faces
    boxes = detect_faces(photo)                          # (N, 4) x1, y1, x2, y2, largest first
    for frame in animate_faces(photo, driving_frames, generator, kp_detector, boxes=boxes):
        ...                                              # (H, W, 3) like `photo`, one per driving frame

The steps, each with its rule:

1. Detection (`detect_faces`), once, offline, with one of toolkit.faces.DETECTORS (default
   PHOTO_DETECTOR, dlib's CNN detector, chosen by measurement: docs/faces.md): the photo is scaled
   by an integer factor so that its shorter side is about DETECT_SIZE pixels (the LBP cascade also
   scales small images up; dlib's detectors double the image as often as it takes for a face of
   MIN_FACE of the shorter side to reach 80 pixels, HOG at most twice, the CNN once), and faces
   from MIN_FACE of the shorter side up are searched. A photo gets one look, so it asks for more
   evidence than a video frame does: the LBP cascade MIN_NEIGHBORS overlapping hits per face (it
   merges hits overlapping by more than half of the smaller), dlib a score of MIN_SCORE. Boxes that
   still overlap are reduced to the largest (toolkit.faces.drop_overlapping).
2. Crops (toolkit.faces.square_crop): each box grows by `increase` of its longer side on each side
   into a square (crop-video.py's --increase; 0.5 = twice the box, about the framing of the
   VoxCeleb crops), is moved inside the photo, and shrunk (never squashed) only if larger than it.
   Each crop is resized to the model's frame size (the driving frames' size).
3. Animation: the N faces are one batch for the generator (ImageAnimator with N sources): their
   keypoints and encoder features are computed once, every driving frame is applied to all of them
   (B frames x N faces per forward pass), and with adapt_movement_scale every face is scaled by its
   own keypoints' convex hull (toolkit.animation.adapt_movement_scale_factors).
4. Paste-back (`feather_mask`, `paste`): each generated face is resized to its crop (bilinear,
   anti-aliased) and blended into the photo with a feathered elliptical mask: for a pixel at offset
   (dx, dy) from the crop's centre, crop size (w, h),

       d = max(sqrt((dx / (ratio * w))^2 + (dy / (ratio * h))^2), |dx| / (w / 2), |dy| / (h / 2))
       t = clip((1 - d) / FEATHER, 0, 1);   mask = t^2 (3 - 2 t)     (smoothstep)

   i.e. an ellipse of semi-axes ratio * w and ratio * h (a circle for the square crops: PaddleGAN's
   radius ratio * crop width), fully pasted within (1 - FEATHER) of that radius, fading smoothly to
   exactly 0 at it; the second and third terms only matter for ratio > 0.5, where they bring the
   mask to 0 at the crop's border instead of cutting it there. result = photo + mask * (face -
   photo). Faces are pasted from the smallest crop to the largest (ties: left to right, then top to
   bottom), so where masks overlap, the larger (usually nearer) face lies on top. Every pixel where
   all masks are 0 keeps the photo's exact value.
"""
import logging
from itertools import chain

import numpy as np
import torch.nn.functional as F

from toolkit.animation import ImageAnimator, batched, default_batch_size, to_uint8
from toolkit.faces import PHOTO_DETECTOR, drop_overlapping, face_detector, square_crop
from toolkit.resize import resize_frame
from modules.errors import InputError

log = logging.getLogger(__name__)

RATIO = 0.4  # radius of the pasted ellipse / crop size (PaddleGAN's --ratio; 0.4-0.5 suit most photos)
INCREASE = 0.5  # each side of the face box grows by this fraction of its longer side
FEATHER = 0.3  # the outer 30% of the ellipse's radius fades from 1 to 0
DETECT_SIZE = 320  # shorter side of the photo, in pixels, as the cascade sees it
MIN_FACE = 0.075  # smallest face searched, as a fraction of the shorter side (24 of 320 pixels)
MIN_NEIGHBORS = 16  # overlapping LBP cascade hits per face in a photo (fewer: false faces in dark regions)
MIN_SCORE = 0.5  # least dlib detection score in a photo (dlib's own 0 lets a badge pass: docs/faces.md)


class NoFaceFound(InputError):
    """detect_faces found no face where animate_faces needed one."""


def check_ratio(ratio, name='ratio'):
    """Raises InputError unless 0 < ratio <= 1."""
    if not 0 < ratio <= 1:
        raise InputError(f'{name} {ratio} is outside (0, 1]: it is the radius of the pasted part as a fraction of '
                         f'the crop (0.4-0.5 suit most photos)')


def check_increase(increase, name='increase'):
    """Raises InputError unless increase >= 0."""
    if not increase >= 0:
        raise InputError(f'{name} {increase} is negative: it is how much each face box grows on each side, as a '
                         f'fraction of its longer side (e.g. {INCREASE})')


def as_image(image):
    """(H, W, 3) uint8 stays uint8; other numbers become float32 (expected in [0, 1]); a gray (H, W)
    image is repeated to 3 channels, an alpha channel dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] < 3:
        raise InputError(f'expected an (H, W, 3) image, got shape {image.shape}')
    image = image[..., :3]
    return image if image.dtype == np.uint8 else image.astype(np.float32)


def as_float(image):
    """as_image, in float32 [0, 1] (uint8 / 255)."""
    image = as_image(image)
    return image.astype(np.float32) / 255 if image.dtype == np.uint8 else image


def detect_faces(image, detector=PHOTO_DETECTOR, detect_size=DETECT_SIZE, min_face=MIN_FACE,
                 min_neighbors=MIN_NEIGHBORS, min_score=MIN_SCORE):
    """Frontal faces in one photo: (H, W, 3) uint8 or float in [0, 1] -> (N, 4) float64 boxes
    (x1, y1, x2, y2) in the photo's pixels, largest first, none overlapping (module docstring, step 1).
    detector: one of toolkit.faces.DETECTORS (lbp, hog, cnn); the evidence a face needs:
    min_neighbors for lbp, min_score for hog and cnn.
    Raises nothing when there is no face: the result is then empty, (0, 4). Raises InputError for an
    unknown detector, or when dlib is missing for hog / cnn."""
    image = to_uint8(as_image(image))
    height, width = image.shape[:2]
    # The detectors size the frame by its width: this width puts the shorter side near detect_size.
    find = face_detector(detector, image.shape, detect_width=width * detect_size / min(height, width),
                         min_face=min_face, min_neighbors=min_neighbors, min_score=min_score)
    boxes = drop_overlapping(find(image))
    log.debug('faces found (%s): %s', detector, np.round(boxes).astype(int).tolist())
    return boxes


def feather_mask(height, width, ratio=RATIO, feather=FEATHER):
    """The paste-back weight of a (height, width) crop: float32 (height, width) in [0, 1], 1 at the
    centre, exactly 0 outside the ellipse of semi-axes ratio * width, ratio * height (formula in the
    module docstring). Pixel centres are at offsets (i + 0.5 - size / 2) from the crop's centre."""
    dy = (np.arange(height) + 0.5 - height / 2)[:, None]  # (h, 1)
    dx = (np.arange(width) + 0.5 - width / 2)[None, :]  # (1, w)
    ellipse = np.sqrt((dx / (ratio * width)) ** 2 + (dy / (ratio * height)) ** 2)
    border = np.maximum(np.abs(dx) / (width / 2), np.abs(dy) / (height / 2))
    t = np.clip((1 - np.maximum(ellipse, border)) / feather, 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def paste_order(crops):
    """Indices of crops (left, top, width, height) in blending order: smallest area first, so larger
    faces lie on top; ties left to right, then top to bottom."""
    return sorted(range(len(crops)), key=lambda n: (crops[n][2] * crops[n][3], crops[n][0], crops[n][1]))


def paste(image, face, crop, mask):
    """Blends `face` (height, width, 3) float in [0, 1] into image[crop] in place: image + mask *
    (face - image), rounded for a uint8 image; where mask is 0 the image keeps its exact values."""
    left, top, width, height = crop
    region = image[top:top + height, left:left + width]  # a view: written in place
    scale = 255 if image.dtype == np.uint8 else 1
    blended = region + mask[..., None] * (face * scale - region)  # float32 (height, width, 3)
    region[...] = np.rint(blended) if image.dtype == np.uint8 else blended


class FaceAnimator(ImageAnimator):
    """Animates the faces in `boxes` of one full-resolution image together and pastes them back.

    source_image: (H, W, 3) uint8, or float in [0, 1]; boxes: (N, 4) x1, y1, x2, y2 (detect_faces);
    frame_shape: (h, w) of the model's frames, which the driving frames have. `crops` are the
    (left, top, width, height) of each face's crop, `faces` the crops at the model's size.
    Inherits keypoints / set_initial / kp_source (face 0 first) from ImageAnimator; __call__(frames
    (B, h, w, 3) float in [0, 1]) -> a list of B images like source_image, faces pasted back.
    """

    def __init__(self, source_image, boxes, generator, kp_detector, frame_shape, ratio=RATIO, increase=INCREASE,
                 relative=True, adapt_movement_scale=True, fast=False, avd_network=None):
        check_ratio(ratio)
        check_increase(increase)
        self.image = as_image(source_image)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            raise NoFaceFound('no face box to animate')
        frame_shape = tuple(frame_shape[:2])
        aspect = frame_shape[0] / frame_shape[1]
        self.crops = [square_crop(box, self.image.shape, increase, aspect) for box in boxes]
        self.faces = np.stack([resize_frame(as_float(self.image[top:top + height, left:left + width]), frame_shape)
                               for left, top, width, height in self.crops])  # (N, h, w, 3) float32
        self.masks = [feather_mask(height, width, ratio) for _, _, width, height in self.crops]
        self.order = paste_order(self.crops)
        super().__init__(self.faces, generator, kp_detector, relative, adapt_movement_scale, fast, avd_network)

    def __call__(self, frames):
        batch, count = len(frames), len(self.crops)
        prediction = self.predict(frames).float()  # (B * N, 3, h, w), frame-major
        prediction = prediction.reshape(batch, count, *prediction.shape[1:])  # (B, N, 3, h, w)
        results = [self.image.copy() for _ in range(batch)]
        for n in self.order:
            left, top, width, height = self.crops[n]
            faces = F.interpolate(prediction[:, n], size=(height, width), mode='bilinear', align_corners=False,
                                  antialias=True)  # (B, 3, height, width)
            for result, face in zip(results, faces.permute(0, 2, 3, 1).cpu().numpy()):
                paste(result, face, self.crops[n], self.masks[n])
        return results


def animate_faces(source_image, driving_frames, generator, kp_detector, boxes=None, ratio=RATIO, increase=INCREASE,
                  relative=True, adapt_movement_scale=True, batch_size=None, fast=False):
    """Every face of `source_image` animated by `driving_frames`, pasted back at full resolution.

    source_image: (H, W, 3) uint8, or float in [0, 1]. driving_frames: an iterable of (h, w, 3)
    frames (uint8 or float in [0, 1]) at the model's frame size, read lazily. boxes: (N, 4) face boxes
    (x1, y1, x2, y2) in source pixels; None = detect_faces(source_image) (NoFaceFound if none).
    ratio, increase: the paste-back and crop rules (module docstring). relative /
    adapt_movement_scale: as make_animation's, with each face's own scale. batch_size: driving
    frames per forward pass (default_batch_size), i.e. batch_size x N faces for the generator.

    Returns an iterator of (H, W, 3) frames, uint8 if source_image is uint8, else float32, one per
    driving frame; frames are animated as the iterator is consumed (memory does not depend on the
    video's length). Raises InputError (NoFaceFound, bad ratio / increase) when called.
    """
    check_ratio(ratio)
    check_increase(increase)
    image = as_image(source_image)
    if boxes is None:
        boxes = detect_faces(image)
        if not len(boxes):
            raise NoFaceFound('no face found in the source image: pass boxes=[(x1, y1, x2, y2), ...], or animate '
                              'the whole image with demo.make_animation')
    frames = iter(driving_frames)
    first = next(frames, None)
    if first is None:
        return iter(())
    first = as_float(first)
    animator = FaceAnimator(image, boxes, generator, kp_detector, first.shape[:2], ratio, increase, relative,
                            adapt_movement_scale, fast)
    return _stream(animator, chain([first], frames), batch_size or default_batch_size(animator.device, fast))


def _stream(animator, frames, batch_size):
    for batch in batched(frames, batch_size):
        yield from animator(np.stack([as_float(frame) for frame in batch]))
