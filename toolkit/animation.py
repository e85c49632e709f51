"""Animation: relative keypoint transfer (normalize_kp), the batched animation core shared with the
reconstruction mode (`animate_batches`, `render_video`), and the `animate` mode of run.py.

The original animated one driving frame at a time and re-encoded the source for each frame. Here the
source's keypoints and encoder features are computed once, and driving frames go through the
keypoint detector and the generator `batch_size` at a time (the source expanded to the batch). In
eval mode every module is per-sample, so the results equal the original's per-frame loop up to float
rounding (the tests hold the predictions to 1e-5 of the per-frame loop, and to the original's own
outputs within 1e-4). Several sources (the faces of one photo, toolkit.multi_face) go through together:
B driving frames x N sources per forward pass, each source with its own movement scale.
"""
import contextlib
import copy
import logging
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from modules.fileio import make_folder
from modules.inference import prepare_fast
from modules.util import kp_key, unwrap

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


def adapt_movement_scale_factors(kp_source, kp_driving_initial):
    """float64 (N,): for every source i of a batch, sqrt(hull area of kp_source[i]) / sqrt(hull area
    of kp_driving_initial[0]): each source's own scale (multi-face animation, where the sources are
    different faces driven by one video). Keypoint dicts of either family."""
    driving_area = convex_hull_area(kp_driving_initial[kp_key(kp_driving_initial)][0].detach().cpu().numpy())
    source_areas = [convex_hull_area(value) for value in kp_source[kp_key(kp_source)].detach().cpu().numpy()]
    return np.sqrt(source_areas) / np.sqrt(driving_area)


def adapt_movement_scale_factor(kp_source, kp_driving_initial):
    """sqrt(hull area of kp_source) / sqrt(hull area of kp_driving_initial), from batch element 0
    only (as the original; see adapt_movement_scale_factors for one factor per source)."""
    key = kp_key(kp_source)
    return adapt_movement_scale_factors({key: kp_source[key][:1]}, kp_driving_initial)[0]


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
    return relative_kp(kp_source, kp_driving, kp_driving_initial, scale, use_relative_movement,
                       use_relative_jacobian)


def relative_kp(kp_source, kp_driving, kp_driving_initial, scale=1, use_relative_movement=False,
                use_relative_jacobian=False):
    """normalize_kp with a given movement scale: a number, or a tensor (B, 1, 1) with one scale per
    batch element (each source's own, see adapt_movement_scale_factors). Batch-1 dicts broadcast."""
    kp_new = dict(kp_driving)
    if use_relative_movement:
        key = kp_key(kp_driving)
        kp_value_diff = (kp_driving[key] - kp_driving_initial[key]) * scale
        kp_new[key] = kp_value_diff + kp_source[key]
        if use_relative_jacobian and 'jacobian' in kp_driving:
            jacobian_diff = torch.matmul(kp_driving['jacobian'], torch.inverse(kp_driving_initial['jacobian']))
            kp_new['jacobian'] = torch.matmul(jacobian_diff, kp_source['jacobian'])
    return kp_new


# ----------------------------------------------------------------------------------------------
# The batched animation core (shared with the reconstruction mode, toolkit.reconstruction)
# ----------------------------------------------------------------------------------------------

def tile(value, batch):
    """(N, ...) sources -> (batch * N, ...), source n at index b * N + n (frame-major, no copy for N = 1)."""
    return value.unsqueeze(0).expand(batch, *value.shape).reshape(batch * value.shape[0], *value.shape[1:])


def _tile_kp(kp, batch):
    return {name: tile(value, batch) for name, value in kp.items()}


def tile_features(features, batch):
    """tile of an encoder output: one tensor (FOMM) or a list of per-level maps (TPSMM)."""
    if isinstance(features, (list, tuple)):
        return [tile(level, batch) for level in features]
    return tile(features, batch)


def _to_dtype(value, dtype):
    """A generator output (a tensor, or TPSMM's list of occlusion maps) in `dtype`."""
    if isinstance(value, (list, tuple)):
        return [item.to(dtype) for item in value]
    return value.to(dtype)


def _repeat_frames(frames, num_sources):
    """(B, ...) -> (B * N, ...), frame b at indices b * N .. b * N + N - 1."""
    return frames if num_sources == 1 else frames.repeat_interleave(num_sources, dim=0)


def _repeat_frames_kp(kp, num_sources):
    """_repeat_frames of every entry of a keypoint dict."""
    return {name: _repeat_frames(value, num_sources) for name, value in kp.items()}


def _frame_batches(video, batch_size):
    """(1, C, T, H, W) video -> (B, C, H, W) batches of consecutive frames, B <= batch_size."""
    for start in range(0, video.shape[2], batch_size):
        yield video[0, :, start:start + batch_size].transpose(0, 1)  # (B, C, H, W)


