"""Video datasets of the First Order Motion Model: `FramesDataset`, `DatasetRepeater`, `PairedDataset`.

A dataset folder holds videos, either in `train/` and `test/` subfolders or directly (then split 80/20
at random, see `split_videos`). Each video is one of these layouts (names are matched case-blind):

    frame folder   a folder of image files (.png .jpg .jpeg .bmp .tif .tiff .webp), in sorted name order
    strip          one .png/.jpg/.jpeg image of T frames side by side (width T * frame_shape[1])
    video file     .mp4 .mov .avi .mkv .webm, decoded with the ffmpeg that imageio-ffmpeg bundles
    gif            .gif, decoded with Pillow

Frames come out as float32 RGB in [0, 1]: 8-bit images are divided by 255 and 16-bit ones by 65535,
grayscale is repeated to 3 channels, an alpha channel is dropped (as the original: not composited),
palette/CMYK/YCbCr images are converted by Pillow. Frames of another size than frame_shape are
resized to it with toolkit.resize.resize_frame (bilinear, anti-aliased), with one warning per
dataset object (so at most one per DataLoader worker).

Decoding is lazy: a training item reads only its two frames. A video file is probed once for its fps
and duration (ffmpeg's header, no decoding), the frame count is estimated as round(fps * duration),
and each frame is fetched by a separate ffmpeg run that seeks to its timestamp (`-ss` before `-i`,
which ffmpeg makes frame-accurate) and stops after one frame (`-frames:v 1`). Indices map to
timestamps as index / fps, exact for constant-frame-rate files. When the estimate overshoots the real
end, the last frame is used instead and the count is corrected. A frame folder reads only the two
files; a strip is one image and is read whole; a gif is decoded up to the frame needed (gif frames
build on the previous ones).

Randomness: every item draws its own `numpy.random.Generator` seeded from torch's global RNG
(`toolkit.augmentation.torch_seeded_rng`), so DataLoader workers differ and runs repeat under
`torch.manual_seed`. The global numpy RNG is neither used nor reseeded.

Bad input is reported as one line (`InputError` / `ConfigError`, see modules/errors.py). A single
unusable video (undecodable, or shorter than 2 frames) is logged as a warning naming the file and
skipped: in test mode all videos are probed (metadata only) when the dataset is built; in train mode
the first usable video is looked for when the dataset is built and the others are checked when an
item needs them, another item being drawn in their place.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from toolkit.augmentation import AllAugmentationTransform, torch_seeded_rng
from modules.errors import ConfigError, InputError, LimitError
from modules.limits import check_frame_pixels, open_image
from toolkit.resize import resize_frame
from toolkit.video_io import count_video_frames, decode_frames, read_video_meta

log = logging.getLogger(__name__)

__all__ = ['FramesDataset', 'DatasetRepeater', 'PairedDataset', 'read_video', 'read_image', 'split_videos',
           'VIDEO_EXTENSIONS', 'GIF_EXTENSIONS', 'STRIP_EXTENSIONS', 'FRAME_EXTENSIONS']

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.avi', '.mkv', '.webm')
GIF_EXTENSIONS = ('.gif',)
STRIP_EXTENSIONS = ('.png', '.jpg', '.jpeg')
FRAME_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
LAYOUTS = ('a folder of frames, a .png/.jpg strip of frames side by side, a .mp4/.mov/.avi/.mkv/.webm '
           'video or a .gif')
TEST_SIZE = 0.2  # fraction of the videos held out by the random split, as the original


class _BadVideo(Exception):
    """This one video cannot be used; the message says why (one line, without the path)."""


def _one_line(error: BaseException, limit: int = 160) -> str:
    """The last non-empty line of an error's text (ffmpeg's verdict comes last), shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _is_hidden(name: str) -> bool:
    return name.startswith('.')


