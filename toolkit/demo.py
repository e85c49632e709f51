"""The demo's job as a library: animate one source image with one driving video, streaming.

`animate_video(**options)` is what `python demo.py` runs (options named as its flags); the
original's importable API lives here too and is re-exported by demo.py:
`load_checkpoints(config_path, checkpoint_path, cpu=False)` and `make_animation(source_image,
driving_video, generator, kp_detector, relative=True, adapt_movement_scale=True, cpu=False)`, and for
TPSMM / CPABMM configs their original's `load_checkpoints` (returning (inpainting_network,
kp_detector, dense_motion_network, avd_network)) and `make_animation(..., device, mode='relative')`.
What differs between the motion families (the networks a demo loads, the motion options and modes)
comes from the family registry (modules.families).

The driving video is streamed: frames are decoded, animated in small batches and encoded as they go,
so memory does not grow with the video's length. The source's keypoints and encoder features are
computed once, not once per frame. Faces (toolkit.multi_face): the largest face found (every face
with multi_person) is cropped, animated and pasted back into the full-resolution source.
"""
import dataclasses
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from modules.build import build_models
from modules.checkpoint import load_state, read_checkpoint
from modules.config import load_config
from modules.errors import InputError, LimitError, OutputError
from modules.families import REGISTRY, family_of
from modules.fileio import check_output_path
from modules.inference import inference_copy, optimize_for_inference
from modules.limits import check_frame_pixels
from modules.util import kp_key, unwrap
from toolkit.animation import ImageAnimator, batched, convex_hull_area, default_batch_size, normalize_kp, to_uint8
from toolkit.datasets import read_image
from toolkit.devices import pick_device
from toolkit.faces import DETECTORS, PHOTO_DETECTOR, check_detector
from toolkit.multi_face import INCREASE, RATIO, FaceAnimator, check_increase, check_ratio, detect_faces
from toolkit.resize import resize_frame
from toolkit.video_io import (RESULT_SUFFIXES, VIDEO_SUFFIXES, VideoWriter, iter_video_frames, mux_audio, open_writer,
                              read_video_meta, temp_path_for)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / 'pretrained' / 'cartoon-64'
BUNDLED_DEFAULTS = {  # what a bare `python demo.py` uses
    'config': REPO / 'config' / 'cartoon-64.yaml',
    'checkpoint': BUNDLED / 'cartoon-64.pth.tar',
    'source_image': BUNDLED / 'source.png',
    'driving_video': BUNDLED / 'driving.mp4',
    'relative': True,
    'adapt_scale': True,
}
ORIGINAL_DEFAULTS = {  # the original demo's, kept when --config is given
    'checkpoint': 'vox-cpk.pth.tar',
    'source_image': 'sup-mat/source.png',
    'driving_video': 'driving.mp4',
    'relative': False,
    'adapt_scale': False,
}
PREVIEW_PANEL = 192  # minimum panel size of the preview, in pixels
FACE_CONFIG_WORDS = ('vox', 'nemo', 'face', 'cartoon')  # --face_detector auto: configs of face models
FACE_DETECTORS = ('auto',) + DETECTORS + ('none',)  # --face_detector's choices


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

def all_modes():
    """The --mode values of every registered family, in registration order."""
    return tuple(dict.fromkeys(mode for family in REGISTRY.values() for mode in family.modes))


def load_checkpoints(config_path, checkpoint_path, cpu=False, device=None):
    """Builds the demo's networks of a config (its family's demo_models), loads a checkpoint strictly
    and returns them in eval mode on the CPU (cpu=True) or CUDA (cpu may also be a device, as TPSMM's
    argument): FOMM: (generator, kp_detector); TPSMM / CPABMM: (inpainting_network, kp_detector,
    dense_motion_network, avd_network). A network the family marks optional that the checkpoint lacks
    (TPSMM's avd_network) is None, not left with random weights. device=: TPSMM's keyword."""
    device = pick_device(cpu if device is None else device, warn=True)
    config = load_config(config_path)
    family = family_of(config['model_params'])
    names = family.demo_models
    models = build_models(config['model_params'], names=names, device=device)
    checkpoint = read_checkpoint(checkpoint_path, map_location=device)
    models = family.without_missing(models, checkpoint)
    for name in [name for name, model in models.items() if model is None]:
        log.info('%s has no %s (optional): what needs it is not available', checkpoint_path, name)
    load_state(checkpoint, {name: model for name, model in models.items() if model is not None},
               source=str(checkpoint_path), config_path=str(config_path))
    return tuple(models[name].eval() if models[name] is not None else None for name in names)


