"""Offline face detection shared by crop-video.py (toolkit.cropping) and multi-face animation
(toolkit.multi_face): `face_detector(name, frame_shape, ...)`, the one choice of detector
(DETECTORS: scikit-image's bundled LBP frontal-face cascade, dlib's HOG detector or dlib's CNN
detector, toolkit.dlib_faces; no model download), box helpers (IoU, union, merging of overlapping
hits, dropping of overlapping faces) and the two crop rules built on `--increase`:

* `compute_crop`: the original crop-video.py's rule for a face track (grown, squared as far as the
  frame allows, then clipped to the frame: it may end up non-square at an edge);
* `square_crop`: the same growth, but the crop stays square (or of a given aspect ratio) and inside
  the image by moving it, and by shrinking it only if it is larger than the image (never squashed).

Boxes are (x1, y1, x2, y2) floats in pixels of the full-size image, x to the right, y down.
"""
import numpy as np

from modules.errors import InputError

# Cascade search parameters, in pixels of the downscaled detection frame.
SCALE_FACTOR = 1.1  # window growth per scale (1.2 misses faces in small videos such as carphone)
STEP_RATIO = 1.0  # exhaustive sliding window; 1.5 is ~3x faster but misses small faces
MIN_WINDOW = 24  # the cascade's own window size: no smaller face can be found
MIN_NEIGHBORS = 2  # overlapping hits needed for a detection (4 misses most carphone frames)
MERGE_OVERLAP = 0.5  # intersection / smaller area above which two final detections are one face
DETECTORS = ('lbp', 'hog', 'cnn')  # face_detector's names
VIDEO_DETECTOR = 'hog'  # crop-video.py's default (docs/faces.md, "Which face detector": measured)
PHOTO_DETECTOR = 'cnn'  # demo.py --face_detector auto's choice for photographs (likewise)
DLIB_FACE = 80  # pixels: the smallest face dlib's detectors find without upsampling (HOG's 80x80 window)
DLIB_MAX_UPSAMPLE = {'hog': 2, 'cnn': 1}  # doublings at most: each quadruples the time (the CNN's is seconds)
LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # skimage.color.rgb2gray weights


# ----------------------------------------------------------------------------------------------
# Boxes: (x1, y1, x2, y2) in pixels of the full-size frame
# ----------------------------------------------------------------------------------------------

def bb_intersection_over_union(box_a, box_b):
    """IoU of two boxes with the original's inclusive-pixel convention (+1 on each side length)."""
    x_a, y_a = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    x_b, y_b = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    inter = max(0, x_b - x_a + 1) * max(0, y_b - y_a + 1)
    area_a = (box_a[2] - box_a[0] + 1) * (box_a[3] - box_a[1] + 1)
    area_b = (box_b[2] - box_b[0] + 1) * (box_b[3] - box_b[1] + 1)
    return inter / float(area_a + area_b - inter)


def join(box_a, box_b):
    """The smallest box holding both."""
    return (min(box_a[0], box_b[0]), min(box_a[1], box_b[1]),
            max(box_a[2], box_b[2]), max(box_a[3], box_b[3]))


def merge_overlapping(boxes):
    """Groups boxes that overlap by more than MERGE_OVERLAP of the smaller one (transitively) and
    returns the mean box of each group, in order of first appearance. boxes: (N, 4) -> (M, 4)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    group = list(range(len(boxes)))

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            smaller = min(np.prod(boxes[i, 2:] - boxes[i, :2]), np.prod(boxes[j, 2:] - boxes[j, :2]))
            if w > 0 and h > 0 and w * h > MERGE_OVERLAP * smaller:
                group[root(j)] = root(i)
    roots = [root(i) for i in range(len(boxes))]
    return np.array([boxes[[k for k in range(len(boxes)) if roots[k] == r]].mean(axis=0)
                     for r in dict.fromkeys(roots)]).reshape(-1, 4)


def compute_crop(tube_bbox, frame_shape, increase_area):
    """The original's crop of a track region: each side grows by `increase_area` of the box size,
    and the shorter side grows more so that the box becomes square, then it is clipped to the frame.

    tube_bbox: (x1, y1, x2, y2); frame_shape: (H, W, ...) -> (width, height, left, top), ints.
    """
    left, top, right, bot = tube_bbox
    width, height = right - left, bot - top
    width_increase = max(increase_area, ((1 + 2 * increase_area) * height - width) / (2 * width))
    height_increase = max(increase_area, ((1 + 2 * increase_area) * width - height) / (2 * height))
    # int() truncates toward zero, as the original (a box just off the left edge gains a pixel).
    left = int(left - width_increase * width)
    top = int(top - height_increase * height)
    right = int(right + width_increase * width)
    bot = int(bot + height_increase * height)
    top, bot, left, right = max(0, top), min(bot, frame_shape[0]), max(0, left), min(right, frame_shape[1])
    return right - left, bot - top, left, top


def drop_overlapping(boxes):
    """Keeps one face where detections still overlap after merging: boxes sorted by area, largest
    first (ties: in their given order), and a box is dropped if it shares any area with a larger
    box already kept. boxes: (N, 4) -> (M, 4) float, largest first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = []
    for i in np.argsort(-areas, kind='stable'):
        if all(min(boxes[i, 2], boxes[k, 2]) <= max(boxes[i, 0], boxes[k, 0])
               or min(boxes[i, 3], boxes[k, 3]) <= max(boxes[i, 1], boxes[k, 1]) for k in kept):
            kept.append(i)
    return boxes[kept].reshape(-1, 4)


