"""FramesDataset, DatasetRepeater and PairedDataset on videos generated in the test (every layout)."""

import logging
import os

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from toolkit import datasets as frames_dataset
from toolkit.datasets import DatasetRepeater, FramesDataset, PairedDataset, read_video, split_videos
from modules.errors import ConfigError, InputError
from tests.video_utils import frame_index, square_frames, write_folder, write_gif, write_strip, write_video

SHAPE = (64, 64, 3)
T = 12


def make_video(folder, name, frames=None):
    """Write one video called `name` in `folder` in the layout its name implies (no extension = frame folder)."""
    frames = square_frames(T) if frames is None else frames
    path = os.path.join(folder, name)
    ext = os.path.splitext(name)[1].lower()
    if ext in ('.mp4', '.mov', '.mkv', '.avi', '.webm'):
        return write_video(path, frames)
    if ext == '.gif':
        return write_gif(path, frames)
    if ext in ('.png', '.jpg'):
        return write_strip(path, frames)
    return write_folder(path, frames, ext='.jpg' if name.endswith('_jpg') else '.png')


def split_dirs(root):
    for split in ('train', 'test'):
        os.makedirs(os.path.join(root, split), exist_ok=True)
    return os.path.join(root, 'train'), os.path.join(root, 'test')


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == 'toolkit.datasets' and r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------------------------
# Layouts, items
# ----------------------------------------------------------------------------------------------

LAYOUT_NAMES = ['v.mp4', 'v.mov', 'v.mkv', 'v.avi', 'v.webm', 'v.gif', 'v.png', 'v.jpg', 'frames_png', 'frames_jpg']


@pytest.mark.parametrize('name', LAYOUT_NAMES)
def test_layout_train_and_test_items(tmp_path, name):
    train, test = split_dirs(tmp_path)
    make_video(train, name)
    make_video(test, name)

    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True)
    assert len(dataset) == 1 and dataset.videos == [name]
    torch.manual_seed(0)
    for _ in range(3):
        item = dataset[0]
        assert set(item) == {'source', 'driving', 'name'} and item['name'] == name
        for key in ('source', 'driving'):
            assert item[key].shape == (3, 64, 64) and item[key].dtype == np.float32
            assert 0 <= item[key].min() and item[key].max() <= 1
        source, driving = frame_index(item['source']), frame_index(item['driving'])
        assert 0 <= source <= driving < T  # sorted draw: the source is the earlier frame

    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=False)
    item = dataset[0]
    assert set(item) == {'video', 'name'} and item['name'] == name
    video = item['video']
    assert video.shape == (3, T, 64, 64) and video.dtype == np.float32
    assert 0 <= video.min() and video.max() <= 1
    assert [frame_index(video[:, t]) for t in range(T)] == list(range(T))
    original = square_frames(T).transpose(3, 0, 1, 2) / 255.0
    tolerance = 0.0 if name in ('v.png', 'frames_png', 'v.gif') else 0.2  # lossless vs lossy codecs
    assert np.abs(video - original).mean() <= tolerance / 4 + 1e-6


@pytest.mark.parametrize('name', ['v.mp4', 'v.mkv', 'v.avi', 'v.webm'])
def test_seeking_is_frame_exact(tmp_path, name):
    path = make_video(tmp_path, name, square_frames(40))
    video = frames_dataset._VideoFile(path)
    assert video.num_frames() == 40
    indices = [0, 1, 13, 26, 38, 39]
    assert [frame_index(f) for f in video.read(indices)] == indices


