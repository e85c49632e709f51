"""Part segmentation for part swap: where the masks come from, behind one interface.

A *segmenter* is any callable `frames (B, 3, H, W) float in [0, 1] -> (B, P + 1, H, W)` soft masks
that sum to 1 over the channels, channel 0 the background; it may carry `part_names` (P + 1 names,
background first) so that `--swap_index` takes names. Three kinds:

1. label maps the user gives (`LabelMapSegmenter`, `label_map_segmentation`): greyscale images whose
   pixel value is the part label;
2. a segmentation network trained by this toolkit on labelled frames (`SegmentationNetwork`);
3. the user's own face parser: any callable with the interface (`load_segmenter('module:function')`).
"""
import numpy as np
import torch
import torch.nn.functional as F

from modules.errors import InputError
from modules.plugins import load_plugin

#: A mask image whose largest value exceeds this is read as black and white (thresholded at 128, label 1).
MAX_LABEL = 32


def label_map(gray):
    """(H, W) uint8 greyscale mask -> (H, W) int64 part labels: the values themselves (0 = background),
    or, for a black-and-white mask (largest value > MAX_LABEL, e.g. 0/255 or a lossy mask video),
    label 1 where the value is >= 128."""
    gray = np.asarray(gray)
    if gray.ndim == 3:  # an RGB(A) mask: its first channel (black and white masks have equal channels)
        gray = gray[..., 0]
    if gray.max() > MAX_LABEL:
        return (gray >= 128).astype(np.int64)
    return gray.astype(np.int64)


