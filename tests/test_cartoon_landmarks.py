"""The cartoon landmark and identity extractor (toolkit.cartoon_landmarks) against the cartoon
generator's ground truth, on videos of a seed the bundled weights were not trained on."""
import numpy as np
import pytest
import torch

from modules.errors import InputError
from toolkit import cartoon
from toolkit import cartoon_landmarks as cl

SEED = 1002  # neither the training seed (1000) nor the model card's measurement seed (1001)
VIDEOS, FRAMES = 6, 24


@pytest.fixture(scope='module')
def extractor():
    return cl.CartoonFaces()


@pytest.fixture(scope='module')
def videos():
    """[(uint8 (T, 64, 64, 3), float32 (T, 8, 2) ground-truth landmarks)] of VIDEOS identities."""
    return [cartoon.make_video(SEED, index, FRAMES, 64)[::2] for index in range(VIDEOS)]


def edge_shift(frames, dx, dy):
    """(N, H, W, 3) moved by integer (dx, dy) pixels; the uncovered border repeats the edge pixels."""
    n, h, w, _ = frames.shape
    out = np.empty_like(frames)
    for y in range(h):
        for x in range(w):
            out[:, y, x] = frames[:, min(max(y - dy, 0), h - 1), min(max(x - dx, 0), w - 1)]
    return out


def test_the_interface(extractor, videos):
    frames = videos[0][0][:3]
    found = extractor(frames)
    assert set(found) == {'keypoints', 'identity'}
    assert found['keypoints'].shape == (3, 8, 2) and found['keypoints'].dtype == np.float32
    assert found['identity'].shape == (3, cl.EMBEDDING) and found['identity'].dtype == np.float32
    assert np.allclose(np.linalg.norm(found['identity'], axis=1), 1, atol=1e-5)
    assert extractor.keypoint_names == cartoon.LANDMARKS and isinstance(extractor.name, str)
    assert extractor(frames[:0])['keypoints'].shape == (0, 8, 2)


def test_landmarks_are_near_the_generators(extractor, videos):
    errors = np.concatenate([np.linalg.norm(extractor(frames)['keypoints'] - truth, axis=2)
                             for frames, truth in videos])  # (frames, 8) pixels at 64x64
    assert errors.mean() < 0.6  # the bundled weights: 0.31 px on these frames
    assert errors.mean(axis=0).max() < 1.0, dict(zip(cartoon.LANDMARKS, errors.mean(axis=0)))
    assert np.percentile(errors, 95) < 1.5


def test_identity_is_closer_within_a_video_than_across_videos(extractor, videos):
    vectors = [extractor(frames)['identity'] for frames, _ in videos]

    def mean_distance(a, b):
        return np.linalg.norm(a[:, None] - b[None], axis=2).mean()

    for i, own in enumerate(vectors):
        within = np.linalg.norm(own[:, None] - own[None], axis=2).sum() / (len(own) * (len(own) - 1))
        across = min(mean_distance(own, other) for j, other in enumerate(vectors) if j != i)
        assert within < 0.5 * across, (i, within, across)  # the bundled weights: 0.16-0.20 against 1.1-1.3
    # two frames of one video, far apart in time (other pose, mouth and eyes), against other videos
    first, last = vectors[0][0], vectors[0][-1]
    assert np.linalg.norm(first - last) < min(np.linalg.norm(first - other[0]) for other in vectors[1:])


@pytest.mark.parametrize('dx,dy', [(3, -2), (-4, 4)])
def test_a_shifted_frame_moves_the_landmarks_alike(extractor, videos, dx, dy):
    frames = videos[1][0][:6]
    before = extractor(frames)['keypoints']
    after = extractor(edge_shift(frames, dx, dy))['keypoints']
    moved = (after - before).reshape(-1, 2)
    assert np.abs(moved.mean(axis=0) - [dx, dy]).max() < 0.2
    assert np.linalg.norm(moved - [dx, dy], axis=1).mean() < 0.4


def test_blank_frames_have_no_face(extractor, videos):
    frames = np.concatenate([np.zeros((1, 64, 64, 3), np.uint8), np.full((1, 64, 64, 3), 200, np.uint8),
                             np.full((1, 64, 64, 3), [30, 140, 90], np.uint8), videos[2][0][:1]])
    frames[1, :, :8] = 201  # near-constant is blank too
    found = extractor(frames)
    assert np.isnan(found['keypoints'][:3]).all() and np.isnan(found['identity'][:3]).all()
    assert np.isfinite(found['keypoints'][3]).all() and np.isfinite(found['identity'][3]).all()


def test_other_frame_sizes_give_their_own_pixel_units(extractor):
    frames, _, truth = cartoon.make_video(SEED, 7, 8, 128)
    found = extractor(frames)['keypoints']
    assert np.linalg.norm(found - truth, axis=2).mean() < 1.2  # 0.6 px at 64x64; the bundled weights: 0.49


def test_a_missing_weights_file_is_one_clear_line(tmp_path, videos):
    missing = tmp_path / 'nothing.pth.tar'
    with pytest.raises(InputError) as error:
        cl.CartoonFaces(missing)(videos[0][0][:1])
    assert str(missing) in str(error.value) and '\n' not in str(error.value) and 'not found' in str(error.value)
    broken = tmp_path / 'broken.pth.tar'
    broken.write_bytes(b'not a checkpoint')
    with pytest.raises(InputError, match='not a cartoon landmark weights file'):
        cl.CartoonFaces(broken)(videos[0][0][:1])


def test_the_training_function_writes_weights_and_log_that_load(tmp_path):
    out = tmp_path / 'tiny.pth.tar'
    summary = cl.train_extractor(out, identities=3, per_identity=4, steps=2, batch=4, measure_videos=2,
                                 progress=False)
    assert str(out) in summary
    log = (tmp_path / 'tiny.log').read_text()
    assert 'step 2:' in log and 'held-out measurement (seed 1001)' in log
    saved = torch.load(out, weights_only=True)
    assert saved['landmark_names'] == list(cartoon.LANDMARKS) and saved['measured']['videos'] == 2
    found = cl.CartoonFaces(out)(cartoon.make_video(SEED, 0, 2, 64)[0])
    assert np.isfinite(found['keypoints']).all()