def test_reading_two_frames_does_not_decode_the_video(tmp_path, monkeypatch):
    """Counts the frames ffmpeg hands over: a whole-video decode would pass all 250 of them."""
    train, test = split_dirs(tmp_path)
    write_video(os.path.join(train, 'long.mp4'), square_frames(250))
    make_video(test, 'v.png')
    calls = []
    real_read_frames = imageio_ffmpeg.read_frames

    def counting_read_frames(path, *args, **kwargs):
        call = {'input_params': kwargs.get('input_params'), 'output_params': kwargs.get('output_params'),
                'frames': 0}
        calls.append(call)
        reader = real_read_frames(path, *args, **kwargs)
        yield next(reader)  # the metadata
        for frame in reader:
            call['frames'] += 1
            yield frame

    monkeypatch.setattr(imageio_ffmpeg, 'read_frames', counting_read_frames)
    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True)
    torch.manual_seed(3)
    for _ in range(4):
        calls.clear()
        item = dataset[0]
        assert sum(c['frames'] for c in calls) <= 2, calls
        assert all(c['output_params'] == ['-frames:v', '1'] for c in calls)
        source, driving = frame_index(item['source']), frame_index(item['driving'])
        assert source <= driving < 250
        if driving > 0:  # a later frame is reached by seeking, not by decoding up to it
            assert any(c['input_params'] and c['input_params'][0] == '-ss' for c in calls)

    calls.clear()
    assert read_video(os.path.join(train, 'long.mp4'), SHAPE).shape == (250, 64, 64, 3)
    assert sum(c['frames'] for c in calls) == 250  # the counter does see a full decode


def test_frame_count_overestimate_is_clamped(tmp_path):
    path = write_video(tmp_path / 'v.mp4', square_frames(30))
    cache = {path: (25.0, 40)}  # as if fps * duration had overshot by 10 frames
    video = frames_dataset._VideoFile(path, cache)
    assert [frame_index(f) for f in video.read([5, 39])] == [5, 29]
    assert cache[path] == (25.0, 30)


def test_grayscale_rgba_and_16_bit_frames_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    gray8 = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (3, 64, 64), dtype=np.uint16)
    train, test = split_dirs(tmp_path)
    for folder, frames in (('gray8', gray8), ('gray16', gray16)):
        write_folder(os.path.join(test, folder), frames)
    os.makedirs(os.path.join(test, 'rgba'))
    for t in range(3):
        alpha = rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)
        Image.fromarray(np.concatenate([rgb[t], alpha], axis=2)).save(os.path.join(test, 'rgba', f'{t}.png'))
    iio.imwrite(os.path.join(test, 'gray_strip.png'), np.concatenate(list(gray8), axis=1))  # 3 frames

    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=False)
    items = {dataset.videos[i]: dataset[i]['video'] for i in range(len(dataset))}
    for name in ('gray8', 'gray_strip.png'):
        np.testing.assert_allclose(items[name], np.broadcast_to(gray8[None] / 255.0, (3, 3, 64, 64)), atol=1e-6)
    np.testing.assert_allclose(items['gray16'], np.broadcast_to(gray16[None] / 65535.0, (3, 3, 64, 64)), atol=1e-6)
    np.testing.assert_allclose(items['rgba'], rgb.transpose(3, 0, 1, 2) / 255.0, atol=1e-6)  # alpha dropped


def test_other_frame_size_is_resized_with_one_warning(tmp_path, caplog):
    train, test = split_dirs(tmp_path)
    for name in ('a', 'b'):
        write_folder(os.path.join(test, name), square_frames(3, 48, 64))
        write_folder(os.path.join(train, name), square_frames(3, 48, 64))
    caplog.set_level(logging.WARNING, logger='toolkit.datasets')
    for is_train in (False, True):
        caplog.clear()
        dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=is_train)
        for i in (0, 1, 0, 1):
            item = dataset[i]
            assert (item['video'] if not is_train else item['source']).shape[-2:] == (64, 64)
        messages = warnings_of(caplog)
        assert len(messages) == 1, messages
        assert 'frames are 48x64 (HxW), not 64x64 as dataset_params.frame_shape; resizing them' in messages[0]


# ----------------------------------------------------------------------------------------------
# id_sampling, split, randomness
# ----------------------------------------------------------------------------------------------

def test_id_sampling_flat_names(tmp_path):
    train, test = split_dirs(tmp_path)
    names = ['id1#a.png', 'id1#b.png', 'id10#a.png', 'id2#a.png']
    for k, name in enumerate(names):
        write_strip(os.path.join(train, name), square_frames(3 + k))
    make_video(test, 't.png')
    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True, id_sampling=True)
    assert dataset.videos == ['id1', 'id10', 'id2'] and len(dataset) == 3
    torch.manual_seed(0)
    seen = {dataset[0]['name'] for _ in range(30)}
    assert seen == {'id1#a.png', 'id1#b.png'}  # 'id10#a.png' is another identity
    assert dataset[1]['name'] == 'id10#a.png'
    # test mode ignores id_sampling: one item per video
    assert FramesDataset(tmp_path, frame_shape=SHAPE, is_train=False, id_sampling=True).videos == ['t.png']


