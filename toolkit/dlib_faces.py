"""Real-face tools on dlib, offline: face detection (dlib's HOG detector, or its CNN detector), the 68
facial landmarks (the iBUG 300-W point scheme, as face_alignment's, which the original FOMM and
pose-evaluation use) and the 128-d face identity embedding (dlib's ResNet). The models are the files
PyPI's face-recognition-models ships; nothing is downloaded. Each model is loaded once, on first use.

    boxes = detect(image)               (N, 4) float x1, y1, x2, y2, largest face first
    points = landmarks(image, box)      (68, 2) float (x, y) pixel coordinates
    vector = embedding(image, box)      (128,) float, euclidean distance < 0.6: the same person (dlib's rule)
    face = analyse(image)               the largest face's Face(box, landmarks, embedding), or None

Images are (H, W, 3) RGB, uint8 or float in [0, 1]. (dlib silently finds no face in an array that is
not C-contiguous; every image is made contiguous uint8 here.)

Licence note: the 68-point model was trained on iBUG 300-W, whose images are not licensed for
commercial use.
"""
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from modules.errors import InputError

MODEL_FILES = {
    'landmarks': 'shape_predictor_68_face_landmarks.dat',
    'identity': 'dlib_face_recognition_resnet_model_v1.dat',
    'cnn': 'mmod_human_face_detector.dat',
}
DETECTORS = ('hog', 'cnn')
INSTALL = 'pip install dlib-bin face-recognition-models (both are in requirements.txt)'


def _dlib():
    try:
        import dlib
    except ImportError as e:
        raise InputError(f'the dlib face tools need the dlib package: {INSTALL}') from e
    return dlib


def model_path(name):
    """The path of one of MODEL_FILES inside the installed face-recognition-models package, found
    without importing it (its __init__ imports pkg_resources, which current setuptools lacks)."""
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f'the dlib face tools need the face-recognition-models package: {INSTALL}')
    path = Path(next(iter(spec.submodule_search_locations))) / 'models' / MODEL_FILES[name]
    if not path.is_file():
        raise InputError(f'{path} is missing: reinstall face-recognition-models ({INSTALL})')
    return path


@functools.cache
def _detector(kind):
    if kind not in DETECTORS:
        raise InputError(f'face detector must be one of {", ".join(DETECTORS)}, got {kind!r}')
    dlib = _dlib()
    if kind == 'hog':
        return dlib.get_frontal_face_detector()
    return dlib.cnn_face_detection_model_v1(str(model_path('cnn')))


def load_detector(kind):
    """Loads the `kind` detector (one of DETECTORS) now, once: InputError if dlib, its model file or
    the name is wrong, before any work is done."""
    _detector(kind)


@functools.cache
def _shape_predictor():
    return _dlib().shape_predictor(str(model_path('landmarks')))


@functools.cache
def _identity_model():
    return _dlib().face_recognition_model_v1(str(model_path('identity')))


def as_dlib_image(image):
    """(H, W, 3) RGB uint8 or float in [0, 1] -> a C-contiguous uint8 copy dlib can read."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f'expected an (H, W, 3) RGB image, got shape {image.shape}')
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def detect(image, detector='hog', upsample=1, threshold=0.0):
    """Face boxes (N, 4) float64 x1, y1, x2, y2 (x2, y2 exclusive), largest first (the more confident
    first among equal sizes). upsample: how many times the image is doubled before detection (1
    finds faces down to about 40 pixels). threshold: the least detection score kept (HOG: its SVM
    score, CNN: its confidence; 0 is dlib's own rule)."""
    image = as_dlib_image(image)
    if detector == 'hog':
        rects, scores, _ = _detector('hog').run(image, upsample, threshold)
    else:  # the CNN detector returns scored rectangles
        found = [item for item in _detector(detector)(image, upsample) if item.confidence >= threshold]
        rects, scores = [item.rect for item in found], [item.confidence for item in found]
    boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float64).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.lexsort((-np.asarray(scores, np.float64), -areas))]


def _rectangle(box):
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return _dlib().rectangle(x1, y1, x2 - 1, y2 - 1)


def _shape(image, box):
    return _shape_predictor()(image, _rectangle(box))


def landmarks(image, box):
    """The 68 landmarks (68, 2) float64 (x, y) of the face in `box` (a detect() row)."""
    shape = _shape(as_dlib_image(image), box)
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def embedding(image, box):
    """The 128-d identity embedding (float64) of the face in `box`, from its 68 landmarks."""
    image = as_dlib_image(image)
    return np.array(_identity_model().compute_face_descriptor(image, _shape(image, box)), np.float64)


def available():
    """True when dlib and the model files are installed."""
    return importlib.util.find_spec('dlib') is not None and \
        importlib.util.find_spec('face_recognition_models') is not None


def upsampling_for(image, side=256):
    """How many doublings (at most 2) bring the image's shorter side to `side` pixels: small frames
    (64 or 128 pixels, as models' frames are) need them for dlib's detector to see the face."""
    short = min(np.shape(image)[:2])
    return int(min(2, max(0, np.ceil(np.log2(side / short)))))


def largest_face_landmarks(image):
    """The 68 landmarks of the largest face of `image` (detected with the upsampling its size needs),
    or None when no face is found."""
    boxes = detect(image, upsample=upsampling_for(image))
    return landmarks(image, boxes[0]) if len(boxes) else None


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2
    landmarks: np.ndarray  # (68, 2) x, y
    embedding: np.ndarray  # (128,)


def analyse(image, detector='hog', upsample=1) -> Optional[Face]:
    """The largest face of `image` with its landmarks and embedding, or None when no face is found."""
    image = as_dlib_image(image)
    boxes = detect(image, detector, upsample)
    if not len(boxes):
        return None
    box = boxes[0]
    shape = _shape(image, box)
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    vector = np.array(_identity_model().compute_face_descriptor(image, shape), np.float64)
    return Face(box, points, vector)


class FaceExtractor:
    """The evaluation's `faces` extractor (toolkit.evaluation): for every frame, the 68 landmarks and
    the identity embedding of its largest face, found by the HOG detector with the upsampling the
    frame's size needs (upsampling_for).

    extractor(frames (N, H, W, 3) uint8) -> {'keypoints': float32 (N, 68, 2) pixel (x, y),
    'identity': float32 (N, 128)}; a frame without a face has NaN rows in both."""
    name = 'faces'
    keypoint_names = tuple(f'point{i}' for i in range(68))  # iBUG 300-W order: jaw 0-16, brows, nose, eyes, mouth

    def __init__(self, detector='hog'):
        _detector(detector)  # fails now, with one line, when dlib or a model is missing
        _shape_predictor()
        _identity_model()
        self.detector = detector

    def __call__(self, frames):
        frames = np.asarray(frames)
        keypoints = np.full((len(frames), 68, 2), np.nan, np.float32)
        identity = np.full((len(frames), 128), np.nan, np.float32)
        for i, frame in enumerate(frames):
            face = analyse(frame, self.detector, upsampling_for(frame))
            if face is not None:
                keypoints[i], identity[i] = face.landmarks, face.embedding
        return {'keypoints': keypoints, 'identity': identity}