# ----------------------------------------------------------------------------------------------
# Animation
# ----------------------------------------------------------------------------------------------

def make_animation(source_image, driving_video, *networks, batch_size=None, **options):
    """The original's API: source_image (H, W, 3) and driving_video (list of (H, W, 3)) floats in [0, 1]
    -> list of predicted frames (H, W, 3) float32.

    FOMM: make_animation(source_image, driving_video, generator, kp_detector, relative=True,
    adapt_movement_scale=True, cpu=False); kp_driving_initial is the first driving frame; with
    `relative`, both the relative movement and the relative jacobian are used (as the original).
    `cpu` is kept for compatibility: the models' device is used.
    TPSMM / CPABMM: make_animation(source_image, driving_video, inpainting_network, kp_detector,
    dense_motion_network, avd_network, device, mode='relative'), positional or by those names.
    The family is the one whose original make_animation takes a network of the class given
    (Family.api_network; other generators go the first registered family's, FOMM's, way); its
    `from_api` reads the arguments.

    The models run as demo.py runs them: eval-mode models through modules.inference.inference_copy
    (batch norms folded, faster convolutions; the same frames within float rounding), a copy made on
    the first call and reused while the weights are unchanged; the models given, and their
    state_dict(), are not changed."""
    given = [unwrap(n) for n in (*networks, *options.values()) if isinstance(n, torch.nn.Module)]
    family = next((f for f in REGISTRY.values() if any(isinstance(n, f.api_network) for n in given)),
                  next(iter(REGISTRY.values())))
    copies = [inference_copy(n) if isinstance(n, torch.nn.Module) else n for n in networks]
    options = {k: inference_copy(v) if isinstance(v, torch.nn.Module) else v for k, v in options.items()}
    generator, kp_detector, motion = family.from_api(*copies, **options)
    animator = ImageAnimator(source_image, generator, kp_detector, **motion)
    predictions = []
    for frames in batched(driving_video, batch_size or default_batch_size(animator.device)):
        predictions.extend(animator(np.stack(frames)))
    return predictions


def relative_kp(kp_source, kp_driving, kp_driving_initial):
    """TPSMM's demo.relative_kp: the driving keypoints moved relative to kp_driving_initial and
    applied to the source, the movement always scaled by sqrt(hull area of kp_source) / sqrt(hull
    area of kp_driving_initial) (batch element 0): {'fg_kp': (B, K, 2)}, a new dict. (FOMM's
    equivalent with its options is toolkit.animation.normalize_kp.)"""
    return normalize_kp(kp_source, kp_driving, kp_driving_initial, adapt_movement_scale=True,
                        use_relative_movement=True)


def normalized_kp(kp_value):
    """Keypoints (K, 2) centred and scaled by sqrt(hull area): comparable across frames of any size."""
    centred = kp_value - kp_value.mean(axis=0, keepdims=True)
    area = convex_hull_area(kp_value)
    return centred / np.sqrt(area) if area > 0 else centred