def test_id_sampling_identity_folders(tmp_path):
    train, _ = split_dirs(tmp_path)
    for clip in ('id1/vidA/c1.gif', 'id1/vidA/c2.gif', 'id1/vidB/c3.gif', 'id2/vidC/c4.gif'):
        os.makedirs(os.path.dirname(os.path.join(train, clip)), exist_ok=True)
        write_gif(os.path.join(train, clip), square_frames(3))
    write_folder(os.path.join(train, 'id2', 'frames'), square_frames(3))  # a clip given as a frame folder
    write_folder(os.path.join(train, 'id3#frames'), square_frames(3))  # a frame folder, not an identity
    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True, id_sampling=True)
    assert dataset.videos == ['id1', 'id2', 'id3'] and len(dataset) == 3
    torch.manual_seed(0)
    names = [dataset[0]['name'] for _ in range(60)]
    assert set(names) == {'c1.gif', 'c2.gif', 'c3.gif'}
    assert 15 <= names.count('c3.gif') <= 45  # a video folder first (1/2 each), then a clip in it
    assert {dataset[1]['name'] for _ in range(20)} == {'c4.gif', 'frames'}
    assert dataset[2]['name'] == 'id3#frames'


def test_random_split_without_train_test_folders(tmp_path):
    names = [f'v{k}.png' for k in range(10)]
    for name in names:
        write_strip(tmp_path / name, square_frames(2))
    state = np.random.get_state()
    train = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True, random_seed=0)
    test = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=False, random_seed=0)
    # sklearn's train_test_split(names, random_state=0, test_size=0.2): RandomState(0).permutation(10)
    # is [2 8 4 9 1 6 7 3 0 5]; the first ceil(0.2 * 10) = 2 go to test, in that order
    assert test.videos == ['v2.png', 'v8.png']
    assert train.videos == ['v4.png', 'v9.png', 'v1.png', 'v6.png', 'v7.png', 'v3.png', 'v0.png', 'v5.png']
    assert train.root_dir == test.root_dir == str(tmp_path)
    assert split_videos(names, 1) != split_videos(names, 0)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global numpy RNG is untouched
    assert split_videos(['a', 'b', 'c', 'd', 'e'], 0)[1] == ['c']  # ceil(0.2 * 5) = 1


def test_items_follow_torch_seed_and_differ_between_workers(tmp_path):
    train, _ = split_dirs(tmp_path)
    write_strip(os.path.join(train, 'v.png'), square_frames(40))
    dataset = DatasetRepeater(FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True), 8)

    def draws(num_workers):
        torch.manual_seed(7)
        loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
        return [(frame_index(b['source'][0].numpy()), frame_index(b['driving'][0].numpy())) for b in loader]

    in_process = draws(0)
    assert in_process == draws(0)
    assert len(set(in_process)) > 1
    with_workers = draws(2)
    assert with_workers == draws(2)
    assert with_workers[0::2] != with_workers[1::2]  # worker 0 takes even items, worker 1 odd ones


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def test_missing_or_empty_root(tmp_path):
    missing = tmp_path / 'nope'
    with pytest.raises(InputError) as e:
        FramesDataset(missing)
    assert str(e.value) == f'{missing}: dataset folder not found; check dataset_params.root_dir'
    (tmp_path / 'file').write_text('x')
    with pytest.raises(InputError) as e:
        FramesDataset(tmp_path / 'file')
    assert str(e.value) == f'{tmp_path / "file"}: is not a folder; check dataset_params.root_dir'
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('x')
    with pytest.raises(InputError) as e:
        FramesDataset(tmp_path / 'empty')
    assert str(e.value) == (f'{tmp_path / "empty"}: no videos found; each video must be a folder of frames, '
                            f'a .png/.jpg strip of frames side by side, a .mp4/.mov/.avi/.mkv/.webm video or a .gif')


def test_train_folder_without_test_folder(tmp_path):
    (tmp_path / 'train').mkdir()
    make_video(str(tmp_path / 'train'), 'v.png')
    assert len(FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True)) == 1
    with pytest.raises(InputError) as e:
        FramesDataset(tmp_path, frame_shape=SHAPE, is_train=False)
    assert str(e.value) == (f'{tmp_path / "test"}: folder not found; a dataset with train/ or test/ needs '
                            f'both (or neither, for a random 80/20 split)')