class Animator:
    """Animates one source image, or N sources at once (the faces of one photo), with batches of
    driving frames; the sources' keypoints and encoder features are computed once, here.

    source: (N, C, H, W) in [0, 1], any device/dtype (moved to the generator's); N = 1 is the
    original's single source. normalization_params: None = absolute keypoints (reconstruction); else
    normalize_kp's flags (Sec. 3.5), relative to kp_driving_initial: the first driving frame, unless
    `set_initial` chose another one. With adapt_movement_scale, each source gets its own scale
    (adapt_movement_scale_factors: its own keypoints' hull against the initial driving frame's), not
    batch element 0's as the original's normalize_kp would give every element of a batch.
    avd_network: TPSMM's animation via disentanglement instead: the keypoints the source is moved to are
    avd_network(kp_source, kp_driving) (normalization_params is then ignored).
    fast: a channels-last copy of the generator runs under bfloat16 (CPU) / float16 (CUDA) autocast,
    on x86 CPUs with its residual blocks in int8 (modules/inference.py); the keypoint detector stays
    float32 (its sharp softmax would make keypoints jitter).
    The generator is FOMM's OcclusionAwareGenerator or TPSMM's behind the same interface
    (modules.tpsmm.TpsGenerator); one with `uses_driving_image` (TPSMM's background motion) also gets
    the driving frames. The models should be in eval mode (train-mode batch norm would mix the frames
    of a batch).
    """

    def __init__(self, generator, kp_detector, source, normalization_params=None, fast=False, avd_network=None):
        self.generator, self.kp_detector = unwrap(generator), unwrap(kp_detector)
        self.avd_network = avd_network
        parameter = next(self.generator.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        if fast:  # a copy, so the caller's model keeps its layout, batch norms and dtype
            self.generator = prepare_fast(copy.deepcopy(self.generator), self._autocast_dtype())
        self.normalization_params = normalization_params
        self.fast = fast
        with torch.inference_mode():
            self.source = self._layout(source.to(self.device, self.dtype))
            self.kp_source = self.kp_detector(self.source)
            with self._autocast():
                self.source_features = self.generator.encode(self.source)  # once per source
        self.num_sources = self.source.shape[0]
        self.kp_driving_initial = None
        self.movement_scale = None  # (N, 1, 1), once kp_driving_initial is known

    def _autocast_dtype(self):
        return torch.float16 if self.device.type == 'cuda' else torch.bfloat16

    def _autocast(self):
        if not self.fast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype())

    def _layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.fast else x

    def keypoints(self, frames):
        """frames: (B, C, H, W) -> the keypoint detector's dict."""
        with torch.inference_mode():
            return self.kp_detector(frames.to(self.device, self.dtype))

    def set_initial(self, frame):
        """Measures the relative motion from `frame` (1, C, H, W) instead of the first driving frame."""
        self.kp_driving_initial = self.keypoints(frame)
        self.movement_scale = None

    def _relative(self, kp_source, kp_driving, batch):
        """kp_source, kp_driving: (B * N)-batch dicts -> normalize_kp's result, each source with its own
        movement scale."""
        params = self.normalization_params
        if self.kp_driving_initial is None:  # the first driving frame, as the original
            self.kp_driving_initial = {name: value[:1] for name, value in kp_driving.items()}
        scale = 1
        if params.get('adapt_movement_scale', False):
            if self.movement_scale is None:
                factors = adapt_movement_scale_factors(self.kp_source, self.kp_driving_initial)
                self.movement_scale = torch.tensor(factors, device=self.device,
                                                   dtype=kp_driving[kp_key(kp_driving)].dtype).view(-1, 1, 1)
            scale = tile(self.movement_scale, batch)  # (B * N, 1, 1)
        # kp_driving_initial (batch 1) broadcasts against the B * N elements
        return relative_kp(kp_source, kp_driving, self.kp_driving_initial, scale,
                           params.get('use_relative_movement', False), params.get('use_relative_jacobian', False))

    def motion(self, frames):
        """frames (B, C, H, W) on the model's device -> (kp_source, kp_driving, kp_target): the source's
        keypoints tiled to B * N, the frames' own (B) and the ones the generator moves the source to
        (B * N, frame-major; normalised with normalization_params, else kp_driving)."""
        batch = frames.shape[0]
        kp_driving = self.kp_detector(frames)
        kp_source = _tile_kp(self.kp_source, batch)
        kp_target = _repeat_frames_kp(kp_driving, self.num_sources)
        if self.avd_network is not None:
            kp_target = self.avd_network(kp_source, kp_target)
        elif self.normalization_params is not None:
            kp_target = self._relative(kp_source, kp_target, batch)
        return kp_source, kp_driving, kp_target

    def __call__(self, frames):
        """frames: (B, C, H, W) -> (frames on the model's device, out): the generator's dict without
        'sparse_deformed' (the original drops it before visualising; it is the largest output) plus
        'kp_source', 'kp_driving' (B) and, with normalization_params, 'kp_norm'. The other entries have
        batch B * N, frame-major: index b * N + n is driving frame b applied to source n (N = 1: B)."""
        with torch.inference_mode():
            frames = frames.to(self.device, self.dtype)
            batch = frames.shape[0]
            kp_source, kp_driving, kp_target = self.motion(frames)
            extra = {}
            if getattr(self.generator, 'uses_driving_image', False):
                extra['driving_image'] = self._layout(_repeat_frames(frames, self.num_sources))
            with self._autocast():
                out = self.generator(self._layout(tile(self.source, batch)), kp_driving=kp_target,
                                     kp_source=kp_source, source_features=tile_features(self.source_features, batch),
                                     **extra)
            out = {name: _to_dtype(value, self.dtype) for name, value in out.items()
                   if name not in ('sparse_deformed', 'warped_encoder_maps')}
            out['kp_source'] = kp_source
            out['kp_driving'] = kp_driving
            if self.normalization_params is not None or self.avd_network is not None:
                out['kp_norm'] = kp_target
        return frames, out