def find_best_frame(source, driving, cpu=False):
    """The original's find_best_frame(source, driving, cpu=False): the index of the driving frame whose
    68 face landmarks, normalised as the original (normalized_kp: centred, divided by the square root
    of their convex-hull area), are closest (sum of squared differences) to the source's: the best
    starting pose for relative animation. The landmarks are dlib's (toolkit.dlib_faces; the original
    used face_alignment's, the same 68-point scheme); frames without a face are skipped. None where
    the original would fail: no face in the source or in any driving frame. source (H, W, 3), driving
    an iterable of frames, floats in [0, 1] or uint8; `cpu` is kept for compatibility (dlib runs on
    the CPU)."""
    from toolkit import dlib_faces
    reference = dlib_faces.largest_face_landmarks(source)
    if reference is None:
        return None
    reference = normalized_kp(reference)
    best, best_distance = None, float('inf')
    for index, frame in enumerate(tqdm(driving, desc='--find_best_frame', unit='frame', leave=False)):
        points = dlib_faces.largest_face_landmarks(frame)
        if points is None:
            continue
        distance = float(((normalized_kp(points) - reference) ** 2).sum())
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def find_best_frame_by_keypoints(animator, frames, batch_size=1):
    """Index of the driving frame whose model keypoints, normalised (normalized_kp), are closest (sum of
    squared distances) to the source's: find_best_frame's criterion with the animation model's own
    keypoints, for models of other objects than faces and videos where no face is found."""
    key = kp_key(animator.kp_source)
    source = normalized_kp(animator.kp_source[key][0].float().cpu().numpy())
    best, best_distance, index = 0, float('inf'), 0
    for batch in batched(frames, batch_size):
        values = animator.keypoints(np.stack(batch))[key].float().cpu().numpy()
        for value in values:
            distance = float(((normalized_kp(value) - source) ** 2).sum())
            if distance < best_distance:
                best, best_distance = index, distance
            index += 1
    return best


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def load_source_image(path):
    """Any image file (gray, RGBA, 16-bit, any size) -> (H, W, 3) float32 in [0, 1] at its own size,
    with the same conversions as the dataset's frames (toolkit.datasets.read_image)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f'source image {path} not found: check the path')
    try:
        return read_image(path)
    except LimitError:
        raise
    except InputError as e:
        raise InputError(f'{path}: cannot read it as an image ({e}); use a PNG or JPEG') from e


def fit_source_image(image, size, path):
    """The whole source image resized to the model's `size` (with a note if that changes it)."""
    if image.shape[:2] != tuple(size):
        log.info('source image %s is %dx%d: resized to %dx%d', path, image.shape[1], image.shape[0], size[1], size[0])
    return resize_frame(image, size)


def read_source_image(path, size):
    """load_source_image, resized to `size` (h, w) as the original demo does."""
    return fit_source_image(load_source_image(path), size, path)


