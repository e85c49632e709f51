"""The paper's metrics: L1, AKD, MKR and AED between generated frames and their ground truth.

FOMM (Sec. 4.1) reports, for video reconstruction,
    L1    mean |generated - ground truth| over the pixels, in [0, 1] (the original's reconstruction loss);
    AKD   average keypoint distance: the mean pixel distance between the keypoints an external
          extractor finds on the generated frame and on the ground-truth frame;
    MKR   missing keypoint rate: the fraction of the keypoints found on the ground truth that are not
          found on the generated frame;
    AED   average euclidean distance between the identity embeddings of the generated and the
          ground-truth frames.
The extractors are plug-ins. An extractor is a callable object

    extractor(frames) -> {'keypoints': float (N, K, 2) pixel (x, y), NaN where a keypoint is not found,
                          'identity': float (N, D), a NaN row where there is no identity}
    frames: uint8 (N, H, W, 3) RGB, at the ground truth's resolution

with a `name`; either key may be absent (no AKD/MKR, or no AED). Built in:
    faces     dlib's 68 landmarks and 128-d identity of the largest face (toolkit.dlib_faces)
    cartoon   the bundled model's landmark and identity network for the synthetic cartoons
    none      L1 only
and 'module:Class' or 'file.py:Class' loads the user's own (a body-pose or re-id model).

How the numbers are pooled: within a video, AKD is the mean over every (frame, keypoint) found on
both sides, MKR the missing count over the found-on-ground-truth count, AED the mean over the frames
with an identity on both sides, L1 the mean over the frames. The `mean` row pools the same sums
over all frames of all videos (so a long video weighs more, as the original's "Reconstruction
loss" and the per-frame tables of the paper's evaluation do). A metric with nothing to average
(no face found on the ground truth) is NaN, written empty in the CSV and '-' in the table.
"""
import csv
import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from modules.errors import InputError
from modules.fileio import atomic_path, check_output_path
from modules.plugins import load_plugin
from toolkit.animation import to_uint8
from toolkit.datasets import FRAME_EXTENSIONS, frame_count, is_frame_folder, iter_frames, list_videos
from toolkit.resize import resize_frame

log = logging.getLogger(__name__)

EXTRACTORS = {
    'faces': 'toolkit.dlib_faces:FaceExtractor',
    'cartoon': 'toolkit.cartoon_landmarks:CartoonFaces',
}
NONE = 'none'
METRICS = ('l1', 'akd', 'mkr', 'aed')
CHUNK = 32  # frames per extractor call


def psnr(a, b, peak=1.0):
    """Peak signal-to-noise ratio in dB between two images or stacks of frames (arrays, or lists of
    equally shaped arrays) with values up to `peak` (1 for floats in [0, 1], 255 for uint8); inf
    when they are equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def extractor_names():
    return tuple(EXTRACTORS) + (NONE,)


def load_extractor(spec, flag='--extractor'):
    """'faces', 'cartoon', 'none' (-> None) or 'module:Class' -> the extractor. InputError (one
    line) when it cannot be loaded."""
    if spec is None or spec == NONE:
        return None
    if spec not in EXTRACTORS and ':' not in str(spec):
        raise InputError(f'{flag} {spec}: expected one of {", ".join(extractor_names())} or module:Class')
    return load_plugin(EXTRACTORS.get(spec, spec), flag, 'my_pose:PoseExtractor')


def extractor_label(extractor):
    return getattr(extractor, 'name', None) or type(extractor).__name__


# ----------------------------------------------------------------------------------------------
# The sums behind the metrics
# ----------------------------------------------------------------------------------------------

@dataclass
class Totals:
    """Sums over frames from which every metric is one division (so videos pool exactly)."""
    frames: int = 0
    l1: float = 0.0  # sum over frames of the frame's mean |difference|
    distance: float = 0.0  # sum of keypoint distances over the keypoints found on both sides
    matched: int = 0  # how many keypoints were found on both sides
    found: int = 0  # keypoints found on the ground truth
    missing: int = 0  # ... of which not found on the generated frame
    identity: float = 0.0  # sum of embedding distances over the frames with an identity on both sides
    identified: int = 0

    def __iadd__(self, other):
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @classmethod
    def of(cls, parts):
        """The sum of several Totals."""
        total = cls()
        for part in parts:
            total += part
        return total

    def values(self):
        """{'l1', 'akd', 'mkr', 'aed'} -> float, NaN where there is nothing to average."""
        def ratio(a, b):
            return a / b if b else math.nan
        return {'l1': ratio(self.l1, self.frames), 'akd': ratio(self.distance, self.matched),
                'mkr': ratio(self.missing, self.found), 'aed': ratio(self.identity, self.identified)}


def _as_float(frames):
    frames = np.asarray(frames)
    return frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32, copy=False)


def _features(extractor, frames):
    """The extractor's output for `frames`, checked: (keypoints (N, K, 2) or None, identity (N, D) or None)."""
    n = len(frames)
    label = extractor_label(extractor)
    out = extractor(frames)
    if not isinstance(out, dict):
        raise InputError(f'extractor {label} returned {type(out).__name__}, expected a dict with '
                         f"'keypoints' (N, K, 2) and/or 'identity' (N, D)")
    keypoints, identity = out.get('keypoints'), out.get('identity')
    if keypoints is not None:
        keypoints = np.asarray(keypoints, np.float64)
        if keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 2:
            raise InputError(f"extractor {label}: 'keypoints' has shape {keypoints.shape}, expected ({n}, K, 2)")
    if identity is not None:
        identity = np.asarray(identity, np.float64)
        if identity.ndim != 2 or identity.shape[0] != n:
            raise InputError(f"extractor {label}: 'identity' has shape {identity.shape}, expected ({n}, D)")
    return keypoints, identity


