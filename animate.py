"""Animation: relative keypoint transfer (normalize_kp), the batched animation core shared with the
reconstruction mode (`animate_batches`, `render_video`), and the `animate` mode of run.py.

The original animated one driving frame at a time and re-encoded the source for each frame. Here the
source's keypoints and encoder features are computed once, and driving frames go through the
keypoint detector and the generator `batch_size` at a time (the source expanded to the batch). In
eval mode every module is per-sample, so the results equal the original's per-frame loop up to float
rounding (the tests hold the predictions to 1e-5 of the per-frame loop, and to the original's own
outputs within 1e-4).
"""
import contextlib
import copy
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from modules.util import fold_batchnorm, unwrap

log = logging.getLogger(__name__)

BATCH_SIZE = 8  # driving frames per forward pass (on CUDA; see default_batch_size)


def default_batch_size(device, fast=False):
    """Driving frames per forward pass: 8 on CUDA; on the CPU 1 (exact path) or 2 (fast mode), the
    fastest there as measured with benchmarks/animate.py."""
    if torch.device(device).type == 'cuda':
        return BATCH_SIZE
    return 2 if fast else 1
# The original wrote the visualisations with imageio.mimsave and no fps, i.e. imageio's default of
# 10 frames per second for both its ffmpeg (.mp4) and its GIF writer.
VISUALISATION_FPS = 10


