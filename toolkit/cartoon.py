"""Procedural cartoon talking heads with known ground truth: a dataset generator for FOMM.

Every video is a new identity (face shape, skin, hair style and colour, eyes, mouth, clothes,
background) whose head moves as a talking person's would: smooth translation, in-plane rotation,
scale, turning (yaw) and nodding (pitch) that shift the facial features with parallax (the nose
more than the eyes, the ears the other way, so the motion is not one affine map), blinks, an
opening and closing mouth, gaze and eyebrow movement. Because we draw it, we know for every frame

* the positions of the landmarks in LANDMARKS (pixel coordinates), and
* a part-label mask with the labels in PARTS (0 = background),

which the keypoint-tracking evaluation and the part-swap segmenter use.

`python cartoon_faces.py --out data/cartoon --videos 200 --frames 64 --size 128 --seed 0` (generate)
writes the FramesDataset layout

    OUT/train/<video>/0000000.png ...      (or OUT/train/<video>.mp4 with --format mp4)
    OUT/test/<video>/...                    (--test_videos of them, other identities)
    OUT/pairs.csv                           (source,driving: test videos, each animated by another)
    OUT/annotations/<split>/<video>.npz     landmarks: float32 (T, L, 2) pixel (x, y), pixel centres
                                            at integers; masks: uint8 (T, S, S) labels of PARTS
    OUT/dataset.json                        the arguments, LANDMARKS, PARTS

Video i (train first, then test) is drawn from `np.random.default_rng([seed, i])` alone, so a
video does not depend on how many others are generated, and the same arguments give the same
files on any machine.

Drawing: every shape is an ellipse (or an ellipse cut by a curve) evaluated in the head's own
coordinates, with anti-aliased edges from a first-order signed distance, composited back to front;
a pixel's label is the label of the topmost shape that covers more than half of it.
"""
import csv
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass

import numpy as np

from modules.errors import InputError, cannot_write
from modules.fileio import atomic_path, make_folder, verify_png

log = logging.getLogger(__name__)

PARTS = ('background', 'face', 'hair', 'eyes', 'brows', 'nose', 'mouth', 'neck', 'body')
LANDMARKS = ('left_eye', 'right_eye', 'nose_tip', 'mouth_left', 'mouth_right', 'upper_lip', 'lower_lip',
             'chin')  # 'left' = the image's left
LABEL = {name: i for i, name in enumerate(PARTS)}
FPS = 25.0

SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 125], [198, 134, 90], [141, 85, 54],
                 [255, 205, 180], [190, 230, 170], [180, 200, 250]], np.float64) / 255  # two cartoon tones
HAIR = np.array([[30, 25, 20], [90, 55, 30], [160, 110, 50], [230, 200, 120], [170, 60, 30],
                 [120, 120, 130], [60, 80, 200], [200, 60, 140], [40, 140, 90]], np.float64) / 255
IRIS = np.array([[70, 110, 190], [90, 60, 30], [60, 140, 80], [120, 90, 60], [40, 40, 40]], np.float64) / 255


# ----------------------------------------------------------------------------------------------
# Identity and motion
# ----------------------------------------------------------------------------------------------

@dataclass
class Identity:
    """What stays fixed within a video. Lengths are in canvas units (the image spans [-1, 1])."""
    face_a: float; face_b: float            # face ellipse half width / half height
    skin: np.ndarray; hair: np.ndarray; iris: np.ndarray; lips: np.ndarray; shirt: np.ndarray
    bg0: np.ndarray; bg1: np.ndarray; bg_angle: float
    bg_blobs: np.ndarray                    # (n, 6): x, y, radius, r, g, b
    hair_style: int                         # 0 short, 1 long, 2 spiky
    hairline: float; hair_wave: float; hair_freq: float; hair_phase: float
    eye_x: float; eye_y: float; eye_a: float; eye_b: float; iris_r: float
    brow_gap: float; brow_tilt: float
    nose_y: float; nose_a: float; nose_b: float
    mouth_y: float; mouth_w: float
    ear_size: float; blush: float; shade: float
    center: np.ndarray                      # (2,) rest position of the head centre
    head_scale: float                       # size of the head in the frame


