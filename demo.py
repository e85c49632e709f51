"""Animate one source image with one driving video:

    python demo.py --config config/vox-256.yaml --checkpoint vox-cpk.pth.tar \\
        --source_image source.png --driving_video driving.mp4 --result_video result.mp4 --relative --adapt_scale

Without --config it runs the bundled model (pretrained/cartoon-64/, trained by this repository) on its
sample source image and driving video, with --relative --adapt_scale, and also writes a side-by-side
source | driving | result preview: `python demo.py` alone works offline out of the box.

Importable as the original: `load_checkpoints(config_path, checkpoint_path, cpu=False)` and
`make_animation(source_image, driving_video, generator, kp_detector, relative=True,
adapt_movement_scale=True, cpu=False)` keep their signatures and return values.

TPSMM and CPABMM configs (config/tpsmm-*.yaml, config/cpabmm-*.yaml) work too, with TPSMM's own API
and modes: `load_checkpoints`
returns (inpainting_network, kp_detector, dense_motion_network, avd_network) and
`make_animation(source_image, driving_video, inpainting_network, kp_detector, dense_motion_network,
avd_network, device, mode='relative')` as TPSMM's demo.py; `--mode standard|relative|avd` on the
command line (default relative).

Inside, the driving video is streamed: frames are decoded, animated in small batches and encoded as
they go, so memory does not grow with the video's length. The source's keypoints and encoder
features are computed once, not once per frame.

Faces (multi_face.py): with --face_detector lbp (auto picks it for --multi_person and for configs
named like a face model: vox, nemo, face, cartoon, unless the source already has the model's frame
size) the source image keeps its full resolution: the
largest face found (every face with --multi_person) is cropped, animated and pasted back with a
soft mask (--ratio, --increase); the result has the source's size (made even for H.264 by repeating
its last column / row). No face found: the whole image is animated as without detection, with a note.
"""
import argparse
import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import animate
from animate import ImageAnimator as Animator, batched, convex_hull_area, default_batch_size, to_uint8
from modules.build import build_models
from modules.checkpoint import load_state
from modules.config import load_config, model_family
from modules.errors import InputError, LimitError, OutputError, exit_status, stop_on_sigterm
from modules.fileio import check_output_path
from modules.limits import LIMITS_HELP, check_frame_pixels
from modules.inference import inference_copy, optimize_for_inference
from multi_face import INCREASE, RATIO, FaceAnimator, check_increase, check_ratio, detect_faces

log = logging.getLogger('demo')

