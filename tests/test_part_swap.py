"""Part swap (part_swap.py) on the bundled cartoon model and its samples, whose ground-truth part
masks cartoon_faces.py regenerates: the feature-space blend's limits (all-zero / all-one / half
masks), the swap of a face into a moving target, the mask sources, and the CLI's errors."""
import copy
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import cartoon_faces
from animate import Animator, ImageAnimator, to_tensor
from demo import load_checkpoints
from modules.errors import InputError
from modules.segmentation import label_map, label_map_segmentation, parse_swap_index, part_mask
from part_swap import PartSwapper
from tests.conftest import REPO
from video_io import iter_video_frames, read_video_meta

BUNDLED = REPO / 'pretrained' / 'cartoon-64'
CONFIG = REPO / 'config' / 'cartoon-64.yaml'
CHECKPOINT = BUNDLED / 'cartoon-64.pth.tar'
SAMPLES_SEED = 2029  # pretrained/cartoon-64/README.md: the samples are cartoon_faces.py --samples --seed 2029
T = 12
WHOLE_FACE = tuple(cartoon_faces.LABEL[name] for name in ('face', 'eyes', 'brows', 'nose', 'mouth'))


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


def test_all_zero_mask_decodes_the_target_and_all_one_animates_the_source(model, samples):
    generator, kp_detector = model
    source, frames = to_tensor(samples['source']), to_tensor(samples['driving'])
    swapper = PartSwapper(generator, kp_detector, source)
    zero = swapper(frames, target_mask=torch.zeros(1, 1, 64, 64))['prediction']
    assert generator.paste_source  # the bundled model pastes: a zero mask keeps the target frame itself
    assert torch.equal(zero, frames)

    one = swapper(frames, target_mask=torch.ones(1, 1, 64, 64))['prediction']
    animated = Animator(generator, kp_detector, source)(frames)[1]['prediction']  # absolute keypoints
    torch.testing.assert_close(one, animated, atol=1e-4, rtol=0)

    relative = dict(use_relative_movement=True, use_relative_jacobian=True, adapt_movement_scale=True)
    one = PartSwapper(generator, kp_detector, source, relative)(frames, target_mask=torch.ones(1, 1, 64, 64))
    demo_frames = ImageAnimator(samples['source'], generator, kp_detector, relative=True,
                                adapt_movement_scale=True)(samples['driving'])
    np.testing.assert_allclose(one['prediction'].permute(0, 2, 3, 1).numpy(), demo_frames, atol=1e-4)


def test_without_paste_source_the_blend_is_in_feature_space_only(model, samples):
    """A generator that does not paste (the original FOMM's): an all-zero mask decodes the target's own
    features, an all-one mask is the animation."""
    generator, kp_detector = model
    generator = copy.deepcopy(generator)
    generator.paste_source = False
    source, frames = to_tensor(samples['source']), to_tensor(samples['driving'])
    swapper = PartSwapper(generator, kp_detector, source)
    zero = swapper(frames, target_mask=torch.zeros(1, 1, 64, 64))['prediction']
    with torch.inference_mode():
        target_only = generator.decode(generator.encode(frames))  # no warp, no occlusion
    torch.testing.assert_close(zero, target_only, atol=1e-4, rtol=0)
    assert not torch.equal(zero, frames)
    one = swapper(frames, target_mask=torch.ones(1, 1, 64, 64))['prediction']
    animated = Animator(generator, kp_detector, source)(frames)[1]['prediction']
    torch.testing.assert_close(one, animated, atol=1e-4, rtol=0)


def test_half_mask_takes_each_half_from_its_side(model, samples):
    generator, kp_detector = model
    source, frames = to_tensor(samples['source']), to_tensor(samples['driving'])
    swapper = PartSwapper(generator, kp_detector, source)
    half = torch.zeros(1, 1, 64, 64)
    half[..., :32] = 1
    mixed = swapper(frames, target_mask=half)['prediction']
    one = swapper(frames, target_mask=torch.ones(1, 1, 64, 64))['prediction']
    zero = swapper(frames, target_mask=torch.zeros(1, 1, 64, 64))['prediction']
    # the decoder's receptive field spreads the seam over ~24 pixels; 8 pixels from each edge are clear
    torch.testing.assert_close(mixed[..., :8], one[..., :8], atol=2e-3, rtol=0)
    torch.testing.assert_close(mixed[..., 56:], zero[..., 56:], atol=2e-3, rtol=0)
    assert (one[..., :8] - zero[..., :8]).abs().max() > 0.3  # the two sides really differ there


def test_swapping_the_face_keeps_the_target_background_and_takes_the_source_colours(model, samples):
    """A new identity's whole face into the moving sample video, with the target's true masks:
    outside the (dilated) face the result stays the target's reconstruction; inside, its colours
    move from the target's face towards the source's."""
    from scipy.ndimage import binary_dilation
    generator, kp_detector = model
    source, frames = to_tensor(samples['source']), to_tensor(samples['driving'])
    swapper = PartSwapper(generator, kp_detector, source)
    segmentation = torch.cat([label_map_segmentation(labels, (64, 64)) for labels in samples['driving_labels']])
    mask = part_mask(segmentation, WHOLE_FACE)
    swapped = swapper(frames, target_mask=mask)['prediction'].permute(0, 2, 3, 1).numpy()
    kept = swapper(frames, target_mask=torch.zeros_like(mask))['prediction'].permute(0, 2, 3, 1).numpy()

    face = np.isin(samples['driving_labels'], WHOLE_FACE)
    far = ~np.stack([binary_dilation(f, iterations=6) for f in face])
    assert np.abs(swapped - kept)[far].mean() < 0.01, 'the background and body stay the target\'s'
    assert np.abs(swapped - samples['driving'])[far].mean() < 0.08

    # the skin (label face) of the target frames: its mean colour in the true source / target pictures,
    # and in the model's own renderings of each (the small bundled model washes colours out a little)
    skin = samples['driving_labels'] == cartoon_faces.LABEL['face']
    source_skin = samples['source'][samples['source_labels'] == cartoon_faces.LABEL['face']].mean(axis=0)
    target_skin = samples['driving'][skin].mean(axis=0)
    result_skin = swapped[skin].mean(axis=0)
    animated = swapper(frames, target_mask=torch.ones_like(mask))['prediction'].permute(0, 2, 3, 1).numpy()

    def distance(a, b):
        return float(np.linalg.norm(a - b))

    assert distance(source_skin, target_skin) > 0.15, 'the two identities\' skins differ'
    assert distance(result_skin, source_skin) < distance(result_skin, target_skin)
    assert distance(result_skin, animated[skin].mean(axis=0)) < 0.25 * distance(result_skin, kept[skin].mean(axis=0))


def test_the_source_mask_moves_with_the_head(model, samples):
    """--source_mask: the source's face mask, warped by the motion, lands on the target's face."""
    generator, kp_detector = model
    source, frames = to_tensor(samples['source']), to_tensor(samples['driving'])
    swapper = PartSwapper(generator, kp_detector, source)
    source_mask = part_mask(label_map_segmentation(samples['source_labels'], (64, 64)), WHOLE_FACE)
    out = swapper(frames, source_mask=source_mask)
    moved = out['blend_mask'][:, 0].numpy() > 0.5
    truth = np.isin(samples['driving_labels'], WHOLE_FACE)
    iou = (moved & truth).sum() / (moved | truth).sum()
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
        'import numpy as np, torch, cartoon_faces\n'
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