def random_identity(rng: np.random.Generator) -> Identity:
    def jitter(colour, amount=0.06):
        return np.clip(colour + rng.normal(0, amount, 3), 0, 1)

    bg_hue = rng.random(3)
    blobs = np.concatenate([rng.uniform(-1.1, 1.1, (7, 2)), rng.uniform(0.08, 0.35, (7, 1)),
                            np.clip(bg_hue + rng.normal(0, 0.25, (7, 3)), 0, 1)], axis=1)
    face_a = rng.uniform(0.27, 0.34)
    return Identity(
        face_a=face_a, face_b=face_a * rng.uniform(1.12, 1.32),
        skin=jitter(SKIN[rng.integers(len(SKIN))], 0.04), hair=jitter(HAIR[rng.integers(len(HAIR))]),
        iris=jitter(IRIS[rng.integers(len(IRIS))]), lips=jitter(np.array([0.75, 0.25, 0.3]), 0.08),
        shirt=rng.random(3), bg0=bg_hue, bg1=np.clip(bg_hue + rng.normal(0, 0.3, 3), 0, 1),
        bg_angle=rng.uniform(0, 2 * math.pi), bg_blobs=blobs,
        hair_style=int(rng.integers(3)), hairline=rng.uniform(0.25, 0.5),
        hair_wave=rng.uniform(0.02, 0.08), hair_freq=rng.uniform(8, 20), hair_phase=rng.uniform(0, 2 * math.pi),
        eye_x=face_a * rng.uniform(0.38, 0.48), eye_y=rng.uniform(-0.08, 0.0),
        eye_a=face_a * rng.uniform(0.2, 0.27), eye_b=face_a * rng.uniform(0.13, 0.19),
        iris_r=rng.uniform(0.5, 0.7),
        brow_gap=rng.uniform(0.035, 0.06), brow_tilt=rng.uniform(-0.25, 0.25),
        nose_y=rng.uniform(0.06, 0.11), nose_a=rng.uniform(0.025, 0.045), nose_b=rng.uniform(0.035, 0.06),
        mouth_y=rng.uniform(0.19, 0.25), mouth_w=face_a * rng.uniform(0.3, 0.45),
        ear_size=rng.uniform(0.045, 0.07), blush=float(rng.random() < 0.5) * rng.uniform(0.2, 0.45),
        shade=rng.uniform(0.05, 0.2), center=np.array([rng.uniform(-0.08, 0.08), rng.uniform(-0.12, -0.02)]),
        head_scale=rng.uniform(1.25, 1.45))


def _smooth(rng, frames, amplitude, periods=(20, 90), terms=3):
    """A smooth random signal (frames,): a sum of sinusoids with periods in frames, peak ~amplitude."""
    t = np.arange(frames)
    out = np.zeros(frames)
    for _ in range(terms):
        out += rng.uniform(0.3, 1) * np.sin(2 * math.pi * t / rng.uniform(*periods) + rng.uniform(0, 2 * math.pi))
    return amplitude * out / terms * 1.6


def random_motion(rng: np.random.Generator, frames: int) -> dict:
    """Per-frame pose of one video: {name: float64 (frames,)}. Angles in radians."""
    eyes = np.ones(frames)
    t = int(rng.integers(0, 40))
    while t < frames:  # blinks: closed for ~2 frames, with a frame of half-closed on each side
        for dt, value in zip(range(-2, 3), (0.5, 0.1, 0.0, 0.1, 0.5)):
            if 0 <= t + dt < frames:
                eyes[t + dt] = min(eyes[t + dt], value)
        t += int(rng.integers(25, 80))
    talk = np.clip(_smooth(rng, frames, 0.9, (6, 18)) + rng.uniform(-0.1, 0.3), 0, 1)
    talk *= (_smooth(rng, frames, 1.0, (40, 120), 2) > -0.3)  # pauses between sentences
    return {
        'tx': _smooth(rng, frames, 0.12), 'ty': _smooth(rng, frames, 0.08),
        'rotation': _smooth(rng, frames, 0.25), 'scale': np.exp(_smooth(rng, frames, 0.1)),
        'yaw': np.clip(_smooth(rng, frames, 0.8), -1, 1), 'pitch': np.clip(_smooth(rng, frames, 0.6), -1, 1),
        'eyes': eyes, 'mouth': talk, 'gaze_x': _smooth(rng, frames, 0.5), 'gaze_y': _smooth(rng, frames, 0.2),
        'brows': np.clip(_smooth(rng, frames, 0.6, (30, 90)), -0.5, 1),
    }


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------

