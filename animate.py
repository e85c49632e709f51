"""Animation: relative keypoint transfer (normalize_kp), the batched animation core shared with the
reconstruction mode (`animate_batches`, `render_video`), and the `animate` mode of run.py.

The original animated one driving frame at a time and re-encoded the source for each frame. Here the
source's keypoints and encoder features are computed once, and driving frames go through the
keypoint detector and the generator `batch_size` at a time (the source expanded to the batch). In
eval mode every module is per-sample, so the results equal the original's per-frame loop up to float
rounding (the tests hold the predictions to 1e-5 of the per-frame loop, and to the original's own
outputs within 1e-4).
"""
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from modules.util import unwrap

log = logging.getLogger(__name__)

BATCH_SIZE = 8  # driving frames per forward pass
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


def animate_batches(generator, kp_detector, source, driving, normalization_params=None, batch_size=BATCH_SIZE):
    """Animates `source` with every frame of `driving`, one batch of frames per forward pass.

    source: (1, C, H, W) in [0, 1]. driving: a (1, C, T, H, W) video in [0, 1], cut into batches of
    `batch_size` frames, or an iterable of (B, C, H, W) frame batches (e.g. decoded while animating),
    each one forward pass. Any device and dtype: inputs are moved to the generator's.

    normalization_params: None = absolute keypoints, the reconstruction mode:
        generator(source, kp_source=kp_detector(source), kp_driving=kp_detector(driving)).
    A dict of normalize_kp's flags = the animate mode (Sec. 3.5): the generator gets
        kp_norm = normalize_kp(kp_source, kp_driving, kp_driving_initial, **normalization_params)
    where kp_driving_initial holds the keypoints of the first driving frame.

    Yields (driving, out) per batch: the (B, C, H, W) driving frames on the generator's device, and
    the generator's output dict without 'sparse_deformed' (the original drops it before visualising;
    it is the largest output) plus 'kp_source' (expanded to B), 'kp_driving' and, with
    normalization_params, 'kp_norm'. The source's keypoints and encoder features are computed once.
    The models should be in eval mode (train-mode batch norm would mix the frames of a batch); the
    work runs under torch.inference_mode(), which is not left on while the caller holds a batch.
    """
    generator, kp_detector = unwrap(generator), unwrap(kp_detector)
    parameter = next(generator.parameters())
    device, dtype = parameter.device, parameter.dtype
    if torch.is_tensor(driving):
        driving = _frame_batches(driving, batch_size)
    with torch.inference_mode():
        source = source.to(device, dtype)
        kp_source = kp_detector(source)
        source_features = generator.encode(source)  # (1, C', H / 2^n, W / 2^n), once per source
    kp_driving_initial = None
    for frames in driving:
        with torch.inference_mode():
            frames = frames.to(device, dtype)
            batch = frames.shape[0]
            kp_driving = kp_detector(frames)
            if normalization_params is None:
                kp_target = kp_driving
            else:
                if kp_driving_initial is None:  # the first driving frame, as the original
                    kp_driving_initial = {name: value[:1] for name, value in kp_driving.items()}
                # kp_source and kp_driving_initial (batch 1) broadcast against the B frames
                kp_target = normalize_kp(kp_source, kp_driving, kp_driving_initial, **normalization_params)
            kp_source_batch = _expand_kp(kp_source, batch)
            out = generator(source.expand(batch, -1, -1, -1), kp_driving=kp_target, kp_source=kp_source_batch,
                            source_features=source_features.expand(batch, -1, -1, -1))
            out.pop('sparse_deformed', None)
            out['kp_source'] = kp_source_batch
            out['kp_driving'] = kp_driving
            if normalization_params is not None:
                out['kp_norm'] = kp_target
        yield frames, out


class GifWriter:
    """Collects uint8 (H, W, 3) frames into a looping GIF at `fps` (imageio's Pillow plugin, which holds
    the frames until the end); the file is written to a temp name and renamed onto `path` only when
    the block ends without an error. Same interface as video_io.VideoWriter."""

    def __init__(self, path, fps):
        from video_io import temp_path_for
        self.path = Path(path)
        self.fps = fps
        self.tmp = temp_path_for(self.path)
        self.frames = 0
        self._file = None

    def __enter__(self):
        return self

    def write(self, frame):
        if self._file is None:
            import imageio.v3 as iio
            self._file = iio.imopen(self.tmp, 'w', extension='.gif')
        self._file.write(np.ascontiguousarray(frame, dtype=np.uint8), duration=1000 / self.fps, loop=0)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb):
        from modules.errors import InputError
        try:
            if self._file is not None:
                self._file.close()
            if exc_type is None:
                if self.frames == 0:
                    raise InputError(f'no frame to write to {self.path}: the driving video is empty')
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return False


def open_visualisation_writer(path, fps=VISUALISATION_FPS):
    """A streaming, atomic writer for `path`: GifWriter for .gif, else video_io.VideoWriter (H.264 in the
    container its extension names, e.g. .mp4)."""
    if str(path).lower().endswith('.gif'):
        return GifWriter(path, fps)
    from video_io import VideoWriter
    return VideoWriter(path, fps=fps)


def render_video(generator, kp_detector, source, driving, visualizer, png_path, visualisation_path,
                 normalization_params=None, batch_size=BATCH_SIZE, fps=VISUALISATION_FPS):
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


def animate(config, generator, kp_detector, checkpoint, log_dir, dataset, batch_size=BATCH_SIZE):
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