BUNDLED = Path(__file__).resolve().parent / 'pretrained' / 'cartoon-64'
BUNDLED_DEFAULTS = {  # what a bare `python demo.py` uses
    'config': Path(__file__).resolve().parent / 'config' / 'cartoon-64.yaml',
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
MODES = ('standard', 'relative', 'avd')  # TPSMM's demo modes


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

def pick_device(cpu=False):
    """cpu=False asks for CUDA; without a CUDA device it falls back to the CPU with a warning. A
    torch.device or device string (TPSMM's `device` argument) is used as it is."""
    if isinstance(cpu, (torch.device, str)):
        return torch.device(cpu)
    if cpu:
        return torch.device('cpu')
    if torch.cuda.is_available():
        return torch.device('cuda')
    warnings.warn('no CUDA device found: running on the CPU (pass cpu=True / --cpu to silence this)', stacklevel=3)
    return torch.device('cpu')


TPS_DEMO_MODELS = ('inpainting_network', 'kp_detector', 'dense_motion_network', 'avd_network')


def load_checkpoints(config_path, checkpoint_path, cpu=False, device=None):
    """Builds the models of a config, loads a checkpoint strictly and returns them in eval mode on the
    CPU (cpu=True) or CUDA (cpu may also be a device, as TPSMM's argument):
    FOMM: (generator, kp_detector);
    TPSMM: (inpainting_network, kp_detector, dense_motion_network, avd_network), avd_network None when
    the checkpoint has none (TPSMM's would silently keep random weights). device=: TPSMM's keyword."""
    device = pick_device(cpu if device is None else device)
    config = load_config(config_path)
    tps = model_family(config['model_params']) == 'tps'  # TPSMM or CPABMM
    names = TPS_DEMO_MODELS if tps else ('generator', 'kp_detector')
    models = build_models(config['model_params'], names=names, device=device)
    from modules.checkpoint import read_checkpoint
    checkpoint = read_checkpoint(checkpoint_path, map_location=device)
    if tps and checkpoint.get('avd_network') is None:
        log.info('%s has no avd_network (trained with run.py --mode train_avd): --mode avd is not available',
                 checkpoint_path)
        models['avd_network'] = None
    load_state(checkpoint, {name: model for name, model in models.items() if model is not None},
               source=str(checkpoint_path), config_path=str(config_path))
    return tuple(models[name].eval() if models[name] is not None else None for name in names)


# ----------------------------------------------------------------------------------------------
# Animation core
# ----------------------------------------------------------------------------------------------

def make_animation(source_image, driving_video, generator, kp_detector, relative=True, adapt_movement_scale=True,
                   cpu=False, batch_size=None, mode='relative', dense_motion_network=None, avd_network=None,
                   device=None):
    """The original's API: source_image (H, W, 3) and driving_video (list of (H, W, 3)) floats in [0, 1]
    -> list of predicted frames (H, W, 3) float32. kp_driving_initial is the first driving frame; with
    `relative`, both the relative movement and the relative jacobian are used (as the original).
    `cpu` is kept for compatibility: the models' device is used.

    TPSMM's call works too: make_animation(source_image, driving_video, inpainting_network, kp_detector,
    dense_motion_network, avd_network, device, mode='relative') (the positions of relative,
    adapt_movement_scale and cpu then hold dense_motion_network, avd_network and the device; TPSMM's
    keyword names dense_motion_network=, avd_network=, device= work too).

    The models run as demo.py runs them: eval-mode models through modules.inference.inference_copy
    (batch norms folded, faster convolutions; the same frames within float rounding), a copy made on
    the first call and reused while the weights are unchanged; the models given, and their
    state_dict(), are not changed."""
    from modules.tpsmm import InpaintingNetwork
    if isinstance(generator, InpaintingNetwork):
        dense_motion_network = dense_motion_network if dense_motion_network is not None else relative
        if avd_network is None and not isinstance(adapt_movement_scale, bool):
            avd_network = adapt_movement_scale
        generator, motion = tps_motion(inference_copy(generator), inference_copy(dense_motion_network), avd_network,
                                       mode)
        animator = Animator(source_image, generator, inference_copy(kp_detector), **motion)
    else:
        animator = Animator(source_image, inference_copy(generator), inference_copy(kp_detector), relative,
                            adapt_movement_scale)
    predictions = []
    for frames in batched(driving_video, batch_size or default_batch_size(animator.device)):
        predictions.extend(animator(np.stack(frames)))
    return predictions


def relative_kp(kp_source, kp_driving, kp_driving_initial):
    """TPSMM's demo.relative_kp: the driving keypoints moved relative to kp_driving_initial and
    applied to the source, the movement always scaled by sqrt(hull area of kp_source) / sqrt(hull
    area of kp_driving_initial) (batch element 0): {'fg_kp': (B, K, 2)}, a new dict. (FOMM's
    equivalent with its options is animate.normalize_kp.)"""
    return animate.normalize_kp(kp_source, kp_driving, kp_driving_initial, adapt_movement_scale=True,
                                use_relative_movement=True)


def tps_motion(inpainting_network, dense_motion_network, avd_network=None, mode='relative'):
    """TPSMM's networks and demo mode -> (generator, motion options of ImageAnimator / FaceAnimator):
    'standard' = absolute keypoints, 'relative' = relative motion always scaled by the keypoints'
    convex-hull sizes (as TPSMM), 'avd' = avd_network re-poses the source's keypoints."""
    from modules.tpsmm import TpsGenerator
    if mode not in MODES:
        raise InputError(f'--mode must be one of {", ".join(MODES)}, got {mode!r}')
    if mode == 'avd' and avd_network is None:
        raise InputError('--mode avd needs an avd_network in the checkpoint (train one with run.py --mode train_avd)')
    return TpsGenerator(inpainting_network, dense_motion_network), dict(
        relative=mode == 'relative', adapt_movement_scale=mode == 'relative',
        avd_network=avd_network if mode == 'avd' else None)


def normalized_kp(kp_value):
    """Keypoints (K, 2) centred and scaled by sqrt(hull area): comparable across frames of any size."""
    centred = kp_value - kp_value.mean(axis=0, keepdims=True)
    area = convex_hull_area(kp_value)
    return centred / np.sqrt(area) if area > 0 else centred


def find_best_frame(animator, frames, batch_size=1):
    """Index of the driving frame whose model keypoints, normalised (normalized_kp), are closest (sum of
    squared distances) to the source's: the best starting pose for relative animation. Works
    offline: it uses the animation model's own keypoints instead of a face-landmark detector."""
    key = animate.kp_key(animator.kp_source)
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

def resize_frame(image, size):
    """(H, W, 3) float -> size (h, w), as the original (skimage resize, anti-aliased when shrinking)."""
    if image.shape[:2] == tuple(size):
        return image.astype(np.float32)
    from skimage.transform import resize
    return resize(image, size).astype(np.float32)


def load_source_image(path):
    """Any image file (gray, RGBA, 16-bit, any size) -> (H, W, 3) float32 in [0, 1] at its own size,
    with the same conversions as the dataset's frames (frames_dataset.read_image)."""
    from frames_dataset import read_image
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
    from video_io import iter_video_frames
    for frame in iter_video_frames(path, start=start):
        yield resize_frame(frame.astype(np.float32) / 255, size)


def face_detector_for(opt):
    """'lbp' or 'none': --face_detector as given, where auto = lbp with --multi_person or for a face
    model (the config's file name contains one of FACE_CONFIG_WORDS), else none."""
    if opt.face_detector != 'auto':
        return opt.face_detector
    name = Path(opt.config).name.lower()
    return 'lbp' if opt.multi_person or any(word in name for word in FACE_CONFIG_WORDS) else 'none'


def check_options(opt):
    """Raises InputError for option values that cannot work, before any file is read."""
    if opt.best_frame is not None and opt.best_frame < 0:
        raise InputError('--best_frame must be >= 0')
    check_ratio(opt.ratio, '--ratio')
    check_increase(opt.increase, '--increase')
    if opt.multi_person and opt.face_detector == 'none':
        raise InputError('--multi_person needs face detection: drop --face_detector none (or give lbp)')


def choose_faces(opt, image, detector):
    """The face boxes of the full-resolution source `image` to animate (all with --multi_person,
    else the largest), or None: no detection, or no face found (the whole image is animated)."""
    if detector == 'none':
        return None
    boxes = detect_faces(image)
    if not len(boxes):
        log.info('no face found in %s: animating the whole image instead', opt.source_image)
        return None
    if opt.multi_person:
        log.info('%d face(s) found in %s: animating all of them together', len(boxes), opt.source_image)
        return boxes
    log.info('%d face(s) found in %s: animating the largest (--multi_person animates all)', len(boxes),
             opt.source_image)
    return boxes[:1]


def make_animator(opt, image, size, generator, kp_detector, motion=None):
    """(animator, source shown in the preview) for the full-resolution source `image`: a FaceAnimator
    that pastes the animated faces back into it, or, without faces, an Animator of the whole image
    resized to the model's `size`. motion: the animators' motion options (default: --relative and
    --adapt_scale; TPSMM: tps_motion's)."""
    motion = motion or dict(relative=opt.relative, adapt_movement_scale=opt.adapt_scale)
    detector = face_detector_for(opt)
    if opt.face_detector == 'auto' and not opt.multi_person and image.shape[:2] == tuple(size):
        detector = 'none'  # already the model's frame size: a prepared crop, animated whole
    boxes = choose_faces(opt, image, detector)
    if boxes is None:
        source_image = fit_source_image(image, size, opt.source_image)
        return Animator(source_image, generator, kp_detector, fast=opt.fast, **motion), source_image
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


def fomm_motion(opt):
    """A FOMM config's motion options: --relative / --adapt_scale, or what --mode asks for."""
    if opt.mode == 'avd':
        raise InputError('--mode avd is TPSMM\'s (its AVD network); FOMM configs have none: use --mode relative '
                         'or standard')
    if opt.mode is not None:
        opt.relative = opt.adapt_scale = opt.mode == 'relative'
    return dict(relative=opt.relative, adapt_movement_scale=opt.adapt_scale)


def check_files(*flags):
    """(flag, path or None) pairs: InputError naming the first given path that is not a file."""
    for flag, path in flags:
        if path is not None and not Path(path).is_file():
            raise InputError(f'{flag} {path} not found: check the path')


def make_demo(opt):
    """Runs the demo for parsed options; returns the result path."""
    from video_io import read_video_meta

    check_options(opt)
    check_files(('--config', opt.config), ('--checkpoint', opt.checkpoint), ('--source_image', opt.source_image),
                ('--driving_video', opt.driving_video))
    meta = read_video_meta(opt.driving_video)
    check_frame_pixels(*meta['size'], f'each frame of {opt.driving_video}')
    config = load_config(opt.config)
    check_outputs(opt.result_video, opt.preview)
    size = tuple(config['dataset_params']['frame_shape'][:2])
    image = load_source_image(opt.source_image)
    cpu = opt.cpu or not torch.cuda.is_available()
    if cpu and not opt.cpu:
        log.info('no CUDA device: running on the CPU')
    models = load_checkpoints(opt.config, opt.checkpoint, cpu=cpu)
    for model in models[:3]:  # ours to change: inference only, never saved
        optimize_for_inference(model)
    if model_family(config['model_params']) == 'tps':
        if opt.relative or opt.adapt_scale:
            log.info('--relative / --adapt_scale are for FOMM configs; TPSMM / CPABMM use --mode (now: %s)',
                     opt.mode or 'relative')
        inpainting_network, kp_detector, dense_motion_network, avd_network = models
        generator, motion = tps_motion(inpainting_network, dense_motion_network, avd_network, opt.mode or 'relative')
    else:
        generator, kp_detector = models
        motion = fomm_motion(opt)
    animator, source_image = make_animator(opt, image, size, generator, kp_detector, motion)

    batch_size = opt.batch_size or default_batch_size(animator.device, opt.fast)
    best = opt.best_frame
    if best is None and opt.find_best_frame:
        best = find_best_frame(animator, driving_frames(opt.driving_video, size), batch_size)
        log.info('best frame: %d', best)
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
    from video_io import RESULT_SUFFIXES, VIDEO_SUFFIXES
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
    from video_io import VideoWriter, mux_audio, open_writer, temp_path_for
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


def build_parser():
    parser = argparse.ArgumentParser(
        description='Animate a source image with the motion of a driving video. Without --config: the bundled '
                    'cartoon model (pretrained/cartoon-64/) on its sample inputs, with --relative --adapt_scale and '
                    'a preview; with --config, the defaults are the original demo\'s.', epilog=LIMITS_HELP)
    parser.add_argument('--config', default=None,
                        help='path to the config (e.g. config/vox-256.yaml); default: the bundled model\'s')
    parser.add_argument('--checkpoint', default=None,
                        help='path to the checkpoint (default: the bundled model\'s without --config, else '
                             'vox-cpk.pth.tar)')
    parser.add_argument('--source_image', default=None,
                        help='image to animate, any size or mode (default: the bundled sample without --config, '
                             'else sup-mat/source.png)')
    parser.add_argument('--driving_video', default=None,
                        help='video whose motion is transferred (default: the bundled sample without --config, '
                             'else driving.mp4)')
    parser.add_argument('--result_video', default='result.mp4',
                        help='output video, .mp4 (or .mov, .mkv, .avi), same fps as the driving video; missing '
                             'folders are created, an earlier file is replaced only by a complete result '
                             '(default: result.mp4)')
    parser.add_argument('--preview', default=None,
                        help='also write a side-by-side source | driving | result .gif or .mp4 here (default: '
                             '<result>-preview.gif without --config, else none)')
    parser.add_argument('--relative', action=argparse.BooleanOptionalAction, default=None,
                        help='transfer the motion relative to the first (or best) driving frame, not absolute '
                             'keypoint positions (default: on without --config, else off)')
    parser.add_argument('--adapt_scale', action=argparse.BooleanOptionalAction, default=None,
                        help='scale the relative motion by the ratio of the keypoints\' convex-hull sizes '
                             '(default: on without --config, else off)')
    parser.add_argument('--mode', choices=MODES, default=None,
                        help='TPSMM / CPABMM configs: standard (absolute keypoints), relative (motion relative to the first '
                             'driving frame, scaled by the keypoints\' hull sizes) or avd (the AVD network re-poses '
                             'the source\'s keypoints) (default: relative; --relative / --adapt_scale are FOMM\'s). '
                             'FOMM configs: relative = --relative --adapt_scale, standard = neither')
    parser.add_argument('--find_best_frame', action='store_true',
                        help='start from the driving frame whose keypoint layout is closest to the source\'s')
    parser.add_argument('--best_frame', type=int, default=None, help='start from this driving frame')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even if CUDA is available')
    parser.add_argument('--audio', action='store_true', help='copy the driving video\'s audio into the result')
    parser.add_argument('--batch_size', type=int, default=None,
                        help=f'driving frames animated at once, each applied to every animated face (default: '
                             f'{animate.BATCH_SIZE} on CUDA; on the CPU 1, or 2 with --fast)')
    parser.add_argument('--multi_person', action='store_true',
                        help='animate every face found in the source image together (without it: the largest face) '
                             'and paste each back into the full-resolution image')
    parser.add_argument('--face_detector', choices=['auto', 'lbp', 'none'], default='auto',
                        help='lbp: find faces in the source image (scikit-image\'s LBP cascade, offline), animate '
                             'them and paste them back; no face found: the whole image, as with none; none: the '
                             'whole image resized to the model\'s frame size; auto: lbp with --multi_person or '
                             f'when the config\'s file name contains {", ".join(FACE_CONFIG_WORDS)} and the source '
                             'is not already the model\'s frame size, else none (default: auto)')
    parser.add_argument('--ratio', type=float, default=RATIO,
                        help='radius of the pasted part of each face crop, as a fraction of the crop\'s size, in '
                             f'(0, 1]; the mask fades out softly towards it (default: {RATIO}; 0.4-0.5 suit most '
                             'photos)')
    parser.add_argument('--increase', type=float, default=INCREASE,
                        help='each face box grows by this fraction of its longer side on each side into a square '
                             f'crop, as crop-video.py\'s --increase (default: {INCREASE}: twice the box)')
    parser.add_argument('--fast', action='store_true',
                        help='faster, slightly less exact: the generator runs in bfloat16 (CPU) / float16 (CUDA) '
                             'autocast, channels-last, its residual blocks in int8 on x86 CPUs; keypoints stay '
                             'float32 (benchmarks/animate.py measures its speed and its PSNR against the exact path)')
    return parser


def resolve_defaults(opt):
    """Fills the flags left unset: the bundled model's defaults without --config, else the original's."""
    bundled = opt.config is None
    for name, value in (BUNDLED_DEFAULTS if bundled else ORIGINAL_DEFAULTS).items():
        if getattr(opt, name) is None:
            setattr(opt, name, str(value) if isinstance(value, Path) else value)
    if bundled and opt.preview is None:
        result = Path(opt.result_video)
        opt.preview = str(result.with_name(result.stem + '-preview.gif'))
    return opt


def run_entry_point(make, opt):
    """An entry point's body: `make(opt)` -> the result path, printed with the preview's; a UserError
    is one 'error: ...' line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    stop_on_sigterm()
    try:
        result = make(opt)
    except BaseException as e:  # a user or machine failure: one line (modules.errors); a bug: its traceback
        return exit_status(e)
    print(f'wrote {result}' + (f' and {opt.preview}' if opt.preview else ''))
    return 0


def main(argv=None):
    return run_entry_point(make_demo, resolve_defaults(build_parser().parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