def _ellipse_sdf(u, v, cx, cy, a, b, angle=0.0):
    """Approximate signed distance (inside < 0) from points (u, v) to an ellipse, first order."""
    du, dv = u - cx, v - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    qu, qv = du / a, dv / b
    f = np.sqrt(qu * qu + qv * qv)
    grad = np.sqrt((qu / a) ** 2 + (qv / b) ** 2) / np.maximum(f, 1e-9)
    return (f - 1) / np.maximum(grad, 1e-9)


class _Canvas:
    """Back-to-front compositing of an RGB image and its label map."""

    def __init__(self, image, pixel):
        self.image = image                      # (S, S, 3) float64
        self.labels = np.zeros(image.shape[:2], np.uint8)
        self.pixel = pixel                      # pixel size in the units of the distances given

    def coverage(self, sdf):
        return np.clip(0.5 - sdf / self.pixel, 0, 1)

    def paint(self, cover, colour, label=None, opacity=1.0):
        alpha = cover[..., None] * opacity
        self.image = self.image * (1 - alpha) + np.asarray(colour) * alpha
        if label is not None:
            self.labels[cover > 0.5] = LABEL[label]


def _head_pose(identity, motion, t):
    centre = identity.center + np.array([motion['tx'][t], motion['ty'][t]])
    return centre, float(motion['rotation'][t]), identity.head_scale * float(motion['scale'][t])


def _to_canvas(points, centre, rotation, scale):
    """Head coordinates (n, 2) -> canvas coordinates (n, 2)."""
    c, s = math.cos(rotation), math.sin(rotation)
    rot = np.array([[c, -s], [s, c]])
    return centre + scale * points @ rot.T


def _features(identity, motion, t):
    """Feature positions in head coordinates for frame t, with yaw/pitch parallax."""
    yaw, pitch = float(motion['yaw'][t]), float(motion['pitch'][t])
    shift = lambda depth: np.array([yaw * depth, pitch * depth * 0.7])  # noqa: E731
    return {
        'eyes': [np.array([sx * identity.eye_x, identity.eye_y]) + shift(0.06) for sx in (-1, 1)],
        'nose': np.array([0.0, identity.nose_y]) + shift(0.11),
        'mouth': np.array([0.0, identity.mouth_y]) + shift(0.07),
        'ears': [np.array([sx * (identity.face_a + 0.005), identity.eye_y + 0.03]) + shift(-0.05) * [1, 0]
                 for sx in (-1, 1)],
        'squash': 1 - 0.06 * abs(yaw),  # the face looks narrower when turned
    }


def landmarks(identity: Identity, motion: dict, t: int, size: int) -> np.ndarray:
    """float32 (L, 2) pixel coordinates (x, y) of LANDMARKS in frame t (pixel centres at integers)."""
    f = _features(identity, motion, t)
    mouth_h = _mouth_height(motion, t)
    mx, my = f['mouth']
    mw = identity.mouth_w * (1 - 0.15 * motion['mouth'][t])
    local = np.array([f['eyes'][0], f['eyes'][1], f['nose'] + [0, identity.nose_b * 0.6],
                      [mx - mw, my], [mx + mw, my], [mx, my - mouth_h], [mx, my + mouth_h],
                      [0.0, identity.face_b + 0.25 * float(motion['pitch'][t]) * 0.03]])
    canvas = _to_canvas(local, *_head_pose(identity, motion, t))
    return ((canvas + 1) * size / 2 - 0.5).astype(np.float32)


def _mouth_height(motion, t):
    return 0.012 + 0.07 * float(motion['mouth'][t])