def square_crop(box, image_shape, increase, aspect=1.0):
    """The crop around one face box, as ints (left, top, width, height), never squashed:

    1. the box grows as in `compute_crop`: its longer side by `increase` of itself on each side, and
       the shorter side to the same length, i.e. a square of side (1 + 2 * increase) * max(w, h)
       centred on the box (increase 0.5: twice the box);
    2. with aspect = height / width other than 1 (a non-square model frame), the square is widened
       (or heightened) to that aspect ratio, so resizing the crop to the frame does not distort;
    3. a crop larger than the image is shrunk about its centre, aspect ratio kept, until it fits;
    4. the crop is moved inside the image (shifted away from the edges it crosses); sizes and
       offsets are rounded to whole pixels.

    image_shape: (H, W, ...). The face stays fully inside the crop unless step 3 had to shrink it.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    image_height, image_width = image_shape[:2]
    side = (1 + 2 * increase) * max(x2 - x1, y2 - y1)
    width, height = side * max(1.0, 1 / aspect), side * max(1.0, aspect)
    shrink = min(1.0, image_width / width, image_height / height)
    width = min(image_width, max(1, round(width * shrink)))
    height = min(image_height, max(1, round(height * shrink)))
    left = min(max(0, round((x1 + x2) / 2 - width / 2)), image_width - width)
    top = min(max(0, round((y1 + y2) / 2 - height / 2)), image_height - height)
    return left, top, width, height


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------

def downscale_gray(frame, factor):
    """uint8 (H, W, 3) -> float32 (H // factor, W // factor) luminance in [0, 1], box-averaged."""
    h, w = frame.shape[0] // factor, frame.shape[1] // factor
    gray = frame[:h * factor, :w * factor, :3].astype(np.float32) @ (LUMA / 255)  # (H', W')
    if factor == 1:
        return gray
    return gray.reshape(h, factor, w, factor).mean(axis=(1, 3))


def detection_factor(frame_width, detect_width):
    """Integer downscale factor that brings frame_width closest to detect_width (at least 1)."""
    return max(1, round(frame_width / detect_width))


class FaceDetector:
    """scikit-image's LBP frontal-face cascade on a downscaled gray frame: uint8 (H, W, 3) ->
    (N, 4) float boxes (x1, y1, x2, y2) in full-frame pixels, overlapping hits merged.

    min_neighbors: overlapping cascade hits a detection needs (video frames: MIN_NEIGHBORS, where a
    missed frame is bridged by tracking; a single photo wants more, see multi_face.detect_faces)."""

    def __init__(self, frame_shape, detect_width=320, min_face=0.125, min_neighbors=MIN_NEIGHBORS):
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade
        self.cascade = Cascade(lbp_frontal_face_cascade_filename())
        self.factor = detection_factor(frame_shape[1], detect_width)
        # Frames much narrower than detect_width (176x144 carphone) are upscaled by an integer factor
        # first: the cascade's 24-pixel smallest window is too coarse for their faces.
        self.up = max(1, round(detect_width / frame_shape[1])) if self.factor == 1 else 1
        h, w = frame_shape[0] // self.factor * self.up, frame_shape[1] // self.factor * self.up
        side = max(MIN_WINDOW, int(min(h, w) * min_face))
        self.min_size = (side, side)
        self.max_size = (max(side, min(h, w)), max(side, min(h, w)))
        self.min_neighbors = min_neighbors

    def __call__(self, frame):
        gray = downscale_gray(frame, self.factor)
        if self.up > 1:
            from skimage.transform import rescale
            gray = rescale(gray, self.up, order=1)
        found = self.cascade.detect_multi_scale(gray, scale_factor=SCALE_FACTOR,
                                                step_ratio=STEP_RATIO, min_size=self.min_size,
                                                max_size=self.max_size, min_neighbor_number=self.min_neighbors)
        boxes = [(d['c'], d['r'], d['c'] + d['width'], d['r'] + d['height']) for d in found]
        return merge_overlapping(boxes) * self.factor / self.up


def downscale_rgb(frame, factor):
    """uint8 (H, W, 3) -> uint8 (H // factor, W // factor, 3), box-averaged (the frame itself for 1)."""
    if factor == 1:
        return frame[..., :3]
    h, w = frame.shape[0] // factor, frame.shape[1] // factor
    blocks = frame[:h * factor, :w * factor, :3].reshape(h, factor, w, factor, 3).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def dlib_upsampling(kind, smallest_face):
    """dlib's doublings (0 .. DLIB_MAX_UPSAMPLE[kind]) that bring a face of `smallest_face` pixels to
    DLIB_FACE."""
    return int(np.clip(np.ceil(np.log2(DLIB_FACE / max(1.0, smallest_face))), 0, DLIB_MAX_UPSAMPLE[kind]))


class DlibFaceDetector:
    """dlib's HOG ('hog') or CNN ('cnn') face detector (toolkit.dlib_faces) with FaceDetector's
    sizing: the frame is box-averaged down by the integer factor that brings its width closest to
    detect_width (never up), then dlib doubles it as often as it takes for a face of min_face of the
    shorter side to reach DLIB_FACE pixels (at most DLIB_MAX_UPSAMPLE[kind] times); detections
    scoring below min_score are dropped. uint8 (H, W, 3) -> (N, 4) float boxes (x1, y1, x2, y2) in
    full-frame pixels, largest first.

    The model is loaded here: a missing dlib or model file raises InputError before any frame."""

    def __init__(self, kind, frame_shape, detect_width=320, min_face=0.125, min_score=0.0):
        from toolkit import dlib_faces
        check_detector(kind)
        self.kind = kind
        self.detect = dlib_faces.detect
        self.factor = detection_factor(frame_shape[1], detect_width)
        self.upsample = dlib_upsampling(kind, min(frame_shape[:2]) // self.factor * min_face)
        self.min_score = min_score

    def __call__(self, frame):
        small = downscale_rgb(frame, self.factor)
        return self.detect(small, self.kind, self.upsample, self.min_score) * self.factor


def check_detector(name):
    """Raises InputError for a name not in DETECTORS, or when dlib or its model is missing for hog /
    cnn (their model is loaded, once): what face_detector would raise, before any frame is read."""
    if name not in DETECTORS:
        raise InputError(f'face detector must be one of {", ".join(DETECTORS)}, got {name!r}')
    if name != 'lbp':
        from toolkit import dlib_faces
        try:
            dlib_faces.load_detector(name)
        except InputError as e:
            raise InputError(f'face detector {name!r}: {e}; the lbp detector needs neither') from e


def face_detector(name, frame_shape, detect_width=320, min_face=0.125, min_neighbors=MIN_NEIGHBORS, min_score=0.0):
    """The face detector `name` (one of DETECTORS) for frames of frame_shape (H, W, ...): a callable
    uint8 (H, W, 3) -> (N, 4) float boxes (x1, y1, x2, y2) in the frame's pixels.

    lbp: scikit-image's LBP cascade (FaceDetector; min_neighbors: the overlapping hits a face needs);
    hog, cnn: dlib's detectors (DlibFaceDetector, which needs dlib and face-recognition-models; the
    CNN is about 50 times slower than HOG; min_score: the least detection score kept, 0 being
    dlib's rule). All search faces from min_face of the shorter side up, on the frame scaled by an
    integer factor to about detect_width pixels wide. Raises InputError for an unknown name, or when
    dlib is missing for hog / cnn."""
    check_detector(name)
    if name == 'lbp':
        return FaceDetector(frame_shape, detect_width, min_face, min_neighbors)
    return DlibFaceDetector(name, frame_shape, detect_width, min_face, min_score)