def _has_ext(name: str, extensions: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(extensions))


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A loaded PIL image -> float32 (H, W, 3) RGB in [0, 1]."""
    mode = img.mode
    if mode.startswith('I;16') or mode == 'I':  # 16-bit grayscale (Pillow may hold it as 32-bit 'I')
        array = np.clip(np.asarray(img).astype(np.float32) / 65535.0, 0.0, 1.0)
    elif mode == 'F':
        array = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    elif mode == '1':
        array = np.asarray(img, dtype=np.float32)
    elif mode in ('L', 'LA', 'La', 'RGB', 'RGBA', 'RGBa', 'RGBX'):
        array = np.asarray(img)
        if mode in ('LA', 'La'):
            array = array[..., 0]
        elif mode != 'L':
            array = array[..., :3]  # alpha dropped, as the original
        # one float32 copy, divided in place (a large photo is several hundred MB as float32)
        array = np.divide(array, np.float32(255.0), dtype=np.float32)
    else:  # P, PA, CMYK, YCbCr, LAB, HSV, ...: let Pillow do the colour conversion
        array = np.asarray(img.convert('RGB'), dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array, dtype=np.float32)


def _load_image(path: str) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1]; raises _BadVideo when Pillow cannot read the file, LimitError
    (before decoding) when it has more pixels than modules.limits allows."""
    try:
        with open_image(path) as img:  # the size is checked on the header
            img.load()
            return _pil_to_rgb(img)
    except (OSError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise _BadVideo(f'cannot read image {os.path.basename(path)}: {_one_line(e)}') from e


def read_image(path) -> np.ndarray:
    """One image file -> float32 (H, W, 3) RGB in [0, 1] (same conversions as the dataset's frames).

    Raises InputError when the file is missing or not a readable image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f'{path}: image not found; check the path')
    try:
        return _load_image(path)
    except _BadVideo as e:
        raise InputError(f'{path}: {e}') from e


# ----------------------------------------------------------------------------------------------
# Videos, one class per layout: num_frames() is cheap, read(indices) decodes only those frames
# ----------------------------------------------------------------------------------------------

class _FrameFolder:
    """A folder of frame images, in sorted file-name order."""

    def __init__(self, path: str):
        self.path = path
        try:
            names = os.listdir(path)
        except OSError as e:
            raise _BadVideo(f'cannot list the folder: {_one_line(e)}') from e
        self.files = sorted(n for n in names if not _is_hidden(n) and _has_ext(n, FRAME_EXTENSIONS))

    def num_frames(self) -> int:
        return len(self.files)

    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        return [_load_image(os.path.join(self.path, self.files[i])) for i in indices]

    def read_all(self) -> List[np.ndarray]:
        return self.read(range(len(self.files)))


class _Strip:
    """One image holding the frames side by side, cut every `frame_width` pixels."""

    def __init__(self, path: str, frame_width: int):
        self.path = path
        self.frame_width = frame_width

    def num_frames(self) -> int:
        try:
            with open_image(self.path) as img:  # reads the header only
                width = img.size[0]
        except (OSError, ValueError) as e:
            raise _BadVideo(f'cannot read image: {_one_line(e)}') from e
        if width % self.frame_width:
            raise _BadVideo(f'strip width {width} is not a multiple of the frame width {self.frame_width} '
                            f'(dataset_params.frame_shape)')
        return width // self.frame_width

    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        strip = _load_image(self.path)
        w = self.frame_width
        if strip.shape[1] % w:
            raise _BadVideo(f'strip width {strip.shape[1]} is not a multiple of the frame width {w} '
                            f'(dataset_params.frame_shape)')
        return [np.ascontiguousarray(strip[:, i * w:(i + 1) * w]) for i in indices]

    def read_all(self) -> List[np.ndarray]:
        return self.read(range(self.num_frames()))


class _Gif:
    """An animated gif, decoded by Pillow up to the last frame asked for."""

    def __init__(self, path: str):
        self.path = path

    def num_frames(self) -> int:
        try:
            with open_image(self.path, f'each frame of {self.path}') as img:
                return int(getattr(img, 'n_frames', 1))
        except (OSError, ValueError, EOFError) as e:
            raise _BadVideo(f'cannot read gif: {_one_line(e)}') from e

    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        frames = {}
        try:
            with open_image(self.path, f'each frame of {self.path}') as img:
                for i in sorted(set(indices)):
                    img.seek(i)
                    frames[i] = _pil_to_rgb(img.convert('RGB'))
        except (OSError, ValueError, EOFError) as e:
            raise _BadVideo(f'cannot decode gif frame: {_one_line(e)}') from e
        return [frames[i] for i in indices]

    def read_all(self) -> List[np.ndarray]:
        return self.read(range(self.num_frames()))


class _VideoFile:
    """A video file read through toolkit.video_io, seeking to each frame asked for.

    meta_cache: a dict path -> (fps, frame count) shared by the dataset, so that a file is probed
    once per process and a corrected count is remembered.
    """

    def __init__(self, path: str, meta_cache: Optional[dict] = None):
        self.path = path
        self.meta_cache = {} if meta_cache is None else meta_cache

    def _decode(self, start: int = 0, count: Optional[int] = None, fps: float = 0.0) -> List[np.ndarray]:
        """Frames start, start + 1, ... (at most `count`; all to the end when None) as uint8 (H, W, 3)."""
        # A quarter frame early: robust to timestamp rounding in every container we tested
        # (mp4, mov, mkv, webm, avi); ffmpeg then drops the frames before that time.
        seek = max(0.0, (start - 0.25) / fps) if start > 0 else 0.0
        try:
            return list(decode_frames(self.path, seek, count))
        except LimitError:
            raise
        except InputError as e:
            raise _BadVideo(f'ffmpeg cannot decode it: {_one_line(e)}') from e

    def _meta(self) -> Tuple[float, int]:
        """(fps, estimated frame count) from the file's header; counted (without decoding) only if the
        header has no duration."""
        if self.path in self.meta_cache:
            return self.meta_cache[self.path]
        try:
            meta = read_video_meta(self.path)
        except LimitError:
            raise
        except InputError as e:
            raise _BadVideo(f'ffmpeg cannot read it: {_one_line(e)}') from e
        check_frame_pixels(*meta['size'], f'each frame of {self.path}')
        fps, count = meta['fps'], meta['nframes']
        if count <= 0:  # rare (no duration in the header): count the packets, once
            log.debug('%s: no duration in the header, counting its frames', self.path)
            count = count_video_frames(self.path)
            if count is None:
                raise _BadVideo('ffmpeg cannot count its frames')
        self.meta_cache[self.path] = (fps, count)
        return fps, count

    def num_frames(self) -> int:
        return self._meta()[1]

    def _frame(self, index: int) -> np.ndarray:
        fps, count = self._meta()
        index = min(index, count - 1)
        frames = self._decode(index, 1, fps)
        if frames:
            return frames[0]
        # The estimate overshot the real end: decode the tail (going back further while it is
        # empty), correct the count, and clamp to the last frame.
        start, window = index, max(2, int(math.ceil(2 * fps)))
        while not frames and start > 0:
            start = max(0, start - window)
            frames = self._decode(start, None, fps)
            window *= 2
        if not frames:
            raise _BadVideo('ffmpeg decoded no frame')
        count = start + len(frames)
        self.meta_cache[self.path] = (fps, count)
        log.debug('%s: frame count corrected to %d', self.path, count)
        return frames[min(index, count - 1) - start]

    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        frames = {i: self._frame(i).astype(np.float32) / 255.0 for i in sorted(set(indices))}
        return [frames[i] for i in indices]

    def read_all(self) -> List[np.ndarray]:
        return [frame.astype(np.float32) / 255.0 for frame in self._decode()]


def _open_video(path: str, frame_width: int, meta_cache: Optional[dict] = None):
    """The reader for `path` by its layout (None when it is no video layout)."""
    name = os.path.basename(path)
    if os.path.isdir(path):
        return _FrameFolder(path)
    if _has_ext(name, STRIP_EXTENSIONS):
        return _Strip(path, frame_width)
    if _has_ext(name, GIF_EXTENSIONS):
        return _Gif(path)
    if _has_ext(name, VIDEO_EXTENSIONS):
        return _VideoFile(path, meta_cache)
    return None


def read_video(path, frame_shape=(256, 256, 3)) -> np.ndarray:
    """A whole video in any of the layouts -> float32 (T, H, W, 3) in [0, 1], frames resized to
    frame_shape[:2] when they differ. Raises InputError when it is missing or cannot be decoded."""
    path = os.fspath(path)
    height, width = _check_frame_shape(frame_shape)[:2]
    if not os.path.exists(path):
        raise InputError(f'{path}: video not found; check the path')
    video = _open_video(path, width)
    if video is None:
        raise InputError(f'{path}: not a video; expected {LAYOUTS}')
    try:
        frames = video.read_all()
    except _BadVideo as e:
        raise InputError(f'{path}: {e}') from e
    if not frames:
        raise InputError(f'{path}: no frame could be decoded')
    return np.stack([f if f.shape[:2] == (height, width) else resize_frame(f, (height, width)) for f in frames])


def frame_count(path, frame_width=None) -> int:
    """How many frames the video at `path` (any of the layouts) has, from its header where it has one.
    frame_width: where a .png/.jpg strip is cut (default: its height, square frames)."""
    video = _open_checked(path, frame_width)
    try:
        return video.num_frames()
    except _BadVideo as e:
        raise InputError(f'{path}: {e}') from e


def iter_frames(path, frame_width=None):
    """Yields the frames of the video at `path` (any of the layouts) as uint8 (H, W, 3) RGB, at their
    own size: a video file is decoded one frame at a time, the other layouts are read whole.
    frame_width: where a strip is cut (default: its height). Raises InputError when it is missing
    or cannot be decoded."""
    video = _open_checked(path, frame_width)
    try:
        if isinstance(video, _VideoFile):
            yield from decode_frames(video.path)
            return
        for frame in video.read_all():
            yield np.rint(frame * 255.0).astype(np.uint8)
    except _BadVideo as e:
        raise InputError(f'{path}: {e}') from e


def _open_checked(path, frame_width=None):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f'{path}: video not found; check the path')
    if frame_width is None and _has_ext(path, STRIP_EXTENSIONS) and not os.path.isdir(path):
        try:
            with open_image(path) as img:
                frame_width = img.size[1]
        except (OSError, ValueError) as e:
            raise InputError(f'{path}: cannot read image: {_one_line(e)}') from e
    video = _open_video(path, frame_width or 1)
    if video is None:
        raise InputError(f'{path}: not a video; expected {LAYOUTS}')
    return video


# ----------------------------------------------------------------------------------------------
# Listing and splitting
# ----------------------------------------------------------------------------------------------

def _check_frame_shape(frame_shape) -> Tuple[int, int, int]:
    shape = tuple(frame_shape)
    if len(shape) == 2:
        shape = shape + (3,)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape) or shape[2] != 3:
        raise ConfigError(f'dataset_params.frame_shape: expected [height, width, 3], got {list(shape)}')
    return int(shape[0]), int(shape[1]), 3


def _list_videos(folder: str) -> List[str]:
    """Sorted names of the entries of `folder` that can be videos (hidden and other files skipped)."""
    names, ignored = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        if entry.is_dir() or _has_ext(entry.name, STRIP_EXTENSIONS + GIF_EXTENSIONS + VIDEO_EXTENSIONS):
            names.append(entry.name)
        else:
            ignored.append(entry.name)
    if ignored:
        log.info('%s: ignored %d entries that are no video (e.g. %s)', folder, len(ignored), ignored[0])
    if not names:
        raise InputError(f'{folder}: no videos found; each video must be {LAYOUTS}')
    return names


def split_videos(names: Sequence[str], random_seed: int = 0, test_size: float = TEST_SIZE):
    """The original's random train/test split, without scikit-learn -> (train_names, test_names).

    The same as `sklearn.model_selection.train_test_split(names, random_state=random_seed,
    test_size=0.2)`: n_test = ceil(0.2 * n), a permutation from `np.random.RandomState(random_seed)`
    (a private generator; the global one is untouched), test = the first n_test of it, train = the
    rest, both in permutation order. The dataset passes the names sorted (the original used the
    unsorted os.listdir order, so its split depended on the file system).
    """
    names = list(names)
    n_test = int(math.ceil(test_size * len(names)))
    permutation = np.random.RandomState(random_seed).permutation(len(names))
    test = [names[i] for i in permutation[:n_test]]
    train = [names[i] for i in permutation[n_test:]]
    return train, test


def _is_frame_folder(path: str) -> bool:
    """A folder that directly holds at least one frame image."""
    try:
        with os.scandir(path) as entries:
            return any(e.is_file() and not _is_hidden(e.name) and _has_ext(e.name, FRAME_EXTENSIONS)
                       for e in entries)
    except OSError:
        return False


def list_videos(folder) -> List[str]:
    """Sorted names of the entries of `folder` that can be videos; InputError when there is none."""
    return _list_videos(os.fspath(folder))


def is_frame_folder(path) -> bool:
    """True for a folder that directly holds frame images (one video), not a folder of videos."""
    return os.path.isdir(path) and _is_frame_folder(os.fspath(path))


def _probe(video) -> None:
    """Raise _BadVideo unless `video` has at least 2 frames (metadata only, no decoding)."""
    n = video.num_frames()
    if n < 2:
        raise _BadVideo(f'has {n} frame{"" if n == 1 else "s"}, need at least 2')


# ----------------------------------------------------------------------------------------------
# The datasets
# ----------------------------------------------------------------------------------------------

class FramesDataset(Dataset):
    """The videos of one dataset folder, for training (random frame pairs) or testing (whole videos).

    root_dir: the dataset folder. With `train/` and `test/` subfolders the split is theirs (only the
        one needed must exist); otherwise the videos of root_dir are split at random 80/20 with
        `random_seed` (`split_videos`). `self.root_dir` becomes the folder the videos are in.
    frame_shape: (H, W, 3); frames of another size are resized to (H, W), strips are cut every W pixels.
    id_sampling (train mode only): an item is an identity, and each time a random video of it is used.
        Identities are either folders `<id>/<video>/<clip>` (the original's latest layout, VoxCeleb:
        a random <video> folder, then a random clip in it; a folder that directly holds images is a
        frame folder, i.e. one clip, so strips can not be clips at this level) or the
        part before the first '#' of the video names `<id>#<rest>` (the original's first layout; we
        match `<id>#` exactly where the original's glob `<id>*.mp4` also caught `<id>0#...`).
        `len()` is then the number of identities. The original grouped only with train/ and test/
        folders; here the train part of a random split is grouped too.
    is_train: train items are {'source': float32 (3, H, W) in [0, 1], 'driving': float32 (3, H, W),
        'name': str (the video's file or folder name)}: two frame indices drawn uniformly with
        replacement and sorted (so they may coincide; source = the earlier), then augmented as one
        clip. Test items are {'video': float32 (3, T, H, W) in [0, 1], 'name': str}, the whole video,
        not augmented. Arrays are numpy (the DataLoader's collate makes tensors), as the original.
    random_seed: seed of the random train/test split.
    pairs_list: CSV of (source, driving) video names, read by PairedDataset only.
    augmentation_params: kwargs of AllAugmentationTransform (train mode); None or {} = none.

    `self.videos` lists the item names (video names; identities with id_sampling in train mode).
    """

    def __init__(self, root_dir, frame_shape=(256, 256, 3), id_sampling=False, is_train=True,
                 random_seed=0, pairs_list=None, augmentation_params=None):
        root_dir = os.fspath(root_dir)
        self.frame_shape = _check_frame_shape(frame_shape)
        self.pairs_list = pairs_list
        self.id_sampling = bool(id_sampling)
        self.is_train = bool(is_train)
        if not os.path.isdir(root_dir):
            what = 'is not a folder' if os.path.exists(root_dir) else 'dataset folder not found'
            raise InputError(f'{root_dir}: {what}; check dataset_params.root_dir')

        if os.path.isdir(os.path.join(root_dir, 'train')) or os.path.isdir(os.path.join(root_dir, 'test')):
            folder = os.path.join(root_dir, 'train' if self.is_train else 'test')
            if not os.path.isdir(folder):
                raise InputError(f'{folder}: folder not found; a dataset with train/ or test/ needs both '
                                 f'(or neither, for a random 80/20 split)')
            log.info('%s: using the predefined train/test split', root_dir)
            videos = _list_videos(folder)
        else:
            folder = root_dir
            names = _list_videos(root_dir)
            train, test = split_videos(names, random_seed)
            videos = train if self.is_train else test
            log.info('%s: random train/test split (seed %d): %d train, %d test videos',
                     root_dir, random_seed, len(train), len(test))
            if not videos:
                raise InputError(f'{root_dir}: the random 80/20 train/test split needs at least 2 videos, '
                                 f'found {len(names)}; add videos or make train/ and test/ subfolders')
        self.root_dir = folder

        self._meta_cache: Dict[str, Tuple[float, int]] = {}  # ffmpeg (fps, count) per path
        self._bad_paths: set = set()  # videos found unusable (in this process)
        self._bad_items: set = set()  # item indices with no usable video left
        self._resize_warned = False
        self._id_flat: Dict[str, List[str]] = {}  # identity -> paths of its '<id>#...' videos
        self._id_dirs: Dict[str, List[str]] = {}  # identity -> its '<id>/' folders
        self._id_groups: Dict[str, List[List[str]]] = {}  # identity -> [[clip paths of one video], ...]

        if self.is_train and self.id_sampling:
            for name in videos:
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not _is_frame_folder(path):
                    self._id_dirs.setdefault(name, []).append(path)
                else:
                    self._id_flat.setdefault(name.split('#')[0], []).append(path)
            videos = sorted(set(self._id_flat) | set(self._id_dirs))
        self.videos = videos

        if self.is_train:
            self.transform = AllAugmentationTransform(**augmentation_params) if augmentation_params else None
            self._check_one_usable()
        else:
            self.transform = None
            self._drop_unusable()

    # -- bookkeeping of bad videos ---------------------------------------------------------------

    def _skip(self, path: str, error: _BadVideo) -> None:
        if path not in self._bad_paths:
            self._bad_paths.add(path)
            log.warning('%s: skipped: %s', path, error)

    def _all_bad_error(self) -> InputError:
        return InputError(f'{self.root_dir}: none of the {len(self.videos)} '
                          f'{"identities" if self.id_sampling and self.is_train else "videos"} has a usable '
                          f'video (unreadable or shorter than 2 frames, see the warnings above)')

    def _open(self, path: str):
        video = _open_video(path, self.frame_shape[1], self._meta_cache)
        if video is None:  # only reachable through an identity folder's odd entries
            raise _BadVideo(f'not a video; expected {LAYOUTS}')
        return video

    def _probe_paths(self, paths: Sequence[str]) -> List[str]:
        """Probe `paths` (metadata only, a few at a time) -> the usable ones; warn about the others."""
        def probe(path):
            try:
                _probe(self._open(path))
                return None
            except _BadVideo as e:
                return e
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(paths)))) as pool:
            errors = list(pool.map(probe, paths))
        good = []
        for path, error in zip(paths, errors):
            if error is None:
                good.append(path)
            else:
                self._skip(path, error)
        return good

    def _drop_unusable(self) -> None:
        """Test mode: probe every video now (every one will be decoded whole later anyway)."""
        paths = [os.path.join(self.root_dir, name) for name in self.videos]
        good = set(self._probe_paths(paths))
        if not good:
            raise self._all_bad_error()
        self.videos = [name for name, path in zip(self.videos, paths) if path in good]

    def _check_one_usable(self) -> None:
        """Train mode: make sure one video is usable now, in this process, so that an all-bad dataset
        fails here with one line rather than later inside a DataLoader worker."""
        batch = 8
        for start in range(0, len(self.videos), batch):
            paths = []
            for idx in range(start, min(start + batch, len(self.videos))):
                paths.extend(self._candidate_paths(idx))
            if self._probe_paths(paths):
                return
        raise self._all_bad_error()

    # -- choosing the video of an item -----------------------------------------------------------

    def _groups(self, identity: str) -> List[List[str]]:
        """The videos of an identity as groups to draw from (first a group, then a clip in it)."""
        if identity not in self._id_groups:
            groups = [[path] for path in self._id_flat.get(identity, [])]
            for folder in self._id_dirs.get(identity, []):
                for name in sorted(os.listdir(folder)):
                    path = os.path.join(folder, name)
                    if _is_hidden(name):
                        continue
                    if os.path.isdir(path) and not _is_frame_folder(path):  # <id>/<video>/<clips>
                        clips = [os.path.join(path, c) for c in sorted(os.listdir(path)) if not _is_hidden(c)
                                 and (_has_ext(c, STRIP_EXTENSIONS + GIF_EXTENSIONS + VIDEO_EXTENSIONS)
                                      or _is_frame_folder(os.path.join(path, c)))]
                        if clips:
                            groups.append(clips)
                    elif os.path.isdir(path) or _has_ext(name, STRIP_EXTENSIONS + GIF_EXTENSIONS + VIDEO_EXTENSIONS):
                        groups.append([path])
            self._id_groups[identity] = groups
        return self._id_groups[identity]

    def _candidate_paths(self, idx: int) -> List[str]:
        if self.is_train and self.id_sampling:
            return [p for group in self._groups(self.videos[idx]) for p in group if p not in self._bad_paths]
        path = os.path.join(self.root_dir, self.videos[idx])
        return [] if path in self._bad_paths else [path]

    def _pick_path(self, idx: int, rng: np.random.Generator) -> Optional[str]:
        """The video for item idx (a random one of the identity with id_sampling); None if none is left."""
        if not (self.is_train and self.id_sampling):
            candidates = self._candidate_paths(idx)
            return candidates[0] if candidates else None
        groups = [[p for p in group if p not in self._bad_paths] for group in self._groups(self.videos[idx])]
        groups = [group for group in groups if group]
        if not groups:
            return None
        group = groups[int(rng.integers(len(groups)))]
        return group[int(rng.integers(len(group)))]

    # -- items ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.videos)

    def _fit(self, frame: np.ndarray, path: str) -> np.ndarray:
        """Resize a frame to frame_shape[:2] if needed (warning once per dataset object)."""
        height, width = self.frame_shape[:2]
        if frame.shape[:2] == (height, width):
            return frame
        if not self._resize_warned:
            self._resize_warned = True
            log.warning('%s: frames are %dx%d (HxW), not %dx%d as dataset_params.frame_shape; resizing them '
                        '(bilinear, anti-aliased); other videos of this dataset are resized without a warning',
                        path, frame.shape[0], frame.shape[1], height, width)
        return resize_frame(frame, (height, width))

    def _train_pair(self, path: str, rng: np.random.Generator) -> List[np.ndarray]:
        video = self._open(path)
        num_frames = video.num_frames()
        if num_frames < 2:
            raise _BadVideo(f'has {num_frames} frame{"" if num_frames == 1 else "s"}, need at least 2')
        frame_idx = np.sort(rng.choice(num_frames, size=2, replace=True))
        return [self._fit(frame, path) for frame in video.read([int(i) for i in frame_idx])]

    def __getitem__(self, idx: int) -> dict:
        idx = range(len(self))[idx]  # IndexError when out of range; negative indices as lists
        if not self.is_train:
            return self._test_item(idx)
        rng = torch_seeded_rng()
        while True:
            path = self._pick_path(idx, rng) if idx not in self._bad_items else None
            if path is None:  # nothing usable left for this item: draw another one
                self._bad_items.add(idx)
                left = [i for i in range(len(self)) if i not in self._bad_items]
                if not left:
                    raise self._all_bad_error()
                idx = left[int(rng.integers(len(left)))]
                continue
            try:
                frames = self._train_pair(path, rng)
                break
            except _BadVideo as e:
                self._skip(path, e)
        if self.transform is not None:
            frames = self.transform(frames, rng)
        source, driving = frames
        return {'source': np.ascontiguousarray(source.transpose(2, 0, 1), dtype=np.float32),
                'driving': np.ascontiguousarray(driving.transpose(2, 0, 1), dtype=np.float32),
                'name': os.path.basename(path)}

    def _test_item(self, idx: int) -> dict:
        path = os.path.join(self.root_dir, self.videos[idx])
        try:
            frames = self._open(path).read_all()
        except _BadVideo as e:  # probed fine when the dataset was built, but fails to decode
            raise InputError(f'{path}: {e}') from e
        if not frames:
            raise InputError(f'{path}: no frame could be decoded')
        video = np.stack([self._fit(frame, path) for frame in frames])  # (T, H, W, 3)
        return {'video': np.ascontiguousarray(video.transpose(3, 0, 1, 2), dtype=np.float32),  # (3, T, H, W)
                'name': os.path.basename(path)}


class DatasetRepeater(Dataset):
    """Pass num_repeats times over a dataset per epoch (fewer, longer epochs): item idx is
    dataset[idx % len(dataset)]. Unlike the original's latest version it does not retry forever on
    any exception; FramesDataset skips unusable videos itself."""

    def __init__(self, dataset, num_repeats: int = 100):
        if isinstance(num_repeats, bool) or not isinstance(num_repeats, (int, np.integer)) or num_repeats < 1:
            raise ConfigError(f'train_params.num_repeats: must be an integer >= 1, got {num_repeats!r}')
        self.dataset = dataset
        self.num_repeats = int(num_repeats)

    def __len__(self) -> int:
        return self.num_repeats * len(self.dataset)

    def __getitem__(self, idx: int):
        idx = range(len(self))[idx]
        return self.dataset[idx % len(self.dataset)]


class PairedDataset(Dataset):
    """(driving video, source video) pairs of a test-mode dataset, for the animate mode.

    Item: {'driving_video': (3, T, H, W), 'driving_name': str, 'source_video': (3, T', H, W),
    'source_name': str}, the two whole videos (the animate mode takes frame 0 of the source video).

    With `initial_dataset.pairs_list` (a CSV with a header that has `source` and `driving` columns,
    other columns ignored): the CSV's `driving` column feeds 'driving_video'/'driving_name' and its
    `source` column feeds 'source_video'/'source_name'. Pairs naming a video that is not in the
    dataset are dropped with one warning (their count and the first names); the first
    `number_of_pairs` of the remaining rows are used, in file order, as the original (no sampling,
    `seed` is not used). The original stores each pair as (driving, source) and then prefixes the first
    item 'driving_' and the second 'source_', so there is no swap on this path; we keep it exactly.

    Without a pairs_list, as the original: the first m = min(number_of_pairs, len(dataset)) videos
    make all m * m ordered pairs (i, j), self-pairs included, in row-major order, and
    min(number_of_pairs, m * m) of them are drawn without replacement; i is the driving video and j
    the source. The draw uses a private `np.random.RandomState(seed)`, which picks the same pairs as
    the original's `np.random.seed(seed); np.random.choice(...)` without touching the global RNG.
    """

    def __init__(self, initial_dataset, number_of_pairs: int, seed: int = 0):
        if isinstance(number_of_pairs, bool) or not isinstance(number_of_pairs, (int, np.integer)) \
                or number_of_pairs < 1:
            raise ConfigError(f'animate_params.num_pairs: must be an integer >= 1, got {number_of_pairs!r}')
        self.initial_dataset = initial_dataset
        pairs_list = initial_dataset.pairs_list
        if pairs_list is None:
            max_idx = min(int(number_of_pairs), len(initial_dataset))
            grid = [(i, j) for i in range(max_idx) for j in range(max_idx)]
            count = min(len(grid), int(number_of_pairs))
            chosen = np.random.RandomState(seed).choice(len(grid), count, replace=False)
            self.pairs = [grid[k] for k in chosen]
        else:
            self.pairs = self._read_pairs(os.fspath(pairs_list), int(number_of_pairs))

    def _read_pairs(self, pairs_list: str, number_of_pairs: int) -> List[Tuple[int, int]]:
        if not os.path.isfile(pairs_list):
            raise InputError(f'{pairs_list}: pairs list not found; check dataset_params.pairs_list')
        try:
            with open(pairs_list, newline='', encoding='utf-8-sig') as f:
                reader = csv.DictReader(f)
                columns = [c.strip() for c in (reader.fieldnames or [])]
                rows = [{(k or '').strip(): (v or '').strip() for k, v in row.items() if isinstance(v, str)}
                        for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise InputError(f'{pairs_list}: cannot read the pairs list: {_one_line(e)}') from e
        missing_columns = [c for c in ('source', 'driving') if c not in columns]
        if missing_columns:
            raise InputError(f"{pairs_list}: needs a header with 'source' and 'driving' columns; "
                             f"'{missing_columns[0]}' is missing (header: {','.join(columns) or 'none'})")
        name_to_index = {name: index for index, name in enumerate(self.initial_dataset.videos)}
        kept, missing = [], []
        for row in rows:
            driving, source = row.get('driving', ''), row.get('source', '')
            absent = [name for name in (source, driving) if name not in name_to_index]
            if absent:
                missing.extend(name for name in absent if name not in missing)
            else:
                kept.append((name_to_index[driving], name_to_index[source]))
        folder = getattr(self.initial_dataset, 'root_dir', 'the dataset')
        if len(kept) < len(rows):
            log.warning('%s: %d of %d pairs skipped: they name videos that are not in %s (first: %s)',
                        pairs_list, len(rows) - len(kept), len(rows), folder, ', '.join(missing[:3]))
        if not kept:
            raise InputError(f'{pairs_list}: none of its {len(rows)} pairs names two videos of {folder}; '
                             f'check the names or dataset_params.root_dir')
        return kept[:number_of_pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> dict:
        driving_index, source_index = self.pairs[idx]
        first = self.initial_dataset[driving_index]
        second = self.initial_dataset[source_index]
        out = {'driving_' + key: value for key, value in first.items()}
        out.update({'source_' + key: value for key, value in second.items()})
        return out