def render(identity: Identity, motion: dict, t: int, size: int):
    """Frame t -> (uint8 (S, S, 3) RGB image, uint8 (S, S) part labels)."""
    grid = (np.arange(size) + 0.5) * 2 / size - 1
    x, y = np.meshgrid(grid, grid)
    centre, rotation, scale = _head_pose(identity, motion, t)

    # background: a linear gradient and soft blobs, static
    ramp = (math.cos(identity.bg_angle) * x + math.sin(identity.bg_angle) * y + 1.5) / 3
    image = identity.bg0 * (1 - ramp[..., None]) + identity.bg1 * ramp[..., None]
    canvas = _Canvas(image, 2 / size)
    for bx, by, br, *colour in identity.bg_blobs:
        canvas.paint(canvas.coverage(_ellipse_sdf(x, y, bx, by, br, br)), colour, opacity=0.35)

    # body: shoulders follow the head's translation in part
    body_x = identity.center[0] + 0.4 * float(motion['tx'][t])
    canvas.paint(canvas.coverage(_ellipse_sdf(x, y, body_x, 1.08 + 0.3 * float(motion["ty"][t]), 0.8, 0.4)),
                 identity.shirt, 'body')

    # head coordinates
    c, s = math.cos(rotation), math.sin(rotation)
    dx, dy = (x - centre[0]) / scale, (y - centre[1]) / scale
    u, v = c * dx + s * dy, -s * dx + c * dy
    canvas.pixel = 2 / size / scale
    f = _features(identity, motion, t)
    a, b = identity.face_a * f['squash'], identity.face_b
    skin, hair = identity.skin, identity.hair

    canvas.paint(canvas.coverage(_ellipse_sdf(u, v, 0, b * 0.85, a * 0.42, b * 0.5)), skin * 0.85, 'neck')
    if identity.hair_style == 1:  # long hair behind the head
        back = np.maximum(_ellipse_sdf(u, v, 0, 0.05, a * 1.3, b * 1.3), v - b * 0.95)
        canvas.paint(canvas.coverage(back), hair * 0.85, 'hair')
    for ear in f['ears']:
        canvas.paint(canvas.coverage(_ellipse_sdf(u, v, ear[0], ear[1], identity.ear_size * 0.7,
                                                  identity.ear_size)), skin * 0.92, 'face')
    face = canvas.coverage(_ellipse_sdf(u, v, 0, 0, a, b))
    canvas.paint(face, skin, 'face')
    # shading that turns with the head, and cheeks
    canvas.paint(face * np.clip((u / a + 0.3 * float(motion['yaw'][t])) * identity.shade, 0, 1), skin * 0.6)
    if identity.blush:
        for eye in f['eyes']:
            cheek = _ellipse_sdf(u, v, eye[0] * 1.1, identity.mouth_y - 0.05, 0.05, 0.035)
            canvas.paint(canvas.coverage(cheek), [0.95, 0.45, 0.45], opacity=identity.blush)

    # hair on top: a cap cut by a wavy (or zigzag) hairline
    wave = np.sin(identity.hair_freq * u + identity.hair_phase)
    if identity.hair_style == 2:
        wave = 2 * np.abs(((identity.hair_freq * u + identity.hair_phase) / math.pi) % 2 - 1) - 1
    hairline = -b * identity.hairline + identity.hair_wave * wave
    cap = np.maximum(_ellipse_sdf(u, v, 0, -0.02, a * 1.08, b * 1.08), v - hairline)
    canvas.paint(canvas.coverage(cap), hair, 'hair')

    # eyes: white, iris, pupil, highlight; blinking squashes the opening to a lid line
    openness = float(motion['eyes'][t])
    gaze = np.array([motion['gaze_x'][t], motion['gaze_y'][t]]) * identity.eye_a * 0.45
    for side, eye in zip((-1, 1), f['eyes']):
        ea, eb = identity.eye_a * f['squash'], identity.eye_b
        if openness > 0.05:
            white_sdf = _ellipse_sdf(u, v, eye[0], eye[1], ea, eb * openness)
            white = canvas.coverage(white_sdf)
            canvas.paint(canvas.coverage(white_sdf - 0.012), [0.15, 0.1, 0.1], 'eyes')  # outline
            canvas.paint(white, [0.97, 0.97, 0.95], 'eyes')
            iris_r = identity.iris_r * eb
            for radius, colour in ((iris_r, identity.iris), (iris_r * 0.5, [0.05, 0.05, 0.05])):
                dot = canvas.coverage(_ellipse_sdf(u, v, eye[0] + gaze[0], eye[1] + gaze[1], radius, radius))
                canvas.paint(np.minimum(dot, white), colour)
            glint = canvas.coverage(_ellipse_sdf(u, v, eye[0] + gaze[0] + iris_r * 0.3,
                                                 eye[1] + gaze[1] - iris_r * 0.3, iris_r * 0.22, iris_r * 0.22))
            canvas.paint(np.minimum(glint, white), [1, 1, 1])
        else:
            canvas.paint(canvas.coverage(_ellipse_sdf(u, v, eye[0], eye[1] + eb * 0.2, ea, 0.012)),
                         [0.15, 0.1, 0.1], 'eyes')
        brow_y = eye[1] - eb - identity.brow_gap - 0.025 * float(motion['brows'][t])
        brow = _ellipse_sdf(u, v, eye[0], brow_y, ea * 1.1, 0.016 + 0.004 * (identity.hair_style == 2),
                            angle=side * identity.brow_tilt)
        canvas.paint(canvas.coverage(brow), hair * 0.7, 'brows')

    # nose: a darker ellipse with a shadow on the side away from the turn
    nx, ny = f['nose']
    canvas.paint(canvas.coverage(_ellipse_sdf(u, v, nx + 0.01, ny + 0.01, identity.nose_a, identity.nose_b)),
                 skin * 0.7, 'nose')
    canvas.paint(canvas.coverage(_ellipse_sdf(u, v, nx, ny, identity.nose_a * 0.9, identity.nose_b)),
                 skin * 0.9, 'nose')

    # mouth: lips, a dark opening with teeth and tongue that grows as it opens
    mx, my = f['mouth']
    open_ = float(motion['mouth'][t])
    mw = identity.mouth_w * (1 - 0.15 * open_)
    mh = _mouth_height(motion, t)
    lips = canvas.coverage(_ellipse_sdf(u, v, mx, my, mw, mh + 0.012))
    canvas.paint(lips, identity.lips, 'mouth')
    inner_sdf = _ellipse_sdf(u, v, mx, my, mw * 0.85, max(mh - 0.006, 0.004))
    inner = canvas.coverage(inner_sdf)
    canvas.paint(inner, [0.25, 0.05, 0.08])
    canvas.paint(np.minimum(inner, canvas.coverage(v - (my - mh * 0.45))), [0.98, 0.98, 0.95])  # teeth
    canvas.paint(np.minimum(inner, canvas.coverage(_ellipse_sdf(u, v, mx, my + mh * 0.8, mw * 0.45, mh * 0.45))),
                 [0.85, 0.35, 0.4])  # tongue

    image = np.round(np.clip(canvas.image, 0, 1) * 255).astype(np.uint8)
    return image, canvas.labels