def compare(generated, ground_truth, extractor=None, l1=None):
    """Totals for frames of one video. generated, ground_truth: (N, H, W, 3), uint8 or float in
    [0, 1], of the same size. l1: the frames' L1 when the caller has it already (float (N,)), else
    computed here. extractor: None for L1 only."""
    n = len(ground_truth)
    if l1 is None:
        l1 = np.abs(_as_float(generated) - _as_float(ground_truth)).mean(axis=(1, 2, 3))
    totals = Totals(frames=n, l1=float(np.sum(l1, dtype=np.float64)))
    if extractor is None:
        return totals
    kp_gen, id_gen = _features(extractor, to_uint8(np.asarray(generated)))
    kp_gt, id_gt = _features(extractor, to_uint8(np.asarray(ground_truth)))
    if kp_gt is not None and kp_gen is not None:
        if kp_gen.shape != kp_gt.shape:
            raise InputError(f'extractor {extractor_label(extractor)} gave {kp_gen.shape[1]} keypoints on a '
                             f'generated frame and {kp_gt.shape[1]} on its ground truth')
        found_gt = ~np.isnan(kp_gt).any(axis=2)  # (N, K)
        found_gen = ~np.isnan(kp_gen).any(axis=2)
        both = found_gt & found_gen
        totals.distance = float(np.linalg.norm(kp_gen - kp_gt, axis=2)[both].sum())
        totals.matched = int(both.sum())
        totals.found = int(found_gt.sum())
        totals.missing = int((found_gt & ~found_gen).sum())
    if id_gt is not None and id_gen is not None:
        both = ~np.isnan(id_gt).any(axis=1) & ~np.isnan(id_gen).any(axis=1)
        totals.identity = float(np.linalg.norm(id_gen - id_gt, axis=1)[both].sum())
        totals.identified = int(both.sum())
    return totals


# ----------------------------------------------------------------------------------------------
# Videos on disk
# ----------------------------------------------------------------------------------------------

def _layout(path):
    """'video' (a file), 'videos' (a folder holding a subfolder, a video file or a gif) or 'images' (a
    folder of images only: one video's frames, or strips, each a video)."""
    if os.path.isfile(path):
        return 'video'
    if not is_frame_folder(path):
        return 'videos'
    with os.scandir(path) as entries:
        others = any(e.is_dir() or not e.name.lower().endswith(FRAME_EXTENSIONS) for e in entries
                     if not e.name.startswith('.'))
    return 'videos' if others else 'images'


def _looks_like_strips(folder):
    """True when the folder's first image is at least twice as wide as it is high (frames side by side)."""
    from modules.limits import open_image
    first = min(n for n in os.listdir(folder) if n.lower().endswith(FRAME_EXTENSIONS) and not n.startswith('.'))
    try:
        with open_image(Path(folder) / first) as img:
            width, height = img.size
    except (OSError, ValueError) as e:
        raise InputError(f'{Path(folder) / first}: cannot read image ({e})') from e
    return width >= 2 * height


