"""Part swap / face swap as a library (`python part_swap.py` runs `swap_parts`): a target video
keeps its motion and everything else, but the chosen parts come from the source image. The swap
happens in the FOMM generator's feature space (and in pixels for a generator with paste_source), as
part_swap.py's docstring and --help write out; PartSwapper does it for a batch of target frames.
"""
import dataclasses
import logging
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from toolkit.animation import Animator, batched, default_batch_size, tile, tile_features, to_tensor, to_uint8
from modules.errors import InputError
from modules.generator import resize
from modules.limits import check_frame_pixels, open_image
from modules.segmentation import (LabelMapSegmenter, check_segmentation, label_map, label_map_segmentation,
                                  load_network_segmenter, load_segmenter, parse_swap_index, part_mask)
from modules.config import load_config
from modules.families import family_of
from modules.inference import optimize_for_inference
from toolkit.datasets import FRAME_EXTENSIONS
from toolkit.demo import (check_files, check_outputs, driving_frames, even_size, fit_source_image, load_checkpoints,
                          load_source_image, open_result, side_by_side)
from toolkit.devices import pick_device
from toolkit.video_io import iter_video_frames, read_video_meta

log = logging.getLogger(__name__)


class PartSwapper:
    """Swaps parts of a source image into target frames, in the generator's feature space (and, for
    a generator with paste_source, in pixels as well: see the module docstring).

    generator, kp_detector: a FOMM model in eval mode. source: (1, C, H, W) in [0, 1].
    normalization_params: None = absolute motion (kp_source -> the target frame's keypoints), else
    normalize_kp's flags, relative to the first target frame (as Animator).
    """

    def __init__(self, generator, kp_detector, source, normalization_params=None):
        self.animator = Animator(generator, kp_detector, source, normalization_params)
        self.generator = self.animator.generator
        if self.generator.dense_motion_network is None:
            raise InputError('part swap needs a generator with a dense-motion network (model_params.generator_params.'
                             'dense_motion_params)')
        self.device, self.dtype = self.animator.device, self.animator.dtype

    @property
    def source(self):
        return self.animator.source

    def __call__(self, frames, target_mask=None, source_mask=None):
        """frames: (B, C, H, W) target frames in [0, 1]; exactly one of target_mask (B or 1, 1, H, W),
        the blend mask in the target frames' coordinates, or source_mask (1, 1, H', W'), in the source
        image's, moved to every frame by the deformation. Masks in [0, 1]: 1 takes the source.

        Returns {'prediction': (B, C, H, W), 'blend_mask': (B, 1, H, W) in target coordinates,
        'deformed': the source warped to each frame, 'occlusion_map' if the model has one}.
        """
        if (target_mask is None) == (source_mask is None):
            raise ValueError('give exactly one of target_mask, source_mask')
        with torch.inference_mode():
            frames = frames.to(self.device, self.dtype)
            batch = frames.shape[0]
            kp_source, _, kp_target = self.animator.motion(frames)
            warped, out = self.generator.warp_features(tile_features(self.animator.source_features, batch),
                                                       tile(self.source, batch), kp_target, kp_source)
            if source_mask is None:
                blend_mask = target_mask.to(self.device, self.dtype).expand(batch, -1, -1, -1)
            else:
                source_mask = source_mask.to(self.device, self.dtype).expand(batch, -1, -1, -1)
                blend_mask = resize(self.generator.deform_input(source_mask, out['deformation']), frames.shape[2:])
            prediction = self.generator.decode(_blend(self.generator.encode(frames), warped, blend_mask))
            if getattr(self.generator, 'paste_source', False):
                # the generator's paste where the source is taken, the target frame itself elsewhere
                pasted = self.generator.paste(prediction, out['deformed'], out['occlusion_map'])
                prediction = blend_mask * pasted + (1 - blend_mask) * frames
        result = {'prediction': prediction, 'blend_mask': blend_mask, 'deformed': out['deformed']}
        if 'occlusion_map' in out:
            result['occlusion_map'] = out['occlusion_map']
        return result


def _blend(target, warped, mask):
    """target * (1 - m) + warped * m, m = mask (B, 1, H, W) resized to the features; at every level
    when the generator keeps several (skips)."""
    if isinstance(target, (list, tuple)):
        return [_blend(t, w, mask) for t, w in zip(target, warped)]
    m = resize(mask, warped.shape[2:])
    return target * (1 - m) + warped * m