def make_video(seed: int, index: int, frames: int, size: int):
    """Video `index` of a dataset with `seed` -> (uint8 (T, S, S, 3), uint8 (T, S, S) labels,
    float32 (T, L, 2) landmarks)."""
    rng = np.random.default_rng([seed, index])
    identity = random_identity(rng)
    motion = random_motion(rng, frames)
    images, labels, points = [], [], []
    for t in range(frames):
        image, label = render(identity, motion, t, size)
        images.append(image)
        labels.append(label)
        points.append(landmarks(identity, motion, t, size))
    return np.stack(images), np.stack(labels), np.stack(points)


# ----------------------------------------------------------------------------------------------
# The dataset on disk
# ----------------------------------------------------------------------------------------------

def video_name(index: int) -> str:
    return f'face{index:05d}'


def _write_video(images, path, fmt):
    import imageio.v3 as iio
    if fmt == 'mp4':
        from toolkit.video_io import open_writer
        with open_writer(path + '.mp4', FPS) as writer:
            for image in images:
                writer.write(image)
        return
    tmp = path + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        for t, image in enumerate(images):
            iio.imwrite(os.path.join(tmp, f'{t:07d}.png'), image)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e, kept=None) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate(out, videos=200, frames=64, size=128, seed=0, test_videos=None, fmt='png', progress=True):
    """Write a dataset (layout in the module docstring) -> the dataset.json dict.

    test_videos: how many of `videos` go to test/ (default: a tenth, at least 1; 0 = no test split).
    """
    if videos < 1 or frames < 2 or size < 16:
        raise InputError(f'need --videos >= 1, --frames >= 2 and --size >= 16; got {videos}, {frames}, {size}')
    if size % 2:
        raise InputError(f'--size must be even (got {size}): video encoders need even sizes')
    test_videos = max(1, videos // 10) if test_videos is None else test_videos
    if not 0 <= test_videos < videos:
        raise InputError(f'--test_videos must be in [0, {videos - 1}] (at least one training video), '
                         f'got {test_videos}')
    if fmt not in ('png', 'mp4'):
        raise InputError(f"--format must be 'png' or 'mp4', got {fmt!r}")
    splits = [('train', i) for i in range(videos - test_videos)] + \
             [('test', i) for i in range(videos - test_videos, videos)]
    for split in ('train', 'test'):
        make_folder(os.path.join(out, split), f'--out {out}')
        make_folder(os.path.join(out, 'annotations', split), f'--out {out}')

    from tqdm import tqdm
    for split, index in tqdm(splits, desc='videos', unit='video', disable=not progress):
        images, labels, points = make_video(seed, index, frames, size)
        name = video_name(index)
        _write_video(images, os.path.join(out, split, name), fmt)
        with atomic_path(os.path.join(out, 'annotations', split, name + '.npz')) as tmp:
            with open(tmp, 'wb') as f:
                np.savez_compressed(f, landmarks=points, masks=labels)

    test_names = [video_name(i) for s, i in splits if s == 'test']
    with atomic_path(os.path.join(out, 'pairs.csv')) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['source', 'driving'])
            for k, name in enumerate(test_names):  # each test video drives the next identity
                if len(test_names) > 1:
                    writer.writerow([test_names[(k + 1) % len(test_names)], name])
    meta = {'generator': 'cartoon_faces.py', 'version': 1, 'videos': videos, 'test_videos': test_videos,
            'frames': frames, 'size': size, 'seed': seed, 'format': fmt, 'fps': FPS,
            'parts': list(PARTS), 'landmarks': list(LANDMARKS)}
    with atomic_path(os.path.join(out, 'dataset.json')) as tmp:
        with open(tmp, 'w') as f:
            json.dump(meta, f, indent=1)
    return meta