def _one_video_each(generated, ground_truth):
    """Whether two paths are one video each (True) or two folders of videos (False). A folder of images
    only is one video's frames beside a video file, and otherwise strips (each a video) when its
    images are at least twice as wide as high, else one video's frames."""
    layouts = [_layout(generated), _layout(ground_truth)]
    for i, path in enumerate((generated, ground_truth)):
        if layouts[i] == 'images' and layouts[1 - i] != 'video':
            layouts[i] = 'videos' if _looks_like_strips(path) else 'video'
    layouts = ['video' if layout == 'images' else layout for layout in layouts]
    if layouts[0] != layouts[1]:
        video, folder = (generated, ground_truth) if layouts[0] == 'video' else (ground_truth, generated)
        raise InputError(f'{video} is one video but {folder} is a folder of videos: give two videos or two folders')
    return layouts[0] == 'video'


def _keys(name):
    """The names a video may be matched by: 'a.mp4.png' -> a.mp4.png, a.mp4, a (run.py's strips keep the
    dataset's name and add .png)."""
    keys = [name]
    while True:
        stem, ext = os.path.splitext(name)
        if not ext or not stem:
            return keys
        keys.append(stem)
        name = stem


def pair_videos(generated, ground_truth):
    """[(name, generated path, ground-truth path)]: one pair for two videos, or the videos of the
    `generated` folder each matched by name (extensions aside) with one of the `ground_truth` folder.
    A generated video without its ground truth is an error; ground truth without a generated video is
    left out (e.g. reconstruction_params.num_videos)."""
    generated, ground_truth = Path(generated), Path(ground_truth)
    for path, side in ((generated, 'generated'), (ground_truth, 'ground truth')):
        if not path.exists():
            raise InputError(f'{path}: not found (the {side} frames)')
    if _one_video_each(generated, ground_truth):
        return [(generated.name, generated, ground_truth)]
    truth = {}
    for name in list_videos(ground_truth):
        for key in _keys(name):
            truth.setdefault(key, []).append(name)
    pairs = []
    for name in list_videos(generated):
        match = next((truth[key] for key in _keys(name) if key in truth), None)
        if match is None:
            raise InputError(f'{generated / name}: no ground-truth video of that name in {ground_truth}')
        if len(match) > 1:
            raise InputError(f'{generated / name}: more than one ground-truth video matches it in {ground_truth} '
                             f'({", ".join(match[:3])})')
        pairs.append((name, generated / name, ground_truth / match[0]))
    left = len({n for names in truth.values() for n in names}) - len({p[2].name for p in pairs})
    if left:
        log.info('%d ground-truth videos in %s have no generated video and are left out', left, ground_truth)
    return pairs


def _strip_width(path, size):
    """Where to cut a generated strip: at the ground truth's frame width when the heights agree."""
    from modules.limits import open_image
    with open_image(path) as img:
        width, height = img.size
    return size[1] if height == size[0] and width % size[1] == 0 else height


def _chunks(frames, size):
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def compare_videos(generated, ground_truth, extractor=None, resize=False, frame_width=None, progress=None):
    """Totals for one pair of videos on disk, streamed CHUNK frames at a time. resize: bring the
    generated frames to the ground truth's size (else a size difference is an error). frame_width:
    where a ground-truth strip is cut (default: its height). progress: a tqdm bar to advance per frame."""
    truth = iter_frames(ground_truth, frame_width)
    first = next(truth, None)
    if first is None:
        raise InputError(f'{ground_truth}: no frame could be decoded')
    size = first.shape[:2]
    gen_width = None
    if os.path.isfile(generated) and str(generated).lower().endswith(('.png', '.jpg', '.jpeg')):
        gen_width = _strip_width(generated, size)
    made = iter_frames(generated, gen_width)
    totals, count = Totals(), 0

    def pairs():
        nonlocal count
        for gt in _prepend(first, truth):
            gen = next(made, None)
            if gen is None:
                rest = sum(1 for _ in truth)
                raise InputError(f'{generated} has {count} frames but {ground_truth} has {count + 1 + rest}: '
                                 f'they must have the same frames')
            if gen.shape[:2] != size:
                if not resize:
                    raise InputError(f'{generated}: frames are {gen.shape[1]}x{gen.shape[0]} but the ground truth '
                                     f'{ground_truth} is {size[1]}x{size[0]}; pass --resize to compare at the '
                                     f"ground truth's size")
                gen = to_uint8(resize_frame(_as_float(gen), size))
            count += 1
            yield gen, gt
        extra = sum(1 for _ in made)
        if extra:
            raise InputError(f'{generated} has {count + extra} frames but {ground_truth} has {count}: '
                             f'they must have the same frames')

    for chunk in _chunks(pairs(), CHUNK):
        totals += compare(chunk[:, 0], chunk[:, 1], extractor)
        if progress is not None:
            progress.update(len(chunk))
    return totals