class MaskSource:
    """Where the blend masks come from; `masks(frames)` -> (target_mask, source_mask) for one batch
    of target frames (B, C, H, W) on the model's device (one of the two is None).

    segmenter: a segmenter (modules.segmentation) or None; source: (1, C, H, W);
    swap_index: part indices; target_masks: an iterator of (H, W) label maps, one per target frame,
    or None; use_source_segmentation: segment the source once and move its mask with the motion.
    """

    def __init__(self, swap_index, source, segmenter=None, target_masks=None, use_source_segmentation=False,
                 hard=False):
        if (segmenter is None) == (target_masks is None):
            raise InputError('give one mask source: --source_mask, --target_masks or --segmenter')
        self.swap_index, self.hard = swap_index, hard
        self.segmenter, self.target_masks = segmenter, target_masks
        self.source_mask = None
        if segmenter is not None and use_source_segmentation:
            self.source_mask = part_mask(check_segmentation(segmenter(source), source), swap_index, hard)

    def masks(self, frames):
        if self.source_mask is not None:
            return None, self.source_mask
        if self.segmenter is not None:
            segmentation = check_segmentation(self.segmenter(frames), frames)
        else:
            labels = [next(self.target_masks, None) for _ in range(frames.shape[0])]
            if any(label is None for label in labels):
                raise InputError('--target_masks has fewer masks than the target video has frames')
            channels = max(self.swap_index) + 1
            segmentation = torch.cat([label_map_segmentation(label, frames.shape[2:], channels)
                                      for label in labels]).to(frames.device, frames.dtype)
        return part_mask(segmentation, self.swap_index, self.hard), None


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def read_mask_image(path):
    """A mask image file -> (H, W) int64 labels (modules.segmentation.label_map)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f'mask {path} not found: check the path')
    try:
        with open_image(path, f'mask {path}') as image:
            gray = np.asarray(image.convert('L') if image.mode not in ('L', 'P') else image)
    except OSError as e:
        raise InputError(f'{path}: cannot read it as an image ({e}); use a PNG') from e
    return label_map(gray)


def iter_target_masks(path, frame_size=None):
    """Label maps, one per frame, from a folder of images (sorted by name) or a video file.
    frame_size: the target video's (width, height); every mask must have its aspect ratio
    (check_mask_shape), as the source mask must have the source image's."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        if not files:
            raise InputError(f'--target_masks {path}: no mask images in this folder')
        masks = ((p, read_mask_image(p)) for p in files)
    elif not path.is_file():
        raise InputError(f'--target_masks {path} not found: check the path')
    else:
        masks = ((f'{path} (frame {t})', label_map(frame)) for t, frame in enumerate(iter_video_frames(path)))
    for name, labels in masks:
        if frame_size is not None:
            check_mask_shape(labels, frame_size, '--target_masks', name, 'each target video frame')
        yield labels


def part_names_of(segmenter):
    names = getattr(segmenter, 'part_names', None)
    return tuple(names) if names else None


def check_mask_shape(labels, size, flag, path, what):
    """A mask is resized with its image, so it must have that image's aspect ratio (within a pixel
    of rounding): labels (h, w), size the image's (width, height); InputError otherwise."""
    width, height = size
    if abs(labels.shape[0] * width - labels.shape[1] * height) > max(width, height):
        raise InputError(f'{flag} {path} is {labels.shape[1]}x{labels.shape[0]} but {what} is {width}x{height}: give '
                         f'masks of that size (or its aspect ratio)')


def check_source_mask(labels, image, path):
    """The source mask must have the source image's aspect ratio (it is resized with it)."""
    check_mask_shape(labels, (image.shape[1], image.shape[0]), '--source_mask', path, 'the source image')


@dataclasses.dataclass(frozen=True)
class PartSwapOptions:
    """What `python part_swap.py` takes, named as its flags (see its --help)."""
    config: str
    checkpoint: str
    source_image: str
    target_video: str
    result_video: str = 'result.mp4'
    swap_index: str = '1'
    source_mask: str = None
    target_masks: str = None
    segmenter: str = None
    segmentation_checkpoint: str = None
    use_source_segmentation: bool = False
    hard: bool = False
    relative: bool = False
    adapt_scale: bool = False
    preview: str = None
    batch_size: int = None
    cpu: bool = False
    audio: bool = False


def swap_parts(**options):
    """`python part_swap.py` as a function: options named as its flags (PartSwapOptions) -> the
    paths written (the result video, and the preview if one was asked for)."""
    opt = PartSwapOptions(**options)
    make_part_swap(opt)
    return [Path(path) for path in (opt.result_video, opt.preview) if path]


