"""Part swap (part_swap.py) on the bundled cartoon model and its samples, whose ground-truth part
masks cartoon_faces.py regenerates.

Every expected output is computed here from the model's own pieces, never through PartSwapper: the
generator called directly for an all-one mask (the source animated to each frame) and the target
frames themselves for an all-zero one; for any other mask, the blend written out from the keypoint
detector, the generator's dense-motion network, encoder and decoder (`composite`). Each comparison is
shown to fail on a broken part swap (BROKEN: a mask inverted or ignored, the wrong features blended,
the paste or the pixel composite skipped, the relative motion ignored). Then the swap of a face into
a moving target, the mask sources and the CLI's errors."""
import copy
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toolkit import cartoon as cartoon_faces
from toolkit import part_swap
from toolkit.animation import Animator, to_tensor
from demo import load_checkpoints
from modules.errors import InputError
from modules.segmentation import label_map, label_map_segmentation, parse_swap_index, part_mask
from toolkit.part_swap import PartSwapper
from tests.conftest import REPO
from toolkit.video_io import iter_video_frames, read_video_meta

BUNDLED = REPO / 'pretrained' / 'cartoon-64'
CONFIG = REPO / 'config' / 'cartoon-64.yaml'
CHECKPOINT = BUNDLED / 'cartoon-64.pth.tar'
SAMPLES_SEED = 2029  # pretrained/cartoon-64/README.md: the samples are cartoon_faces.py --samples --seed 2029
T = 12
WHOLE_FACE = tuple(cartoon_faces.LABEL[name] for name in ('face', 'eyes', 'brows', 'nose', 'mouth'))
CHECKED = [0, 3, 7, 11]  # the frames compared with the expected outputs (the first: the relative motion's start)
RELATIVE = dict(use_relative_movement=True, use_relative_jacobian=True, adapt_movement_scale=True)
ONES, ZEROS = torch.ones(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
TOLERANCE = 1e-4  # float rounding between PartSwapper's batched path and the computations here


@pytest.fixture(scope='module')
def model():
    return load_checkpoints(CONFIG, CHECKPOINT, cpu=True)


@pytest.fixture(scope='module')
def samples():
    """The bundled source and the first T driving frames (as float [0, 1]) with their true labels."""
    driving, driving_labels, _ = cartoon_faces.make_video(SAMPLES_SEED, 0, T, 64)
    source, source_labels, _ = cartoon_faces.make_video(SAMPLES_SEED, 1, 1, 64)
    assert np.array_equal(source[0], iio.imread(BUNDLED / 'source.png')), 'the samples recipe changed'
    assert np.array_equal(source_labels[0], iio.imread(BUNDLED / 'source-mask.png'))
    return {'source': source[0] / 255.0, 'source_labels': source_labels[0],
            'driving': driving / 255.0, 'driving_labels': driving_labels}


# ------------------------------------------------------------------------------------------------
# The expected outputs, from the model's pieces
# ------------------------------------------------------------------------------------------------

def at(x, size):
    """x (B, C, h, w) resized bilinearly to `size` (unchanged at that size already)."""
    size = tuple(size)
    return x if tuple(x.shape[2:]) == size else F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def expand(value, batch):
    """A batch-1 tensor, or each entry of a batch-1 keypoint dict, repeated to `batch`."""
    if isinstance(value, dict):
        return {name: expand(item, batch) for name, item in value.items()}
    return value.expand(batch, *value.shape[1:])


def motion(generator, source, kp_source, kp_driving):
    """The dense-motion network called directly: (deformation (B, 2, h, w), occlusion (B, 1, h, w))."""
    batch = kp_driving['value'].shape[0]
    dense = generator.dense_motion_network(source_image=expand(source, batch), kp_driving=kp_driving,
                                           kp_source=expand(kp_source, batch))
    return dense['deformation'].permute(0, 3, 1, 2), dense['occlusion_map']


def warp(x, deformation):
    """x backward-warped by the flow, resized to x's size first (grid_sample, as the original)."""
    return F.grid_sample(x, at(deformation, x.shape[2:]).permute(0, 2, 3, 1), align_corners=False)


def levels(features):
    return list(features) if isinstance(features, (list, tuple)) else [features]


def composite(generator, source, frames, mask, kp_source, kp_driving):
    """Part swap written out (part_swap.py's docstring) for target frames (B, C, H, W) and a blend mask
    (B or 1, 1, H, W) in target coordinates: at every encoder level, the target's own features where
    the mask is 0 and the source's, warped by the dense motion and masked by the occlusion map, where
    it is 1 (the mask resized to the level); decoded; with paste_source, the warped source pasted where
    visible, then mask * that + (1 - mask) * the target's pixels."""
    batch = frames.shape[0]
    deformation, occlusion = motion(generator, source, kp_source, kp_driving)
    mask = mask.expand(batch, -1, -1, -1)
    blended = []
    for source_level, target_level in zip(levels(generator.encode(source)), levels(generator.encode(frames))):
        warped = warp(expand(source_level, batch), deformation) * at(occlusion, source_level.shape[2:])
        m = at(mask, source_level.shape[2:])
        blended.append(target_level * (1 - m) + warped * m)
    decoded = generator.decode(blended if generator.skips else blended[0])
    if not generator.paste_source:
        return decoded
    visible = at(occlusion, frames.shape[2:])
    pasted = decoded * (1 - visible) + warp(expand(source, batch), deformation) * visible
    return mask * pasted + (1 - mask) * frames


def relative_motion(kp_source, kp_driving):
    """FOMM's relative motion (Sec. 3.5) written out, measured from the first frame and scaled by the
    square root of the ratio of the keypoints' convex-hull areas (scipy's)."""
    from scipy.spatial import ConvexHull
    initial = {name: value[:1] for name, value in kp_driving.items()}
    scale = np.sqrt(ConvexHull(kp_source['value'][0].numpy()).volume / ConvexHull(initial['value'][0].numpy()).volume)
    return {'value': (kp_driving['value'] - initial['value']) * float(scale) + kp_source['value'],
            'jacobian': kp_driving['jacobian'] @ torch.inverse(initial['jacobian']) @ kp_source['jacobian']}


def swap_masks(labels):
    """Two blend masks: the target's whole face, frame by frame (its true labels (T, H, W)), and a soft
    ramp from 0 (left) to 1 (right), one for every frame."""
    segmentation = torch.cat([label_map_segmentation(frame_labels, (64, 64)) for frame_labels in labels])
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    return {'face': part_mask(segmentation, WHOLE_FACE), 'ramp': ramp}


def checked_frames(samples):
    """The source (1, C, H, W), the CHECKED target frames (B, C, H, W) and their blend masks."""
    return (to_tensor(samples['source']), to_tensor(samples['driving'][CHECKED]),
            swap_masks(samples['driving_labels'][CHECKED]))


@pytest.fixture(scope='module')
def expected(model, samples):
    """What part swap must give on the CHECKED frames, computed from the model's pieces."""
    generator, kp_detector = model
    source, frames, masks = checked_frames(samples)
    batch = len(frames)
    with torch.no_grad():
        kp_source, kp_driving = kp_detector(source), kp_detector(frames)
        out = {'zero': frames}  # a pasting generator: an all-zero mask keeps the target frames themselves
        for name, kp_target in (('one', kp_driving), ('relative one', relative_motion(kp_source, kp_driving))):
            # an all-one mask: the generator animating the source, with its own paste
            out[name] = generator(expand(source, batch), kp_driving=kp_target,
                                  kp_source=expand(kp_source, batch))['prediction']
        for name, mask in masks.items():
            out[name] = composite(generator, source, frames, mask, kp_source, kp_driving)
    return out


def swapped(model, samples, cases):
    """PartSwapper's outputs on the CHECKED frames for the `cases` of `expected`."""
    generator, kp_detector = model
    source, frames, masks = checked_frames(samples)
    masks.update(zero=ZEROS, one=ONES)
    masks['relative one'] = ONES
    out = {}
    for case in cases:
        swapper = PartSwapper(generator, kp_detector, source, RELATIVE if case.startswith('relative') else None)
        out[case] = swapper(frames, target_mask=masks[case.replace('relative ', '')])['prediction']
    return out


def errors(model, samples, expected, cases):
    """max |PartSwapper's output - the expected one| of each case."""
    return {case: float((value - expected[case]).abs().max()) for case, value in swapped(model, samples, cases).items()}


def test_part_swap_equals_its_composite_from_the_generators_own_pieces(model, samples, expected):
    generator, _ = model
    assert generator.skips and generator.paste_source  # the bundled model: every level blended, then pixels
    got = errors(model, samples, expected, list(expected))
    assert got['zero'] == 0, got  # exactly the target frames
    assert max(got.values()) < TOLERANCE, got
    # the cases really differ, so that a swap that mixes them up fails (BROKEN below)
    differences = {(a, b): float((expected[a] - expected[b]).abs().max())
                   for a, b in (('zero', 'one'), ('one', 'relative one'), ('face', 'zero'), ('face', 'one'),
                                ('ramp', 'zero'), ('ramp', 'one'))}
    assert min(differences.values()) > 0.1, differences


def blend_with(rule):
    """part_swap._blend with `rule(target level, warped level, mask at that level)` at every level."""
    def blend(target, warped, mask):
        if isinstance(target, (list, tuple)):
            return [blend(t, w, mask) for t, w in zip(target, warped)]
        return rule(target, warped, at(mask, warped.shape[2:]))
    return blend


def break_part_swap(monkeypatch, generator, how):
    """Breaks part swap as `how` says, for the length of one test."""
    if how == 'mask inverted':
        call = PartSwapper.__call__
        monkeypatch.setattr(PartSwapper, '__call__', lambda self, frames, target_mask=None, source_mask=None:
                            call(self, frames, target_mask=1 - target_mask))
    elif how == 'features: mask inverted':
        monkeypatch.setattr(part_swap, '_blend', blend_with(lambda t, w, m: t * m + w * (1 - m)))
    elif how == 'features: mask ignored':
        monkeypatch.setattr(part_swap, '_blend', blend_with(lambda t, w, m: w))
    elif how == 'features: the target\'s own blended':
        monkeypatch.setattr(part_swap, '_blend', blend_with(lambda t, w, m: t))
    elif how == 'features: the source\'s not warped':
        warp_features = generator.warp_features
        monkeypatch.setattr(generator, 'warp_features',
                            lambda features, *args: (features, warp_features(features, *args)[1]))
    elif how == 'paste skipped':
        monkeypatch.setattr(generator, 'paste', lambda decoded, deformed, occlusion_map: decoded)
    elif how == 'pixels not composed':
        monkeypatch.setattr(generator, 'paste_source', False)
    elif how == 'relative motion ignored':
        class Absolute(Animator):
            def __init__(self, generator, kp_detector, source, normalization_params=None, **kwargs):
                super().__init__(generator, kp_detector, source, None, **kwargs)
        monkeypatch.setattr(part_swap, 'Animator', Absolute)
    else:
        raise ValueError(how)


# Each way of breaking part swap, and a comparison above that catches it. The all-zero / all-one limits
# catch most; a pasting generator's feature blend ignoring its mask shows only with other masks (the
# pixels composed with the mask hide the blended features where it is 0 or 1, except near its edges).
BROKEN = [('mask inverted', 'zero'), ('mask inverted', 'one'), ('features: mask inverted', 'ramp'),
          ('features: mask ignored', 'face'),
          ('features: the target\'s own blended', 'one'), ('features: the source\'s not warped', 'one'),
          ('paste skipped', 'one'), ('pixels not composed', 'zero'), ('relative motion ignored', 'relative one')]


@pytest.mark.parametrize('how, case', BROKEN)
def test_the_comparison_catches_a_broken_part_swap(model, samples, expected, monkeypatch, how, case):
    break_part_swap(monkeypatch, model[0], how)
    got = errors(model, samples, expected, [case])[case]
    assert got > 100 * TOLERANCE, (how, case, got)


def test_without_paste_source_the_blend_is_in_feature_space_only(model, samples):
    """A generator that does not paste (the original FOMM's): an all-zero mask decodes the target's own
    features, an all-one mask is the generator's animation, any other mask the feature blend."""
    generator, kp_detector = model
    generator = copy.deepcopy(generator)
    generator.paste_source = False
    source, frames, masks = checked_frames(samples)
    face, batch = masks['face'], len(frames)
    swapper = PartSwapper(generator, kp_detector, source)
    with torch.no_grad():
        kp_source, kp_driving = kp_detector(source), kp_detector(frames)
        target_only = generator.decode(generator.encode(frames))  # no warp, no occlusion
        animated = generator(expand(source, batch), kp_driving=kp_driving,
                             kp_source=expand(kp_source, batch))['prediction']
        blended = composite(generator, source, frames, face, kp_source, kp_driving)
    zero = swapper(frames, target_mask=ZEROS)['prediction']
    torch.testing.assert_close(zero, target_only, atol=TOLERANCE, rtol=0)
    assert (zero - frames).abs().max() > 0.05, 'the decoder\'s reconstruction, not the frames themselves'
    torch.testing.assert_close(swapper(frames, target_mask=ONES)['prediction'], animated, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(swapper(frames, target_mask=face)['prediction'], blended, atol=TOLERANCE, rtol=0)
    assert min((blended - target_only).abs().max(), (blended - animated).abs().max()) > 0.1


def test_half_mask_takes_each_half_from_its_side(model, samples, expected):
    generator, kp_detector = model
    source, frames, _ = checked_frames(samples)
    half = torch.zeros(1, 1, 64, 64)
    half[..., :32] = 1
    mixed = PartSwapper(generator, kp_detector, source)(frames, target_mask=half)['prediction']
    # the decoder's receptive field spreads the seam over ~24 pixels; 8 pixels from each edge are clear
    torch.testing.assert_close(mixed[..., :8], expected['one'][..., :8], atol=2e-3, rtol=0)
    assert torch.equal(mixed[..., 32:], frames[..., 32:])  # the pixels where the mask is 0: the target's
    assert (expected['one'][..., :8] - frames[..., :8]).abs().max() > 0.3  # the two sides really differ there


def test_swapping_the_face_keeps_the_target_background_and_takes_the_source_colours(model, samples):
    """A new identity's whole face into the moving sample video, with the target's true masks:
    outside the (dilated) face the result stays the target; inside, its colours move from the
    target's face towards the source's."""
    from scipy.ndimage import binary_dilation
    generator, kp_detector = model
    source, frames = to_tensor(samples['source']), to_tensor(samples['driving'])
    mask = swap_masks(samples['driving_labels'])['face']
    swapped = PartSwapper(generator, kp_detector, source)(frames, target_mask=mask)['prediction']
    swapped = swapped.permute(0, 2, 3, 1).numpy()
    with torch.no_grad():  # the source animated to every frame by the generator itself
        animated = generator(expand(source, T), kp_driving=kp_detector(frames),
                             kp_source=expand(kp_detector(source), T))['prediction'].permute(0, 2, 3, 1).numpy()

    face = np.isin(samples['driving_labels'], WHOLE_FACE)
    far = ~np.stack([binary_dilation(f, iterations=6) for f in face])
    assert np.abs(swapped - samples['driving'])[far].mean() < 0.01, 'the background and body stay the target\'s'

    # the skin (label face) of the target frames: its mean colour in the true source / target pictures,
    # and in the model's own rendering of the source moved there (the small bundled model washes colours
    # out a little)
    skin = samples['driving_labels'] == cartoon_faces.LABEL['face']
    source_skin = samples['source'][samples['source_labels'] == cartoon_faces.LABEL['face']].mean(axis=0)
    target_skin = samples['driving'][skin].mean(axis=0)
    result_skin = swapped[skin].mean(axis=0)

    def distance(a, b):
        return float(np.linalg.norm(a - b))

    assert distance(source_skin, target_skin) > 0.15, 'the two identities\' skins differ'
    assert distance(result_skin, source_skin) < distance(result_skin, target_skin)
    assert distance(result_skin, animated[skin].mean(axis=0)) < 0.25 * distance(result_skin, target_skin)


def test_the_source_mask_moves_with_the_head(model, samples):
    """--source_mask: the source's face mask, warped by the dense motion (computed here), is the blend
    mask, and lands on the target's face."""
    generator, kp_detector = model
    source, frames, _ = checked_frames(samples)
    source_mask = part_mask(label_map_segmentation(samples['source_labels'], (64, 64)), WHOLE_FACE)
    out = PartSwapper(generator, kp_detector, source)(frames, source_mask=source_mask)
    with torch.no_grad():
        kp_source, kp_driving = kp_detector(source), kp_detector(frames)
        deformation, _ = motion(generator, source, kp_source, kp_driving)
        moved = warp(expand(source_mask, len(frames)), deformation)
        prediction = composite(generator, source, frames, moved, kp_source, kp_driving)
    torch.testing.assert_close(out['blend_mask'], moved, atol=1e-5, rtol=0)
    torch.testing.assert_close(out['prediction'], prediction, atol=TOLERANCE, rtol=0)
    assert (moved - source_mask).abs().max() > 0.5, 'the head moves: the mask moves with it'
    truth = np.isin(samples['driving_labels'][CHECKED], WHOLE_FACE)
    hard = out['blend_mask'][:, 0].numpy() > 0.5
    iou = (hard & truth).sum() / (hard | truth).sum()
    assert iou > 0.6, iou


def test_swap_index_names_numbers_and_errors():
    names = cartoon_faces.PARTS
    assert parse_swap_index('face, hair', names) == (1, 2)
    assert parse_swap_index('6,1,1') == (1, 6)
    with pytest.raises(InputError, match="unknown part 'lips'.*1 face"):
        parse_swap_index('lips', names)
    with pytest.raises(InputError, match='numbers only'):
        parse_swap_index('face')
    with pytest.raises(InputError, match='background'):
        parse_swap_index('0')
    with pytest.raises(InputError, match='is not a part'):
        part_mask(torch.ones(1, 3, 4, 4) / 3, (5,))


def test_label_maps_and_hard_masks():
    assert np.array_equal(label_map(np.array([[0, 255], [254, 3]], np.uint8)), [[0, 1], [1, 0]])
    assert np.array_equal(label_map(np.array([[0, 2], [7, 3]], np.uint8)), [[0, 2], [7, 3]])
    soft = torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1)
    assert part_mask(soft, (2,)).item() == pytest.approx(0.3)
    assert part_mask(soft, (2,), hard=True).item() == 0
    assert part_mask(soft, (1, 2), hard=True).item() == 1


def run_cli(*args):
    return subprocess.run([sys.executable, 'part_swap.py', *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def common_args(tmp_path):
    return ['--config', CONFIG, '--checkpoint', CHECKPOINT, '--source_image', BUNDLED / 'source.png',
            '--target_video', BUNDLED / 'driving.mp4', '--cpu']


def test_cli_with_the_bundled_source_mask_target_masks_and_a_segmenter_hook(tmp_path, samples):
    result, preview = tmp_path / 'swap.mp4', tmp_path / 'swap.gif'
    out = run_cli(*common_args(tmp_path), '--source_mask', BUNDLED / 'source-mask.png', '--swap_index', '1,3,4,5,6',
                  '--result_video', result, '--preview', preview)
    assert out.returncode == 0, out.stderr[-3000:]
    meta, driving_meta = read_video_meta(result), read_video_meta(BUNDLED / 'driving.mp4')
    assert meta['fps'] == driving_meta['fps']
    frames = np.stack(list(iter_video_frames(result)))
    assert len(frames) == len(list(iter_video_frames(BUNDLED / 'driving.mp4')))
    assert preview.is_file()

    # the target's own label maps, a folder of PNGs; the swapped face differs from the source-mask run
    # only where the two masks differ
    masks = tmp_path / 'masks'
    masks.mkdir()
    for t, labels in enumerate(cartoon_faces.make_video(SAMPLES_SEED, 0, len(frames), 64)[1]):
        iio.imwrite(masks / f'{t:04d}.png', labels)
    by_target = tmp_path / 'target-masks.mp4'
    out = run_cli(*common_args(tmp_path), '--target_masks', masks, '--swap_index', '1,3,4,5,6',
                  '--result_video', by_target)
    assert out.returncode == 0, out.stderr[-3000:]
    other = np.stack(list(iter_video_frames(by_target)))
    assert other.shape == frames.shape
    assert np.abs(other.astype(float) - frames).mean() < 8  # both swap the face: close, not equal

    # a user's face parser: the true labels of the target frames, by frame order
    hook = tmp_path / 'my_parser.py'
    hook.write_text(
        'import numpy as np, torch\n'
        'from toolkit import cartoon as cartoon_faces\n'
        'from modules.segmentation import label_map_segmentation\n'
        'class Parser:\n'
        '    part_names = cartoon_faces.PARTS\n'
        '    def __init__(self):\n'
        '        self.labels = cartoon_faces.make_video(2029, 0, 100, 64)[1]\n'
        '        self.seen = 0\n'
        '    def __call__(self, frames):\n'
        '        labels = self.labels[self.seen:self.seen + len(frames)]\n'
        '        self.seen += len(frames)\n'
        '        return torch.cat([label_map_segmentation(l, frames.shape[2:], 9) for l in labels])\n')
    hooked = tmp_path / 'hook.mp4'
    out = run_cli(*common_args(tmp_path), '--segmenter', f'{hook}:Parser', '--swap_index', 'face,eyes,brows,nose,mouth',
                  '--result_video', hooked, '--hard')
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list(iter_video_frames(hooked))) == len(frames)


@pytest.mark.parametrize('extra, message', [
    ([], 'give exactly one mask source'),
    (['--source_mask', 'x.png', '--segmenter', 'a:b'], 'give exactly one mask source'),
    (['--source_mask', 'missing.png'], 'missing.png not found'),
    (['--segmenter', 'no_such_module_here:f'], 'cannot import no_such_module_here'),
    (['--segmenter', 'numpy'], 'give module:callable'),
    (['--target_masks', 'nowhere/'], 'nowhere not found'),
])
def test_cli_bad_inputs_are_one_line_errors(tmp_path, extra, message):
    out = run_cli(*common_args(tmp_path), *extra, '--result_video', tmp_path / 'r.mp4')
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and 'Traceback' not in out.stderr, out.stderr[-3000:]
    assert lines[-1].startswith('error: ') and message in lines[-1], lines[-1]
    assert not (tmp_path / 'r.mp4').exists()


def test_too_few_target_masks_is_an_error_and_leaves_no_partial_video(tmp_path):
    masks = tmp_path / 'masks'
    masks.mkdir()
    for t in range(3):
        iio.imwrite(masks / f'{t}.png', np.full((64, 64), 255, np.uint8))
    result = tmp_path / 'r.mp4'
    result.write_bytes(b'an earlier result')
    out = run_cli(*common_args(tmp_path), '--target_masks', masks, '--result_video', result, '--batch_size', '2')
    assert out.returncode == 2 and 'fewer masks than the target video has frames' in out.stderr.strip().splitlines()[-1]
    assert result.read_bytes() == b'an earlier result'