def _prepend(first, rest):
    yield first
    yield from rest


@dataclass
class Report:
    """Per-video rows [(name, Totals)] and their pooled Totals."""
    extractor: str
    rows: list = field(default_factory=list)
    total: Totals = field(default_factory=Totals)
    csv: Path = None  # where the CSV was written

    def add(self, name, totals):
        self.rows.append((name, totals))
        self.total += totals

    def mean(self):
        return self.total.values()


@dataclass(frozen=True)
class EvaluateOptions:
    """evaluate.py's options (its flags), with their defaults."""
    generated: str = None
    ground_truth: str = None
    extractor: str = 'faces'
    out: str = 'metrics.csv'
    resize: bool = False
    frame_width: int = None


def evaluate(generated, ground_truth, extractor='faces', out=None, resize=False, frame_width=None):
    """Compares generated videos with their ground truth (toolkit.evaluation's module docstring says
    how). generated, ground_truth: two videos, or two folders of videos matched by name, each video
    a .png/.jpg strip (run.py --mode reconstruction's png/), a folder of frames or a video file.
    extractor: a name of extractor_names(), 'module:Class', or an extractor object. out: the CSV to
    write (None: none). Returns the Report."""
    if out is not None:
        check_output_path(out, '--out', ('.csv',))
    if frame_width is not None and frame_width < 1:
        raise InputError(f'--frame_width {frame_width}: must be a positive number of pixels')
    pairs = pair_videos(generated, ground_truth)
    if isinstance(extractor, str) or extractor is None:
        extractor = load_extractor(extractor)
    report = Report(extractor_label(extractor) if extractor is not None else NONE)
    try:
        total = sum(frame_count(gt, frame_width) for _, _, gt in pairs)
    except InputError:
        total = None  # the comparison itself says what is wrong with the file
    with tqdm(total=total, desc='evaluate', unit='frame') as bar:
        for name, gen, gt in pairs:
            totals = compare_videos(gen, gt, extractor, resize=resize, frame_width=frame_width, progress=bar)
            report.add(name, totals)
            log.debug('%s: %s', name, totals.values())
    if out is not None:
        report.csv = write_csv(out, report)
    return report


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

def _cell(value):
    return '' if math.isnan(value) else repr(float(value))


def write_csv(path, report):
    """`video,frames,l1,akd,mkr,aed` per video, then the `mean` row (pooled over all frames); NaN is
    written empty. Written to a temporary file and renamed."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(('video', 'frames') + METRICS)
        for name, totals in report.rows + [('mean', report.total)]:
            values = totals.values()
            writer.writerow([name, totals.frames] + [_cell(values[m]) for m in METRICS])
    return Path(path)


def format_table(report, max_rows=20):
    """The report as a text table (the first `max_rows` videos, then the mean)."""
    def number(value, digits):
        return '-' if math.isnan(value) else f'{value:.{digits}f}'

    header = ('video', 'frames', 'L1', 'AKD', 'MKR', 'AED')
    rows = report.rows[:max_rows]
    lines = [[name, str(t.frames)] + [number(t.values()[m], d) for m, d in zip(METRICS, (4, 3, 3, 3))]
             for name, t in rows]
    if len(report.rows) > max_rows:
        lines.append([f'... {len(report.rows) - max_rows} more', '', '', '', '', ''])
    t = report.total
    lines.append(['mean', str(t.frames)] + [number(t.values()[m], d) for m, d in zip(METRICS, (4, 3, 3, 3))])
    widths = [max(len(str(r[i])) for r in lines + [list(header)]) for i in range(len(header))]
    fmt = lambda r: '  '.join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [fmt(header), fmt(['-' * w for w in widths])] + [fmt(r) for r in lines]
    return '\n'.join(out) + f'\n(extractor: {report.extractor}; AKD in pixels at the ground truth\'s resolution)'
