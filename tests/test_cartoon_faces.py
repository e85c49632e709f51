"""cartoon_faces.py: the procedural dataset's layout, determinism and ground truth."""
import csv
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from toolkit import cartoon as cf
from toolkit.datasets import FramesDataset, PairedDataset
from tests.conftest import REPO


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('cartoon')
    cf.generate(root, videos=5, frames=6, size=48, seed=3, test_videos=2, progress=False)
    return root


def test_layout_is_a_frames_dataset_with_annotations(dataset):
    train = sorted(p.name for p in (dataset / 'train').iterdir())
    test = sorted(p.name for p in (dataset / 'test').iterdir())
    assert train == ['face00000', 'face00001', 'face00002'] and test == ['face00003', 'face00004']
    frames = sorted((dataset / 'train' / 'face00001').iterdir())
    assert len(frames) == 6 and iio.imread(frames[0]).shape == (48, 48, 3)
    for split, names in (('train', train), ('test', test)):
        for name in names:
            landmarks, masks = cf.load_annotations(dataset, split, name)
            assert landmarks.shape == (6, len(cf.LANDMARKS), 2) and landmarks.dtype == np.float32
            assert masks.shape == (6, 48, 48) and masks.dtype == np.uint8 and masks.max() < len(cf.PARTS)
    meta = json.loads((dataset / 'dataset.json').read_text())
    assert meta['parts'] == list(cf.PARTS) and meta['landmarks'] == list(cf.LANDMARKS) and meta['seed'] == 3
    with open(dataset / 'pairs.csv') as f:
        rows = list(csv.DictReader(f))
    assert rows == [{'source': 'face00004', 'driving': 'face00003'}, {'source': 'face00003', 'driving': 'face00004'}]

    train_set = FramesDataset(dataset, frame_shape=(48, 48, 3), is_train=True)
    item = train_set[0]
    assert item['source'].shape == (3, 48, 48) and item['driving'].dtype == np.float32
    test_set = FramesDataset(dataset, frame_shape=(48, 48, 3), is_train=False, pairs_list=dataset / 'pairs.csv')
    assert test_set[1]['video'].shape == (3, 6, 48, 48)
    assert len(PairedDataset(test_set, number_of_pairs=10)) == 2


def test_same_seed_same_video_independent_of_dataset_size(dataset, tmp_path):
    cf.generate(tmp_path, videos=2, frames=6, size=48, seed=3, test_videos=1, progress=False)
    for t in (0, 5):
        ours = iio.imread(tmp_path / 'train' / 'face00000' / f'{t:07d}.png')
        assert np.array_equal(ours, iio.imread(dataset / 'train' / 'face00000' / f'{t:07d}.png'))
    other_seed, _, _ = cf.make_video(4, 0, 2, 48)
    assert np.abs(other_seed[0].astype(int) - ours.astype(int)).mean() > 10  # another identity


def test_identities_differ_and_heads_move():
    a, labels, points = cf.make_video(0, 0, 40, 64)
    b, _, _ = cf.make_video(0, 1, 40, 64)
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 10
    # the head moves: landmark paths span several pixels and frames change where the face is
    assert np.ptp(points[:, :, 0], axis=0).mean() > 2 and np.ptp(points[:, :, 1], axis=0).mean() > 2
    assert np.abs(a[1:].astype(int) - a[:1]).mean(axis=(1, 2, 3)).max() > 3
    # the mouth opens and closes: its area changes over the video
    mouth_area = (labels == cf.LABEL['mouth']).sum(axis=(1, 2))
    assert mouth_area.max() > 1.5 * mouth_area.min()


@pytest.mark.parametrize('index', [0, 1, 2, 3])
def test_landmarks_lie_on_their_parts(index):
    images, labels, points = cf.make_video(5, index, 30, 96)
    T = len(images)

    def label_at(t, k):
        x, y = np.rint(points[t, k]).astype(int)
        return labels[t, y, x]

    def near(t, k, part, radius=1):
        x, y = np.rint(points[t, k]).astype(int)
        return (labels[t, y - radius:y + radius + 1, x - radius:x + radius + 1] == cf.LABEL[part]).any()

    landmark = {name: k for k, name in enumerate(cf.LANDMARKS)}
    eyes = [label_at(t, landmark[name]) == cf.LABEL['eyes'] for t in range(T) for name in ('left_eye', 'right_eye')]
    assert np.mean(eyes) > 0.85  # blinks close the eyes to a line for a few frames
    assert all(label_at(t, landmark['nose_tip']) == cf.LABEL['nose'] for t in range(T))
    for name in ('mouth_left', 'mouth_right', 'upper_lip', 'lower_lip'):
        assert all(near(t, landmark[name], 'mouth') for t in range(T)), name
    assert all(near(t, landmark['chin'], 'face') for t in range(T))
    # left is the image's left
    assert (points[:, landmark['left_eye'], 0] < points[:, landmark['right_eye'], 0]).all()
    # every part is drawn
    assert set(np.unique(labels)) == set(range(len(cf.PARTS)))


def test_mp4_format(tmp_path):
    cf.generate(tmp_path, videos=2, frames=5, size=32, seed=0, test_videos=1, fmt='mp4', progress=False)
    from toolkit.video_io import read_video_meta
    meta = read_video_meta(tmp_path / 'train' / 'face00000.mp4')
    assert meta['size'] == (32, 32) and meta['fps'] == cf.FPS
    video = FramesDataset(tmp_path, frame_shape=(32, 32, 3), is_train=False)[0]['video']
    assert video.shape == (3, 5, 32, 32)


@pytest.mark.parametrize('args,message', [
    (['--size', '33'], '--size must be even'),
    (['--videos', '2', '--test_videos', '2'], '--test_videos must be in [0, 1]'),
    (['--frames', '1'], 'need --videos >= 1, --frames >= 2'),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / 'out'
    result = subprocess.run([sys.executable, str(REPO / 'cartoon_faces.py'), '--out', str(out), *args],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0 and message in result.stderr
    assert not out.exists()


def test_train_extractor_flag_reaches_the_training_function(tmp_path):
    # the training itself is tested in test_cartoon_landmarks.py; here: the flag replaces --out and
    # the training function's checks come back as one line
    out = tmp_path / 'weights.pt'
    result = subprocess.run([sys.executable, str(REPO / 'cartoon_faces.py'), '--train_extractor', str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0 and 'must end in .pth.tar' in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    result = subprocess.run([sys.executable, str(REPO / 'cartoon_faces.py')], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and '--out (or --train_extractor)' in result.stderr