def test_random_split_of_one_video(tmp_path):
    make_video(str(tmp_path), 'v.png')
    with pytest.raises(InputError) as e:
        FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True)
    assert str(e.value) == (f'{tmp_path}: the random 80/20 train/test split needs at least 2 videos, found 1; '
                            f'add videos or make train/ and test/ subfolders')


def test_bad_frame_shape(tmp_path):
    with pytest.raises(ConfigError) as e:
        FramesDataset(tmp_path, frame_shape=(64, 64, 1))
    assert str(e.value) == 'dataset_params.frame_shape: expected [height, width, 3], got [64, 64, 1]'


def write_bad_videos(folder):
    (folder / 'broken.mp4').write_bytes(os.urandom(3000))
    write_video(folder / 'single.mp4', square_frames(1))
    write_strip(folder / 'narrow.png', square_frames(3, 64, 64)[:, :, :40])  # 120 wide: not a multiple of 64
    (folder / 'empty_folder').mkdir()


def test_one_bad_video_among_many_is_skipped(tmp_path, caplog):
    train, test = (tmp_path / 'train', tmp_path / 'test')
    for folder in (train, test):
        folder.mkdir()
        write_bad_videos(folder)
        make_video(str(folder), 'good.png')
    caplog.set_level(logging.WARNING, logger='toolkit.datasets')
    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=False)
    assert dataset.videos == ['good.png']
    messages = sorted(warnings_of(caplog))
    assert len(messages) == 4 and all('\n' not in m for m in messages)
    assert messages[0].startswith(f'{test / "broken.mp4"}: skipped: ffmpeg cannot read it: ')
    assert messages[1] == f'{test / "empty_folder"}: skipped: has 0 frames, need at least 2'
    assert messages[2] == (f'{test / "narrow.png"}: skipped: strip width 120 is not a multiple of the frame '
                           f'width 64 (dataset_params.frame_shape)')
    assert messages[3] == f'{test / "single.mp4"}: skipped: has 1 frame, need at least 2'

    caplog.clear()
    dataset = FramesDataset(tmp_path, frame_shape=SHAPE, is_train=True)
    assert len(dataset) == 5
    torch.manual_seed(0)
    names = [dataset[i % 5]['name'] for i in range(20)]  # the bad items give the good video instead
    assert set(names) == {'good.png'}
    messages = warnings_of(caplog)
    assert len(messages) == 4 and len(set(messages)) == 4  # each bad video is reported once


def test_all_videos_bad(tmp_path):
    train, test = (tmp_path / 'train', tmp_path / 'test')
    for folder in (train, test):
        folder.mkdir()
        write_bad_videos(folder)
    for is_train, folder in ((False, test), (True, train)):
        with pytest.raises(InputError) as e:
            FramesDataset(tmp_path, frame_shape=SHAPE, is_train=is_train)
        assert str(e.value) == (f'{folder}: none of the 4 videos has a usable video (unreadable or shorter '
                                f'than 2 frames, see the warnings above)')


def test_read_video_errors(tmp_path):
    with pytest.raises(InputError) as e:
        read_video(tmp_path / 'x.mp4')
    assert str(e.value) == f'{tmp_path / "x.mp4"}: video not found; check the path'
    (tmp_path / 'broken.mp4').write_bytes(os.urandom(3000))
    with pytest.raises(InputError) as e:
        read_video(tmp_path / 'broken.mp4')
    assert str(e.value).startswith(f'{tmp_path / "broken.mp4"}: ffmpeg cannot decode it: ')
    assert '\n' not in str(e.value)


# ----------------------------------------------------------------------------------------------
# DatasetRepeater, PairedDataset
# ----------------------------------------------------------------------------------------------

def test_dataset_repeater():
    base = list('abc')
    repeated = DatasetRepeater(base, 4)
    assert len(repeated) == 12
    assert [repeated[i] for i in range(12)] == base * 4
    with pytest.raises(IndexError):
        repeated[12]
    with pytest.raises(ConfigError) as e:
        DatasetRepeater(base, 0)
    assert str(e.value) == 'train_params.num_repeats: must be an integer >= 1, got 0'