def make_part_swap(opt):
    """Runs part swap for PartSwapOptions (or any object with those attributes); returns the result path."""
    sources = [flag for flag, value in (('--source_mask', opt.source_mask), ('--target_masks', opt.target_masks),
                                        ('--segmenter', opt.segmenter),
                                        ('--segmentation_checkpoint', opt.segmentation_checkpoint)) if value]
    if len(sources) != 1:
        raise InputError('give exactly one mask source: --source_mask IMAGE, --target_masks PATH, --segmenter '
                         f'MODULE:FUNCTION or --segmentation_checkpoint FILE (got {", ".join(sources) or "none"})')
    if opt.use_source_segmentation and not (opt.segmenter or opt.segmentation_checkpoint):
        raise InputError('--use_source_segmentation goes with a segmenter (--source_mask is always the source\'s)')
    check_files(('--config', opt.config), ('--checkpoint', opt.checkpoint), ('--source_image', opt.source_image),
                ('--target_video', opt.target_video), ('--segmentation_checkpoint', opt.segmentation_checkpoint))
    meta = read_video_meta(opt.target_video)
    check_frame_pixels(*meta['size'], f'each frame of {opt.target_video}')
    check_outputs(opt.result_video, opt.preview)
    config = load_config(opt.config)
    family = family_of(config['model_params'])
    if not family.part_segmentation:
        raise InputError(f'part_swap.py blends FOMM generator features: {opt.config} is a {family.title} config; use '
                         f'an FOMM config and checkpoint')
    size = tuple(config['dataset_params']['frame_shape'][:2])
    image = load_source_image(opt.source_image)
    source_image = fit_source_image(image, size, opt.source_image)
    generator, kp_detector = load_checkpoints(opt.config, opt.checkpoint, cpu=pick_device(opt.cpu))
    optimize_for_inference(generator)
    optimize_for_inference(kp_detector)
    normalization = None
    if opt.relative or opt.adapt_scale:
        normalization = dict(use_relative_movement=opt.relative, use_relative_jacobian=opt.relative,
                             adapt_movement_scale=opt.adapt_scale)
    swapper = PartSwapper(generator, kp_detector, to_tensor(source_image), normalization)

    segmenter, target_masks, use_source_segmentation = None, None, opt.use_source_segmentation
    if opt.source_mask:
        labels = read_mask_image(opt.source_mask)
        check_source_mask(labels, image, opt.source_mask)
        segmenter, use_source_segmentation = LabelMapSegmenter(labels), True
    elif opt.target_masks:
        target_masks = iter_target_masks(opt.target_masks, meta['size'])
        first = next(target_masks, None)  # a wrong size is refused now, not after a first batch
        if first is None:
            raise InputError(f'--target_masks {opt.target_masks} holds no mask')
        target_masks = chain([first], target_masks)
    elif opt.segmentation_checkpoint:
        segmenter = load_network_segmenter(config, opt.segmentation_checkpoint, swapper.device)
    else:
        segmenter = load_segmenter(opt.segmenter)
    swap_index = parse_swap_index(opt.swap_index, part_names_of(segmenter))
    masks = MaskSource(swap_index, swapper.source, segmenter, target_masks, use_source_segmentation, opt.hard)
    log.info('swapping part(s) %s of %s into %s', ','.join(map(str, swap_index)), opt.source_image, opt.target_video)

    batch_size = opt.batch_size or default_batch_size(swapper.device)
    with open_result(opt.result_video, meta, opt.preview, opt.target_video if opt.audio else None,
                     desc='swapping') as (writer, preview, progress):
        for frames in batched(driving_frames(opt.target_video, size), batch_size):
            batch = to_tensor(np.stack(frames), swapper.device)
            target_mask, source_mask = masks.masks(batch)
            out = swapper(batch, target_mask=target_mask, source_mask=source_mask)
            predictions = out['prediction'].permute(0, 2, 3, 1).float().cpu().numpy()
            blend = out['blend_mask'].expand(-1, 3, -1, -1).permute(0, 2, 3, 1).float().cpu().numpy()
            for target, mask, prediction in zip(frames, blend, predictions):
                writer.write(even_size(to_uint8(prediction)))
                if preview is not None:
                    preview.write(even_size(side_by_side([source_image, target, mask, prediction])))
            progress.update(len(frames))
    return Path(opt.result_video)