def side_by_side(images, min_size=PREVIEW_PANEL):
    """[(h, w, 3) float in [0, 1], ...] -> one uint8 row, each panel scaled up by the integer factor
    (nearest pixel, no blur) that makes it at least `min_size` pixels high, with 4-pixel white gaps;
    panels shorter than the tallest are padded with white below."""
    panels = [np.repeat(np.repeat(to_uint8(image), factor, axis=0), factor, axis=1)
              for image in images for factor in [max(1, -(-min_size // image.shape[0]))]]
    height = max(panel.shape[0] for panel in panels)
    panels = [np.pad(panel, ((0, height - panel.shape[0]), (0, 0), (0, 0)), constant_values=255) for panel in panels]
    gap = np.full((height, 4, 3), 255, np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)


def even_size(frame):
    """(H, W, 3) -> the same frame with one row / column of its edge pixels repeated at the bottom /
    right where H / W is odd: H.264 (yuv420p) needs even sizes. Every original pixel keeps its place."""
    return np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode='edge')


def driving_frames(path, size, start=0):
    """The frames of a video from `start` on, streamed, as (h, w, 3) float32 in [0, 1] at size (h, w)."""
    for frame in iter_video_frames(path, start=start):
        yield resize_frame(frame.astype(np.float32) / 255, size)


def face_detector_for(opt):
    """One of toolkit.faces.DETECTORS, or 'none': --face_detector as given, where auto = a face
    detector with --multi_person or for a face model (the config's file name contains one of
    FACE_CONFIG_WORDS), else none. auto's detector is PHOTO_DETECTOR (measured on photographs:
    docs/faces.md), or lbp when that needs dlib and dlib is not installed, and for cartoon models:
    dlib's detectors find some drawn faces and miss others, the LBP cascade none (their faces are
    given as boxes, from part masks)."""
    if opt.face_detector != 'auto':
        return opt.face_detector
    name = Path(opt.config).name.lower()
    if not (opt.multi_person or any(word in name for word in FACE_CONFIG_WORDS)):
        return 'none'
    from toolkit import dlib_faces
    if 'cartoon' in name or not (PHOTO_DETECTOR == 'lbp' or dlib_faces.available()):
        return 'lbp'
    return PHOTO_DETECTOR


def check_options(opt):
    """Raises InputError for option values that cannot work, before any file is read."""
    if opt.best_frame is not None and opt.best_frame < 0:
        raise InputError('--best_frame must be >= 0')
    check_ratio(opt.ratio, '--ratio')
    check_increase(opt.increase, '--increase')
    if opt.backend not in BACKENDS:
        raise InputError(f'--backend must be one of {", ".join(BACKENDS)}, got {opt.backend!r}')
    if opt.backend in ONNX_BACKENDS and not opt.onnx:
        raise InputError(f'--backend {opt.backend} needs --onnx DIR, a folder written by export.py')
    if opt.backend in ONNX_BACKENDS and opt.fast:
        raise InputError('--fast is the torch backend\'s (bfloat16 and int8 in torch); with ONNX Runtime use '
                         '--backend onnxruntime-int8 (export.py --int8)')
    if opt.backend in ONNX_BACKENDS and opt.mode == 'avd':
        raise InputError('--mode avd runs the AVD network, which export.py does not export: use --mode standard or '
                         'relative with an onnxruntime backend')
    if opt.onnx and opt.backend not in ONNX_BACKENDS:
        raise InputError(f'--onnx DIR goes with --backend {" or ".join(ONNX_BACKENDS)}')
    if opt.face_detector not in FACE_DETECTORS:
        raise InputError(f'--face_detector must be one of {", ".join(FACE_DETECTORS)}, got {opt.face_detector!r}')
    if opt.multi_person and opt.face_detector == 'none':
        raise InputError('--multi_person needs face detection: drop --face_detector none (or give a detector: '
                         f'{", ".join(DETECTORS)})')
    if opt.face_detector in DETECTORS:
        check_detector(opt.face_detector)  # a missing dlib: one line now, not after the model is loaded


def choose_faces(opt, image, detector):
    """The face boxes of the full-resolution source `image` to animate (all with --multi_person,
    else the largest), or None: no detection, or no face found (the whole image is animated)."""
    if detector == 'none':
        return None
    boxes = detect_faces(image, detector=detector)
    if not len(boxes):
        log.info('no face found in %s: animating the whole image instead (detector: %s)', opt.source_image, detector)
        return None
    if opt.multi_person:
        log.info('%d face(s) found in %s by the %s detector: animating all of them together', len(boxes),
                 opt.source_image, detector)
        return boxes
    log.info('%d face(s) found in %s by the %s detector: animating the largest (--multi_person animates all)',
             len(boxes), opt.source_image, detector)
    return boxes[:1]


def make_animator(opt, image, size, generator, kp_detector, motion):
    """(animator, source shown in the preview) for the full-resolution source `image`: a FaceAnimator
    that pastes the animated faces back into it, or, without faces, an ImageAnimator of the whole
    image resized to the model's `size`. motion: the animators' motion options (Family.motion)."""
    detector = face_detector_for(opt)
    if opt.face_detector == 'auto' and not opt.multi_person and image.shape[:2] == tuple(size):
        detector = 'none'  # already the model's frame size: a prepared crop, animated whole
    boxes = choose_faces(opt, image, detector)
    if boxes is None:
        source_image = fit_source_image(image, size, opt.source_image)
        return ImageAnimator(source_image, generator, kp_detector, fast=opt.fast, **motion), source_image
    image = to_uint8(image)  # what the video holds; a quarter of the memory per frame
    animator = FaceAnimator(image, boxes, generator, kp_detector, size, ratio=opt.ratio, increase=opt.increase,
                            fast=opt.fast, **motion)
    log.info('face crops (left, top, width, height): %s, pasted back with --ratio %g',
             ', '.join(map(str, animator.crops)), opt.ratio)
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        log.info('the source image is %dx%d: the video is %dx%d (its last column / row repeated; H.264 needs even '
                 'sizes)', width, height, width + width % 2, height + height % 2)
    return animator, image


def choose_best_frame(opt, image, size, animator, batch_size):
    """--find_best_frame: for a face model (face_detector_for) with the dlib face tools installed, the
    original's criterion on face landmarks (find_best_frame, the full-resolution source `image`
    against the driving frames at the model's `size`); else, or when no face is found, the
    criterion on the model's keypoints. Logs which one chose the frame."""
    from toolkit import dlib_faces
    if face_detector_for(opt) != 'none' and dlib_faces.available():
        best = find_best_frame(image, driving_frames(opt.driving_video, size))
        if best is not None:
            log.info('best frame: %d (closest face landmarks)', best)
            return best
        log.info('--find_best_frame: no face found in the source or the driving video; using the model\'s keypoints')
    best = find_best_frame_by_keypoints(animator, driving_frames(opt.driving_video, size), batch_size)
    log.info('best frame: %d (closest model keypoints)', best)
    return best


def load_networks(config, config_path, checkpoint_path, device):
    """(family, {name: network}) of the demo's networks (Family.demo_models) of the loaded `config`
    (read from config_path) in eval mode, rewritten for inference (modules.inference; ours to change:
    they are never saved)."""
    family = family_of(config['model_params'])
    models = dict(zip(family.demo_models, load_checkpoints(config_path, checkpoint_path, cpu=device)))
    for model in models.values():
        if model is not None:
            optimize_for_inference(model)
    return family, models


def check_files(*flags):
    """(flag, path or None) pairs: InputError naming the first given path that is not a file."""
    for flag, path in flags:
        if path is not None and not Path(path).is_file():
            raise InputError(f'{flag} {path} not found: check the path')


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What `python demo.py` takes, named as its flags (see its --help); None: resolved by
    resolve_defaults (the bundled model's defaults without a config, else the original demo's)."""
    config: str = None
    checkpoint: str = None
    source_image: str = None
    driving_video: str = None
    result_video: str = 'result.mp4'
    preview: str = None
    relative: bool = None
    adapt_scale: bool = None
    mode: str = None
    find_best_frame: bool = False
    best_frame: int = None
    cpu: bool = False
    audio: bool = False
    batch_size: int = None
    multi_person: bool = False
    face_detector: str = 'auto'
    ratio: float = RATIO
    increase: float = INCREASE
    fast: bool = False
    backend: str = 'torch'
    onnx: str = None


# --backend: the animation core's networks in torch, or export.py's graphs (int8: its frame_int8.onnx)
ONNX_BACKENDS = {'onnxruntime': False, 'onnxruntime-int8': True}
BACKENDS = ('torch', *ONNX_BACKENDS)


def resolve_defaults(opt):
    """DemoOptions with the unset values filled: the bundled model's defaults (and a preview beside
    the result) without a config, else the original demo's."""
    bundled = opt.config is None
    filled = {name: str(value) if isinstance(value, Path) else value
              for name, value in (BUNDLED_DEFAULTS if bundled else ORIGINAL_DEFAULTS).items()
              if getattr(opt, name) is None}
    if bundled and opt.preview is None:
        result = Path(opt.result_video)
        filled['preview'] = str(result.with_name(result.stem + '-preview.gif'))
    return dataclasses.replace(opt, **filled)


def animate_video(**options):
    """`python demo.py` as a function: options named as its flags (DemoOptions) -> the paths written
    (the result video, and the preview if one was asked for)."""
    opt = resolve_defaults(DemoOptions(**options))
    make_demo(opt)
    return [Path(path) for path in (opt.result_video, opt.preview) if path]


def make_demo(opt):
    """Runs the demo for resolved DemoOptions (or any object with those attributes); returns the
    result path."""
    check_options(opt)
    check_files(('--config', opt.config), ('--checkpoint', opt.checkpoint), ('--source_image', opt.source_image),
                ('--driving_video', opt.driving_video))
    meta = read_video_meta(opt.driving_video)
    check_frame_pixels(*meta['size'], f'each frame of {opt.driving_video}')
    config = load_config(opt.config)
    check_outputs(opt.result_video, opt.preview)
    size = tuple(config['dataset_params']['frame_shape'][:2])
    image = load_source_image(opt.source_image)
    if opt.backend in ONNX_BACKENDS:
        from toolkit.onnx_runtime import onnx_networks
        family, models = family_of(config['model_params']), {}
        generator, kp_detector = onnx_networks(opt.onnx, opt.config, opt.checkpoint, int8=ONNX_BACKENDS[opt.backend])
    else:
        family, models = load_networks(config, opt.config, opt.checkpoint, pick_device(opt.cpu))
        generator, kp_detector = family.animation(models)
    motion = family.motion(opt.mode, opt.relative, opt.adapt_scale, models.get('avd_network'))
    animator, source_image = make_animator(opt, image, size, generator, kp_detector, motion)

    batch_size = opt.batch_size or default_batch_size(animator.device, opt.fast)
    best = opt.best_frame
    if best is None and opt.find_best_frame:
        best = choose_best_frame(opt, image, size, animator, batch_size)
    if best is not None:
        # The original animates frames best..0 and best..end separately, both relative to frame `best`;
        # one pass in natural order with that initial frame gives the same frames.
        initial = next(driving_frames(opt.driving_video, size, start=best), None)
        if initial is None:
            raise InputError(f'--best_frame {best} is past the end of {opt.driving_video}')
        animator.set_initial(initial)

    with open_result(opt.result_video, meta, opt.preview, opt.driving_video if opt.audio else None) as (
            writer, preview, progress):
        for frames in batched(driving_frames(opt.driving_video, size), batch_size):
            for driving, prediction in zip(frames, animator(np.stack(frames))):
                writer.write(even_size(to_uint8(prediction)))
                if preview is not None:
                    preview.write(even_size(side_by_side([source_image, driving, prediction])))
            progress.update(len(frames))
    return Path(opt.result_video)


def check_outputs(result_video, preview=None):
    """The toolkit's output rule (modules.fileio.check_output_path), before any work: the folders of
    --result_video and --preview must exist or be creatable (the writers create them) and be
    writable, neither path may be a folder, and their types must be ones the writers produce.
    Raises OutputError."""
    check_output_path(result_video, '--result_video', VIDEO_SUFFIXES)
    if preview:
        check_output_path(preview, '--preview', RESULT_SUFFIXES)
        if Path(preview).resolve() == Path(result_video).resolve():
            raise OutputError(f'--preview {preview} is the same file as --result_video: give another name')


@contextmanager
def open_result(result_video, meta, preview=None, audio_source=None, desc='animating'):
    """(writer, preview writer or None, progress bar) for a result video with the fps of the input
    video's `meta` (video_io.read_video_meta). Both files are written to temporaries, and replace
    their targets only when both encoders succeeded and both files read back whole: on any error
    (disk full, encoder failure, Ctrl-C) neither target is touched. With `audio_source`, the
    finished video gets that file's audio (muxed from a silent temporary)."""
    result = Path(result_video)
    silent = temp_path_for(result.with_name(result.stem + '-video' + result.suffix)) if audio_source else result
    writers = [VideoWriter(silent, fps=meta['fps'])] + ([open_writer(preview, meta['fps'])] if preview else [])
    progress = tqdm(total=meta['nframes'] or None, desc=desc, unit='frame')
    try:
        try:
            yield writers[0], writers[1] if preview else None, progress
        finally:
            progress.close()
        for writer in writers:
            writer.finish()
        writers[0].commit()
        if audio_source:
            mux_audio(silent, audio_source, result)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    finally:
        if audio_source:
            silent.unlink(missing_ok=True)
    if preview:
        writers[1].commit()


# ----------------------------------------------------------------------------------------------
# What the model tracks: its keypoints drawn on the source and on the driving video
# ----------------------------------------------------------------------------------------------

KEYPOINT_VIEW = 256  # the keypoint views are drawn at least this large, so small models' frames stay legible


def draw_keypoints(config, checkpoint, source_image, driving_video, image_out, video_out, cpu=False, batch_size=None):
    """The model's keypoints as the original's Visualizer draws them (visualizer_params): on the source
    image (written to image_out, a PNG) and on every driving frame (video_out, an mp4 at the driving
    video's fps), each at the model's frame size scaled up to at least KEYPOINT_VIEW pixels. Returns
    the two paths."""
    from toolkit.logger import Visualizer, write_png_atomic

    check_files(('--config', config), ('--checkpoint', checkpoint), ('--source_image', source_image),
                ('--driving_video', driving_video))
    check_output_path(image_out, 'image_out', ('.png',))
    check_output_path(video_out, 'video_out', VIDEO_SUFFIXES)
    meta = read_video_meta(driving_video)
    check_frame_pixels(*meta['size'], f'each frame of {driving_video}')
    loaded = load_config(config)
    size = tuple(loaded['dataset_params']['frame_shape'][:2])
    view = tuple(max(1, round(s * max(1.0, KEYPOINT_VIEW / min(size)))) for s in size)
    visualizer = Visualizer(**loaded['visualizer_params'])
    family, models = load_networks(loaded, config, checkpoint, pick_device(cpu))
    _, kp_detector = family.animation(models)
    device = next(kp_detector.parameters()).device

    @torch.inference_mode()
    def drawn(frames):
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(device)
        kp = kp_detector(x)
        kp = kp[kp_key(kp)].float().cpu().numpy()
        return [to_uint8(visualizer.draw_image_with_kp(resize_frame(f, view), k)) for f, k in zip(frames, kp)]

    write_png_atomic(image_out, drawn([read_source_image(source_image, size)])[0])
    with open_result(video_out, meta, desc='keypoints') as (writer, _, progress):
        for frames in batched(driving_frames(driving_video, size), batch_size or default_batch_size(device)):
            for frame in drawn(frames):
                writer.write(even_size(frame))
            progress.update(len(frames))
    return [Path(image_out), Path(video_out)]