def write_samples(out, frames=100, size=64, seed=2026):
    """Demo inputs of two identities: OUT/source.png (frame 0 of video 1), its part labels
    OUT/source-mask.png (pixel value = PARTS index; part_swap.py --source_mask) and OUT/driving.mp4
    (video 0). Returns the paths of the source and the driving video."""
    if frames < 2 or size < 16 or size % 2:
        raise InputError(f'need --frames >= 2 and an even --size >= 16; got {frames}, {size}')
    import imageio.v3 as iio
    from toolkit.video_io import open_writer
    make_folder(out, f'--out {out}')
    driving, _, _ = make_video(seed, 0, frames, size)
    source, source_labels, _ = make_video(seed, 1, 1, size)
    source_path, driving_path = os.path.join(out, 'source.png'), os.path.join(out, 'driving.mp4')
    with atomic_path(source_path, verify=verify_png) as tmp:
        iio.imwrite(tmp, source[0], extension='.png')
    with atomic_path(os.path.join(out, 'source-mask.png'), verify=verify_png) as tmp:
        iio.imwrite(tmp, source_labels[0], extension='.png')
    with open_writer(driving_path, FPS) as writer:
        for image in driving:
            writer.write(image)
    return source_path, driving_path


def load_annotations(out, split, name):
    """-> (float32 (T, L, 2) landmarks, uint8 (T, S, S) masks) of one generated video."""
    path = os.path.join(out, 'annotations', split, name + '.npz')
    if not os.path.isfile(path):
        raise InputError(f'{path}: annotations not found; generate the dataset with cartoon_faces.py')
    with np.load(path) as data:
        return data['landmarks'], data['masks']


def cartoon_faces(out, videos=200, frames=64, size=128, seed=0, test_videos=None, fmt='png', samples=False):
    """`python cartoon_faces.py` as a function: the dataset (generate), or with `samples` the demo
    inputs (write_samples). Returns what was written, in words."""
    if samples:
        return '\n'.join(f'wrote {path}' for path in write_samples(out, frames, size, seed))
    meta = generate(out, videos, frames, size, seed, test_videos, fmt)
    return (f"wrote {meta['videos'] - meta['test_videos']} train and {meta['test_videos']} test videos "
            f"of {meta['frames']} frames at {meta['size']}x{meta['size']} to {out}")