@pytest.fixture
def test_set(tmp_path):
    """A test-mode dataset of 4 strips of different lengths (so items are recognisable)."""
    train, test = split_dirs(tmp_path)
    for k, name in enumerate(['a.png', 'b.png', 'c.png', 'd.png']):
        write_strip(os.path.join(test, name), square_frames(2 + k))
    return tmp_path


def test_paired_dataset_pairs_list(test_set, tmp_path, caplog):
    csv_path = tmp_path / 'pairs.csv'
    csv_path.write_text('distance,source,driving,frame\n'
                        '1.0,a.png,b.png,0\n'
                        '2.0,zz.png,a.png,0\n'
                        '3.0,c.png,d.png,0\n'
                        '4.0,d.png,a.png,0\n')
    caplog.set_level(logging.WARNING, logger='toolkit.datasets')
    dataset = FramesDataset(test_set, frame_shape=SHAPE, is_train=False, pairs_list=str(csv_path))
    pairs = PairedDataset(dataset, number_of_pairs=2)
    assert warnings_of(caplog) == [f'{csv_path}: 1 of 4 pairs skipped: they name videos that are not in '
                                   f'{test_set / "test"} (first: zz.png)']
    assert len(pairs) == 2  # the first 2 remaining rows, in file order
    item = pairs[0]
    assert set(item) == {'driving_video', 'driving_name', 'source_video', 'source_name'}
    assert (item['driving_name'], item['source_name']) == ('b.png', 'a.png')  # CSV driving -> driving_*
    assert item['driving_video'].shape == (3, 3, 64, 64) and item['source_video'].shape == (3, 2, 64, 64)
    assert (pairs[1]['driving_name'], pairs[1]['source_name']) == ('d.png', 'c.png')
    assert len(PairedDataset(dataset, number_of_pairs=50)) == 3


def test_paired_dataset_bad_pairs_list(test_set, tmp_path):
    def paired(text):
        path = tmp_path / 'pairs.csv'
        path.write_text(text)
        return PairedDataset(FramesDataset(test_set, frame_shape=SHAPE, is_train=False, pairs_list=str(path)), 5)

    with pytest.raises(InputError) as e:
        paired('source,driving\nx.png,a.png\nb.png,y.png\n')
    assert str(e.value) == (f'{tmp_path / "pairs.csv"}: none of its 2 pairs names two videos of '
                            f'{test_set / "test"}; check the names or dataset_params.root_dir')
    with pytest.raises(InputError) as e:
        paired('src,driving\na.png,b.png\n')
    assert str(e.value) == (f"{tmp_path / 'pairs.csv'}: needs a header with 'source' and 'driving' columns; "
                            f"'source' is missing (header: src,driving)")
    missing = tmp_path / 'missing.csv'
    with pytest.raises(InputError) as e:
        PairedDataset(FramesDataset(test_set, frame_shape=SHAPE, is_train=False, pairs_list=str(missing)), 5)
    assert str(e.value) == f'{missing}: pairs list not found; check dataset_params.pairs_list'


def test_paired_dataset_random_pairs_as_the_original(test_set):
    dataset = FramesDataset(test_set, frame_shape=SHAPE, is_train=False)
    state = np.random.get_state()
    pairs = PairedDataset(dataset, number_of_pairs=3, seed=5).pairs
    assert np.array_equal(np.random.get_state()[1], state[1])  # global numpy RNG untouched
    assert pairs == PairedDataset(dataset, number_of_pairs=3, seed=5).pairs
    # The original: np.random.seed(seed), then choose among the m x m grid of the first m videos.
    np.random.seed(5)
    grid = np.mgrid[:3, :3].reshape(2, -1).T
    expected = grid.take(np.random.choice(grid.shape[0], 3, replace=False), axis=0)
    np.random.set_state(state)
    assert [tuple(p) for p in expected.tolist()] == [tuple(p) for p in pairs]
    item = PairedDataset(dataset, number_of_pairs=3, seed=5)[0]
    assert item['driving_name'] == dataset.videos[pairs[0][0]]
    assert item['source_name'] == dataset.videos[pairs[0][1]]
    assert len(PairedDataset(dataset, number_of_pairs=100)) == 16  # all 4 x 4 pairs at most