def label_map_segmentation(labels, size, num_parts=None):
    """(H, W) int labels -> (1, P + 1, h, w) float32 one-hot masks resized to `size` (h, w) with
    anti-aliasing (soft at the edges); P + 1 = max(num_parts or 0, largest label + 1) channels."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    channels = max(num_parts or 0, int(labels.max()) + 1)
    one_hot = F.one_hot(labels, channels).permute(2, 0, 1)[None].float()
    if tuple(one_hot.shape[2:]) != tuple(size):
        one_hot = F.interpolate(one_hot, size=tuple(size), mode='bilinear', align_corners=False, antialias=True)
    return one_hot


def part_mask(segmentation, swap_index, hard=False):
    """segmentation (B, P + 1, H, W) soft masks -> (B, 1, H, W): the sum of the `swap_index` parts'
    masks (hard: of the one-hot argmax, 0 or 1 per pixel), clipped to [0, 1]."""
    if max(swap_index) >= segmentation.shape[1]:
        raise InputError(f'--swap_index {max(swap_index)} is not a part of this segmentation (parts 0 to '
                         f'{segmentation.shape[1] - 1})')
    if hard:
        segmentation = F.one_hot(segmentation.argmax(dim=1), segmentation.shape[1]).permute(0, 3, 1, 2)
        segmentation = segmentation.to(torch.float32)
    return segmentation[:, list(swap_index)].sum(dim=1, keepdim=True).clamp(0, 1)


def parse_swap_index(text, part_names=None):
    """'face,hair' or '1,2,5' (names need `part_names`) -> a sorted tuple of part indices >= 1."""
    names = {name: index for index, name in enumerate(part_names or ())}
    indices = set()
    for item in (part.strip() for part in str(text).split(',')):
        if not item:
            continue
        if item.isdigit():
            index = int(item)
        elif item in names:
            index = names[item]
        else:
            known = ', '.join(f'{i} {n}' for i, n in enumerate(part_names)) if part_names else 'numbers only'
            raise InputError(f'--swap_index: unknown part {item!r} (parts: {known})')
        if index == 0:
            raise InputError('--swap_index: part 0 is the background; give the parts to take from the source')
        indices.add(index)
    if not indices:
        raise InputError('--swap_index is empty: give part names or numbers, e.g. --swap_index 1 or face,hair')
    return tuple(sorted(indices))


class LabelMapSegmenter:
    """A fixed label map as a segmenter: every frame gets the same (1, P + 1, H, W) masks (the
    source's own mask, `--source_mask`)."""

    def __init__(self, labels, num_parts=None):
        self.labels = labels
        self.num_parts = num_parts

    def __call__(self, frames):
        masks = label_map_segmentation(self.labels, frames.shape[2:], self.num_parts).to(frames.device)
        return masks.expand(frames.shape[0], -1, -1, -1)


def load_segmenter(spec):
    """'module:callable' or 'path/to/file.py:callable' -> the callable (a segmenter, or a factory
    called with no arguments when it is a class). Raises InputError with what went wrong."""
    return load_plugin(spec, '--segmenter', 'my_parser:segment')


def check_segmentation(masks, frames):
    """A segmenter's output for `frames` (B, 3, H, W): (B, P + 1, H, W) with P >= 1, else InputError."""
    if not torch.is_tensor(masks) or masks.ndim != 4 or masks.shape[0] != frames.shape[0] \
            or masks.shape[2:] != frames.shape[2:] or masks.shape[1] < 2:
        shape = tuple(masks.shape) if torch.is_tensor(masks) else type(masks).__name__
        raise InputError(f'the segmenter returned {shape} for frames {tuple(frames.shape)}: it must return soft '
                         f'masks (B, P + 1, H, W), channel 0 the background')
    return masks.to(frames.dtype)


class SegmentationNetwork(torch.nn.Module):
    """Supervised part segmentation: an hourglass (the keypoint detector's block type) and a 7x7
    convolution to one logit per part.

    x (B, num_channels, H, W) in [0, 1] -> {'logits': (B, num_segments, H, W),
    'segmentation': (B, num_segments, H, W) softmax}; num_segments = P + 1, the background first.
    H and W must divide by 2 ** num_blocks.
    """

    def __init__(self, num_segments, block_expansion, max_features, num_blocks, num_channels=3):
        super().__init__()
        from modules.util import Hourglass
        self.predictor = Hourglass(block_expansion, in_features=num_channels, num_blocks=num_blocks,
                                   max_features=max_features)
        self.out = torch.nn.Conv2d(self.predictor.out_filters, num_segments, kernel_size=7, padding=3)
        self.num_blocks = num_blocks

    def forward(self, x):
        side = 2 ** self.num_blocks
        if x.shape[2] % side or x.shape[3] % side:
            raise InputError(f'the segmentation network needs frame sides divisible by {side}, got '
                             f'{x.shape[3]}x{x.shape[2]}')
        logits = self.out(self.predictor(x))
        return {'logits': logits, 'segmentation': torch.softmax(logits, dim=1)}


def build_segmentation_network(segmentation_params, num_channels=3):
    """The config's segmentation_params -> an untrained SegmentationNetwork."""
    return SegmentationNetwork(len(segmentation_params['part_names']), num_channels=num_channels,
                               **segmentation_params['model_params'])


class NetworkSegmenter:
    """A trained SegmentationNetwork as a segmenter (eval mode, inference only), with the config's
    part names. Frames of another size are resized to the network's training size and back."""

    def __init__(self, network, part_names, frame_size):
        self.network = network.eval()
        self.part_names = tuple(part_names)
        self.frame_size = tuple(frame_size)

    def __call__(self, frames):
        size = frames.shape[2:]
        with torch.inference_mode():
            x = frames if tuple(size) == self.frame_size else \
                F.interpolate(frames, size=self.frame_size, mode='bilinear', align_corners=False, antialias=True)
            masks = self.network(x)['segmentation']
            if tuple(size) != self.frame_size:
                masks = F.interpolate(masks, size=size, mode='bilinear', align_corners=False)
        return masks


def load_network_segmenter(config, checkpoint, device):
    """config: a loaded config with segmentation_params; checkpoint: path of a train_segmentation
    checkpoint ({'segmentation': state dict, ...}) -> NetworkSegmenter on `device`."""
    from modules.checkpoint import load_state
    params = config.get('segmentation_params')
    if params is None:
        raise InputError('this config has no segmentation_params: give the config the segmentation network was '
                         'trained with (e.g. config/cartoon-64.yaml)')
    network = build_segmentation_network(params, config['model_params']['common_params']['num_channels'])
    load_state(str(checkpoint), {'segmentation': network.to(device)}, source=str(checkpoint), map_location=device)
    return NetworkSegmenter(network, params['part_names'], config['dataset_params']['frame_shape'][:2])