def to_tensor(images, device=None):
    """(N, H, W, 3) or (H, W, 3) float array in [0, 1] -> (N, 3, H, W) float32 tensor."""
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device)


def to_uint8(image):
    """float image in [0, 1] -> uint8, rounded (as the original's img_as_ubyte); uint8 is returned as is."""
    if image.dtype == np.uint8:
        return image
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def batched(iterable, size):
    """Lists of up to `size` consecutive items of `iterable`, read lazily."""
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


class ImageAnimator:
    """Animator for numpy images (the demo's): source_image (H, W, 3), or (N, H, W, 3) for N
    sources, float in [0, 1]; `set_initial(frame)` sets the frame the relative motion is measured
    from (default: the first driving frame); `__call__(frames (B, H, W, 3))` -> predictions
    (B * N, H, W, 3) float32 in [0, 1], frame-major (Animator.__call__). With `relative`, both the
    relative movement and the relative jacobian are used (as the original demo)."""

    def __init__(self, source_image, generator, kp_detector, relative=True, adapt_movement_scale=True, fast=False,
                 avd_network=None):
        normalization = dict(use_relative_movement=relative, use_relative_jacobian=relative,
                             adapt_movement_scale=adapt_movement_scale)
        self.core = Animator(generator, kp_detector, to_tensor(source_image), normalization, fast=fast,
                             avd_network=avd_network)
        self.device = self.core.device

    @property
    def kp_source(self):
        return self.core.kp_source

    def keypoints(self, frames):
        return self.core.keypoints(to_tensor(frames))

    def set_initial(self, frame):
        self.core.set_initial(to_tensor(frame))

    def predict(self, frames):
        """frames (B, H, W, 3) -> the generator's predictions, a (B * N, 3, H, W) tensor on the device."""
        return self.core(to_tensor(frames))[1]['prediction']

    def __call__(self, frames):
        return self.predict(frames).permute(0, 2, 3, 1).float().cpu().numpy()


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
    from toolkit.video_io import open_writer
    return open_writer(path, fps)


def render_video(generator, kp_detector, source, driving, visualizer, png_path, visualisation_path,
                 normalization_params=None, batch_size=None, fps=VISUALISATION_FPS, observe=None):
    """Animates one video with `animate_batches` and writes the original's two results for it:

    png_path: the predicted frames side by side, uint8 (H, T * W, 3) = (255 * prediction) truncated,
        as the original's png strip;
    visualisation_path: visualizer.visualize(driving=frame, source=source, out=out) of every frame (the
        original's columns without the sparse-deformed ones), encoded as frames come (see
        open_visualisation_writer) at `fps`.
    Both are written atomically. Returns float64 (T,): the L1 error of each frame, mean |prediction -
    driving| over its pixels in [0, 1] (the reconstruction loss; for animation only a diagnostic).
    observe: None, or called for every batch with (the png strip's frames uint8 (B, H, W, 3), the
    driving frames float32 (B, H, W, 3), their L1 (B,)), e.g. to compute metrics in the same pass.
    """
    from toolkit.logger import write_png_atomic

    strip, l1 = [], []
    with open_visualisation_writer(visualisation_path, fps) as writer:
        for frames, out in animate_batches(generator, kp_detector, source, driving,
                                           normalization_params=normalization_params, batch_size=batch_size):
            batch, _, height, _ = frames.shape
            prediction = out['prediction']
            l1.append((prediction - frames).abs().mean(dim=(1, 2, 3)).to('cpu', torch.float64).numpy())
            prediction = prediction.to('cpu', torch.float32).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
            strip.extend((255 * prediction).astype(np.uint8))
            if observe is not None:
                observe(np.stack(strip[-batch:]), frames.to('cpu', torch.float32).permute(0, 2, 3, 1).numpy(),
                        l1[-1])
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
    from toolkit.datasets import PairedDataset
    from toolkit.logger import Visualizer

    animate_params = config['animate_params']
    out_dir = Path(log_dir) / 'animation'
    png_dir = out_dir / 'png'
    pairs = PairedDataset(initial_dataset=dataset, number_of_pairs=animate_params['num_pairs'])
    load_weights(checkpoint, generator, kp_detector)
    visualizer = Visualizer(**config['visualizer_params'])
    generator.eval()
    kp_detector.eval()
    make_folder(png_dir)

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