def convex_hull_area(points):
    """Area of the convex hull of 2-D points (N, 2) (Andrew's monotone chain + shoelace, float64).

    Equals scipy.spatial.ConvexHull(points).volume, which the original uses; 0 for degenerate sets.
    """
    pts = sorted(set(map(tuple, np.asarray(points, dtype=np.float64).tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    x = np.array([p[0] for p in hull])
    y = np.array([p[1] for p in hull])
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def adapt_movement_scale_factor(kp_source, kp_driving_initial):
    """sqrt(hull area of kp_source) / sqrt(hull area of kp_driving_initial), from batch element 0
    only (as the original)."""
    source_area = convex_hull_area(kp_source['value'][0].detach().cpu().numpy())
    driving_area = convex_hull_area(kp_driving_initial['value'][0].detach().cpu().numpy())
    return np.sqrt(source_area) / np.sqrt(driving_area)


def normalize_kp(kp_source, kp_driving, kp_driving_initial, adapt_movement_scale=False,
                 use_relative_movement=False, use_relative_jacobian=False):
    """Driving keypoints expressed relative to the first driving frame, applied to the source (Sec. 3.5).

    With use_relative_movement: value = (kp_driving - kp_driving_initial) * scale + kp_source, where
    scale is adapt_movement_scale_factor(...) if adapt_movement_scale else 1 (the scale is only used
    with relative movement, as in the original). With use_relative_jacobian as well:
    jacobian = J_driving @ inverse(J_driving_initial) @ J_source. Unlike the original, a model
    without jacobians does not crash there: the relative jacobian is skipped.
    Returns a new dict (the inputs are not modified).
    """
    scale = adapt_movement_scale_factor(kp_source, kp_driving_initial) if adapt_movement_scale else 1
    kp_new = dict(kp_driving)
    if use_relative_movement:
        kp_value_diff = (kp_driving['value'] - kp_driving_initial['value']) * scale
        kp_new['value'] = kp_value_diff + kp_source['value']
        if use_relative_jacobian and 'jacobian' in kp_driving:
            jacobian_diff = torch.matmul(kp_driving['jacobian'], torch.inverse(kp_driving_initial['jacobian']))
            kp_new['jacobian'] = torch.matmul(jacobian_diff, kp_source['jacobian'])
    return kp_new


# ----------------------------------------------------------------------------------------------
# The batched animation core (shared with reconstruction.py)
# ----------------------------------------------------------------------------------------------

def _expand_kp(kp, batch):
    """A keypoint dict of batch 1 -> the same values viewed as batch `batch` (no copy)."""
    return {name: value.expand(batch, *value.shape[1:]) for name, value in kp.items()}


def _frame_batches(video, batch_size):
    """(1, C, T, H, W) video -> (B, C, H, W) batches of consecutive frames, B <= batch_size."""
    for start in range(0, video.shape[2], batch_size):
        yield video[0, :, start:start + batch_size].transpose(0, 1)  # (B, C, H, W)


class Animator:
    """Animates one source image with batches of driving frames; the source's keypoints and encoder
    features are computed once, here.

    source: (1, C, H, W) in [0, 1], any device/dtype (moved to the generator's). normalization_params:
    None = absolute keypoints (reconstruction); else normalize_kp's flags (Sec. 3.5), relative to
    kp_driving_initial: the first driving frame, unless `set_initial` chose another one.
    fast: a channels-last copy of the generator runs under bfloat16 (CPU) / float16 (CUDA) autocast;
    the keypoint detector stays float32 (its sharp softmax would make keypoints jitter).
    The models should be in eval mode (train-mode batch norm would mix the frames of a batch).
    """

    def __init__(self, generator, kp_detector, source, normalization_params=None, fast=False):
        self.generator, self.kp_detector = unwrap(generator), unwrap(kp_detector)
        if fast:  # a copy, so the caller's model keeps its layout and batch norms
            self.generator = fold_batchnorm(copy.deepcopy(self.generator)).to(memory_format=torch.channels_last)
        parameter = next(self.generator.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.normalization_params = normalization_params
        self.fast = fast
        with torch.inference_mode():
            self.source = self._layout(source.to(self.device, self.dtype))
            self.kp_source = self.kp_detector(self.source)
            with self._autocast():
                self.source_features = self.generator.encode(self.source)  # once per source
        self.kp_driving_initial = None

    def _autocast(self):
        if not self.fast:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == 'cuda' else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.fast else x

    def keypoints(self, frames):
        """frames: (B, C, H, W) -> the keypoint detector's dict."""
        with torch.inference_mode():
            return self.kp_detector(frames.to(self.device, self.dtype))

    def set_initial(self, frame):
        """Measures the relative motion from `frame` (1, C, H, W) instead of the first driving frame."""
        self.kp_driving_initial = self.keypoints(frame)

    def __call__(self, frames):
        """frames: (B, C, H, W) -> (frames on the model's device, out): the generator's dict without
        'sparse_deformed' (the original drops it before visualising; it is the largest output) plus
        'kp_source' (expanded to B), 'kp_driving' and, with normalization_params, 'kp_norm'."""
        with torch.inference_mode():
            frames = frames.to(self.device, self.dtype)
            batch = frames.shape[0]
            kp_driving = self.kp_detector(frames)
            if self.normalization_params is None:
                kp_target = kp_driving
            else:
                if self.kp_driving_initial is None:  # the first driving frame, as the original
                    self.kp_driving_initial = {name: value[:1] for name, value in kp_driving.items()}
                # kp_source and kp_driving_initial (batch 1) broadcast against the B frames
                kp_target = normalize_kp(self.kp_source, kp_driving, self.kp_driving_initial,
                                         **self.normalization_params)
            kp_source = _expand_kp(self.kp_source, batch)
            with self._autocast():
                out = self.generator(self._layout(self.source.expand(batch, -1, -1, -1)), kp_driving=kp_target,
                                     kp_source=kp_source,
                                     source_features=self.source_features.expand(batch, -1, -1, -1))
            out = {name: value.to(self.dtype) for name, value in out.items() if name != 'sparse_deformed'}
            out['kp_source'] = kp_source
            out['kp_driving'] = kp_driving
            if self.normalization_params is not None:
                out['kp_norm'] = kp_target
        return frames, out


def animate_batches(generator, kp_detector, source, driving, normalization_params=None, batch_size=None):
    """Animates `source` with every frame of `driving`, one batch of frames per forward pass (Animator).

    source: (1, C, H, W) in [0, 1]. driving: a (1, C, T, H, W) video in [0, 1], cut into batches of
    `batch_size` frames (default: default_batch_size of the model's device), or an iterable of (B, C, H, W) frame batches (e.g. decoded while animating).
    normalization_params: None = absolute keypoints, the reconstruction mode:
        generator(source, kp_source=kp_detector(source), kp_driving=kp_detector(driving));
    a dict of normalize_kp's flags = the animate mode, relative to the first driving frame.
    Yields (driving frames on the model's device, out) per batch; see Animator.__call__.
    """
    animator = Animator(generator, kp_detector, source, normalization_params)
    if torch.is_tensor(driving):
        driving = _frame_batches(driving, batch_size or default_batch_size(animator.device))
    for frames in driving:
        yield animator(frames)


def open_visualisation_writer(path, fps=VISUALISATION_FPS):
    """A streaming, atomic writer for `path` (video_io.open_writer: GIF or H.264 by extension)."""
    from video_io import open_writer
    return open_writer(path, fps)


def render_video(generator, kp_detector, source, driving, visualizer, png_path, visualisation_path,
                 normalization_params=None, batch_size=None, fps=VISUALISATION_FPS):
    """Animates one video with `animate_batches` and writes the original's two results for it:

    png_path: the predicted frames side by side, uint8 (H, T * W, 3) = (255 * prediction) truncated,
        as the original's png strip;
    visualisation_path: visualizer.visualize(driving=frame, source=source, out=out) of every frame (the
        original's columns without the sparse-deformed ones), encoded as frames come (see
        open_visualisation_writer) at `fps`.
    Both are written atomically. Returns float64 (T,): the L1 error of each frame, mean |prediction -
    driving| over its pixels in [0, 1] (the reconstruction loss; for animation only a diagnostic).
    """
    from logger import write_png_atomic

    strip, l1 = [], []
    with open_visualisation_writer(visualisation_path, fps) as writer:
        for frames, out in animate_batches(generator, kp_detector, source, driving,
                                           normalization_params=normalization_params, batch_size=batch_size):
            batch, _, height, _ = frames.shape
            prediction = out['prediction']
            l1.append((prediction - frames).abs().mean(dim=(1, 2, 3)).to('cpu', torch.float64).numpy())
            prediction = prediction.to('cpu', torch.float32).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
            strip.extend((255 * prediction).astype(np.uint8))
            # The grid has one row of images per frame: (B * H, n_columns * W, 3) -> B frames.
            grid = visualizer.visualize(driving=frames, source=source.expand(batch, -1, -1, -1), out=out)
            for frame in grid.reshape(batch, height, *grid.shape[1:]):
                writer.write(frame)
    write_png_atomic(png_path, np.concatenate(strip, axis=1))
    return np.concatenate(l1)


# ----------------------------------------------------------------------------------------------
# The animate mode of run.py
# ----------------------------------------------------------------------------------------------

def prefetched(dataset, count):
    """Yields dataset[0], ..., dataset[count - 1], reading the next item in a background thread while the
    caller works on the current one (video decoding overlaps the model). Errors are raised unchanged."""
    if count <= 0:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix='prefetch') as pool:
        pending = pool.submit(dataset.__getitem__, 0)
        for index in range(count):
            item = pending.result()
            if index + 1 < count:
                pending = pool.submit(dataset.__getitem__, index + 1)
            yield item


def load_weights(checkpoint, generator, kp_detector):
    """The original modes (re)load `checkpoint` into the two models. Here: None = the caller has loaded
    them already (run.py does, strictly, before calling the mode); a path or a loaded checkpoint dict
    is loaded strictly with modules.checkpoint.load_state (one-line CheckpointError on a mismatch)."""
    if checkpoint is not None:
        from modules.checkpoint import load_state
        load_state(checkpoint, {'generator': generator, 'kp_detector': kp_detector})


def animate(config, generator, kp_detector, checkpoint, log_dir, dataset, batch_size=None):
    """The animate mode of run.py, as the original: each (driving, source) pair of test videos animates
    frame 0 of the source video with the whole driving video.

    config: the loaded config (animate_params: num_pairs, format, normalization_params;
    visualizer_params). checkpoint: see `load_weights`. dataset: a test-mode FramesDataset; the pairs
    are PairedDataset(dataset, number_of_pairs=animate_params.num_pairs): the rows of
    dataset_params.pairs_list, or random pairs without one.

    Writes, for each pair, with result name '<driving name>-<source name>' (video names as the dataset
    lists them, extensions included):
        <log_dir>/animation/png/<result name>.png       the predicted frames side by side (H, T * W)
        <log_dir>/animation/<result name><format>       the visualisation of each frame (10 fps)
    Returns the result names, in pair order.
    """
    from frames_dataset import PairedDataset
    from logger import Visualizer

    animate_params = config['animate_params']
    out_dir = Path(log_dir) / 'animation'
    png_dir = out_dir / 'png'
    pairs = PairedDataset(initial_dataset=dataset, number_of_pairs=animate_params['num_pairs'])
    load_weights(checkpoint, generator, kp_detector)
    visualizer = Visualizer(**config['visualizer_params'])
    generator.eval()
    kp_detector.eval()
    png_dir.mkdir(parents=True, exist_ok=True)

    names = []
    for x in tqdm(prefetched(pairs, len(pairs)), total=len(pairs), desc='animate', unit='pair'):
        driving_video = torch.from_numpy(x['driving_video'])[None]  # (1, C, T, H, W)
        source_frame = torch.from_numpy(x['source_video'][:, 0])[None]  # (1, C, H, W): frame 0
        result_name = '-'.join([x['driving_name'], x['source_name']])
        render_video(generator, kp_detector, source_frame, driving_video, visualizer,
                     png_path=png_dir / f'{result_name}.png',
                     visualisation_path=out_dir / f'{result_name}{animate_params["format"]}',
                     normalization_params=animate_params['normalization_params'], batch_size=batch_size)
        names.append(result_name)
    log.info('animation: %d pairs written to %s', len(names), out_dir)
    return names
