"""Fault injection: what real machines do to a run (a full disk, a folder that cannot be written, a
killed training, Ctrl-C, hostile or oversized inputs), tried on every entry point.

Each case asserts the toolkit's promise: a non-zero exit status, one 'error: ...' line and no
traceback, every earlier output byte for byte as it was, and no temporary file left behind.

How the faults are made: a full disk is RLIMIT_FSIZE set in the child (as `ulimit -f`: the process
gets EFBIG, ffmpeg is stopped by SIGXFSZ); a folder that cannot be written is made immutable with
`chattr +i` (root ignores permission bits; the tests skip where chattr is unavailable); memory is
the peak RSS of the command measured by a small launcher (tests/rss.py).
"""
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from modules.checkpoint import read_checkpoint
from tests.conftest import FIXTURE_DIR, REPO
from tests.rss import peak_rss_mb
from tests.test_train import make_config, make_dataset
from toolkit.video_io import ffmpeg_exe, iter_video_frames

BUNDLED = REPO / 'pretrained' / 'cartoon-64'
CONFIG = REPO / 'config' / 'cartoon-64.yaml'
CHECKPOINT = BUNDLED / 'cartoon-64.pth.tar'
PART_SWAP = ['--config', CONFIG, '--checkpoint', CHECKPOINT, '--source_image', BUNDLED / 'source.png',
             '--target_video', BUNDLED / 'driving.mp4', '--source_mask', BUNDLED / 'source-mask.png', '--cpu']
MAX_BOMB_RSS_MB = 600  # a refused bomb costs what starting the script costs (about 250 MB)


def run_script(script, *args, fsize=None, env=None, timeout=600):
    """Runs `python script args` in the repository; fsize: RLIMIT_FSIZE in bytes for the child."""
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=limit, timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})


def one_line_error(result, status=2):
    """The run failed with `status`, no traceback, and its last line is its only 'error: ' line."""
    assert result.returncode == status, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr and 'Exception ignored' not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.replace('\r', '\n').splitlines() if line.strip()]
    assert [line for line in lines if line.startswith('error: ')] == lines[-1:], result.stderr[-3000:]
    return lines[-1]


def snapshot(folder):
    """{relative path: bytes} of every file below `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def temp_files(folder):
    return [p for p in folder.rglob('*') if '.tmp' in p.name or p.name.startswith('.write-test')]


@pytest.fixture
def immutable(tmp_path):
    """make(folder) -> folder made immutable (chattr +i), undone at teardown; skips without chattr."""
    made = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if shutil.which('chattr') is None or subprocess.run(['chattr', '+i', str(folder)]).returncode != 0:
            pytest.skip('chattr +i is not available here (needs root and a file system that supports it)')
        made.append(folder)
        return folder

    yield make
    for folder in made:
        subprocess.run(['chattr', '-i', str(folder)])


# ----------------------------------------------------------------------------------------------
# A full disk while results are written
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def good_result(tmp_path_factory):
    """A first, good demo.py run: result.mp4 and its preview GIF."""
    folder = tmp_path_factory.mktemp('demo')
    out = run_script('demo.py', '--result_video', folder / 'result.mp4')
    assert out.returncode == 0, out.stderr[-3000:]
    return folder


@pytest.mark.parametrize('fsize, failing', [(8 * 1024, 'result.mp4'),  # as `ulimit -f 8`: the video fails
                                            (300 * 1024, 'result-preview.gif')])  # the video fits, its GIF not
def test_disk_full_while_writing_keeps_the_previous_result(good_result, fsize, failing):
    before = snapshot(good_result)
    out = run_script('demo.py', '--result_video', good_result / 'result.mp4', fsize=fsize)
    line = one_line_error(out)
    assert failing in line and 'file-size limit' in line, line
    assert snapshot(good_result) == before  # both files, byte for byte, and nothing else
    assert len(list(iter_video_frames(good_result / 'result.mp4'))) == 100  # still the good video


def test_disk_full_in_part_swap_and_crop_video_keeps_earlier_outputs(tmp_path):
    """The siblings: part_swap.py's result and crop-video.py --out's clips."""
    result = tmp_path / 'swap.mp4'
    assert run_script('part_swap.py', *PART_SWAP, '--result_video', result).returncode == 0
    before = snapshot(tmp_path)
    line = one_line_error(run_script('part_swap.py', *PART_SWAP, '--result_video', result, fsize=4096))
    assert 'swap.mp4' in line and 'file-size limit' in line, line
    assert snapshot(tmp_path) == before

    clips = tmp_path / 'clips'
    clips.mkdir()
    (clips / 'driving_0.mp4').write_bytes(b'an earlier clip')
    line = one_line_error(run_script('crop-video.py', '--inp', BUNDLED / 'driving.mp4', '--mode', 'motion',
                                     '--motion_threshold', '0.02', '--min_frames', '10', '--out', clips, '--quiet',
                                     fsize=4096))
    assert 'driving_0.mp4' in line and 'file-size limit' in line, line
    assert snapshot(clips) == {'driving_0.mp4': b'an earlier clip'}


@pytest.fixture
def tiny_training(tmp_path, vgg19_weights_file):
    """A dataset and the fixture's tiny config (3 videos of 64x64 frames, batch 2)."""
    root = make_dataset(tmp_path / 'data', 'folder')
    return make_config(tmp_path, root, vgg19_weights_file, epochs=1)


def train(config, log_dir, *extra, fsize=None, timeout=600):
    return run_script('run.py', '--config', config, '--log_dir', log_dir, '--cpu', '--num_workers', '0', *extra,
                      fsize=fsize, timeout=timeout)


def test_disk_full_at_a_checkpoint_keeps_the_last_one_loadable(tmp_path, tiny_training):
    log_dir = tmp_path / 'log'
    assert train(tiny_training, log_dir).returncode == 0
    run_folder = next(log_dir.iterdir())
    last = run_folder / '00000000-checkpoint.pth.tar'
    good = last.read_bytes()
    resume_config = tmp_path / 'two-epochs.yaml'
    config = yaml.safe_load(tiny_training.read_text())
    config['train_params']['num_epochs'] = 2
    resume_config.write_text(yaml.safe_dump(config))

    limit = len(good) // 2  # the log lines and images fit, the next checkpoint does not
    out = train(resume_config, log_dir, '--checkpoint', last, fsize=limit)
    line = one_line_error(out)
    assert '00000001-checkpoint.pth.tar' in line and 'file-size limit' in line, line
    assert last.read_bytes() == good and not (run_folder / '00000001-checkpoint.pth.tar').exists()
    assert not temp_files(run_folder)
    assert read_checkpoint(last)['epoch'] == 0
    out = train(resume_config, log_dir, '--checkpoint', last)  # and it resumes from there
    assert out.returncode == 0, out.stderr[-3000:]
    assert read_checkpoint(run_folder / '00000001-checkpoint.pth.tar')['epoch'] == 1


def test_sigkill_during_an_epoch_then_resume(tmp_path, tiny_training):
    """A training killed with SIGKILL in the middle of its second epoch resumes from its last
    checkpoint; the temporary file a save cut short would leave is removed when the run folder is
    used again."""
    config = yaml.safe_load(tiny_training.read_text())
    config['train_params'].update(num_epochs=3, num_repeats=6)
    path = tmp_path / 'three-epochs.yaml'
    path.write_text(yaml.safe_dump(config))
    log_dir = tmp_path / 'log'
    process = subprocess.Popen([sys.executable, 'run.py', '--config', path, '--log_dir', log_dir, '--cpu',
                                '--num_workers', '0'], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, 'OMP_NUM_THREADS': '1'})
    deadline = time.monotonic() + 300
    try:
        while not list(log_dir.glob('*/00000000-checkpoint.pth.tar')):
            assert process.poll() is None and time.monotonic() < deadline, 'the first epoch did not end'
            time.sleep(0.2)
        time.sleep(1.0)  # into the second epoch
        assert process.poll() is None, 'the run ended before it could be killed'
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    run_folder = next(log_dir.iterdir())
    checkpoint = run_folder / '00000000-checkpoint.pth.tar'
    assert read_checkpoint(checkpoint)['epoch'] == 0  # complete: it was renamed only when written whole
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    # what a kill during a save leaves (modules.fileio.temp_path_for's name, of a process that has ended)
    stale = run_folder / f'.00000001-checkpoint.pth.{int(dead.stdout)}.tmp.tar'
    stale.write_bytes(b'half a checkpoint')

    config['train_params']['num_epochs'] = 2
    path.write_text(yaml.safe_dump(config))
    out = run_script('run.py', '--config', path, '--log_dir', log_dir, '--cpu', '--num_workers', '0',
                     '--checkpoint', checkpoint)
    assert out.returncode == 0, out.stderr[-3000:]
    assert read_checkpoint(run_folder / '00000001-checkpoint.pth.tar')['epoch'] == 1
    assert not stale.exists() and not temp_files(run_folder)


@pytest.mark.parametrize('sent, status, word', [(signal.SIGINT, 130, 'interrupted'), (signal.SIGTERM, 143, 'terminated')])
def test_ctrl_c_and_sigterm_keep_the_previous_result(tmp_path, sent, status, word):
    """SIGINT (Ctrl-C) or SIGTERM (kill) while demo.py animates: one line, the earlier result
    untouched, the unfinished one removed."""
    frames = np.stack(list(iter_video_frames(BUNDLED / 'driving.mp4')))
    long_video = tmp_path / 'long.mp4'
    iio.imwrite(long_video, np.concatenate([frames] * 8), plugin='FFMPEG', fps=25, codec='libx264')
    result = tmp_path / 'r.mp4'
    result.write_bytes(b'an earlier result')
    process = subprocess.Popen([sys.executable, 'demo.py', '--driving_video', long_video, '--result_video', result],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, 'OMP_NUM_THREADS': '1'})
    time.sleep(0.5)
    while not list(tmp_path.glob('.r.*.tmp.mp4')):  # the encoder has started: frames are being written
        assert process.poll() is None, process.stderr.read()[-3000:]
        time.sleep(0.1)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=60)
    line = one_line_error(subprocess.CompletedProcess(process.args, process.returncode, '', stderr), status=status)
    assert word in line
    assert result.read_bytes() == b'an earlier result' and not temp_files(tmp_path)


@pytest.fixture(scope='module')
def earlier_export(tmp_path_factory):
    """export.py's graphs of the FOMM reference fixture: the earlier export in a folder that a new
    export (the bundled model's, other graphs) then fails in."""
    folder = tmp_path_factory.mktemp('export') / 'onnx'
    out = run_script('export.py', '--config', FIXTURE_DIR / 'config.yaml', '--checkpoint',
                     FIXTURE_DIR / 'checkpoint.pth.tar', '--out', folder)
    assert out.returncode == 0, out.stderr[-3000:]
    return folder


@pytest.mark.parametrize('fault', ['full disk', 'Ctrl-C'])
def test_a_failed_export_keeps_the_earlier_export_whole(tmp_path, earlier_export, fault):
    """export.py over an earlier export: the disk fills at the last graph (its first two were written),
    or Ctrl-C arrives once it writes: one line, and the folder is the earlier export byte for byte, no
    graph of the new model beside the old model.json, no temporary file."""
    folder = tmp_path / 'onnx'
    shutil.copytree(earlier_export, folder)
    before = snapshot(folder)
    args = ['export.py', '--config', CONFIG, '--checkpoint', CHECKPOINT, '--out', folder]
    if fault == 'full disk':  # the bundled model's kp_detector.onnx (4.3 MB) fits, its frame.onnx (8.7 MB) not
        line = one_line_error(run_script(*args, fsize=6 * 1024 * 1024))
        assert 'frame.onnx' in line and 'file-size limit' in line, line
    else:
        process = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        while not temp_files(folder):  # a graph is being written
            assert process.poll() is None, process.stderr.read()[-3000:]
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        line = one_line_error(subprocess.CompletedProcess(process.args, process.returncode, '', stderr), status=130)
        assert 'interrupted' in line
    assert snapshot(folder) == before and not temp_files(folder)


# ----------------------------------------------------------------------------------------------
# Output paths that cannot be written: one rule (missing folders are created when written into)
# ----------------------------------------------------------------------------------------------

def test_missing_folders_are_created_for_the_result_and_the_preview(tmp_path):
    out = run_script('demo.py', '--result_video', tmp_path / 'a' / 'b' / 'r.mp4', '--preview',
                     tmp_path / 'c' / 'p.gif')
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / 'a' / 'b' / 'r.mp4').is_file() and (tmp_path / 'c' / 'p.gif').is_file()
    assert not temp_files(tmp_path)


@pytest.mark.parametrize('script, args', [('demo.py', []), ('part_swap.py', PART_SWAP)])
@pytest.mark.parametrize('case', ['folder', 'parent is a file', 'immutable folder', 'inside an immutable folder',
                                  'preview in an immutable folder', 'unknown type'])
def test_unwritable_result_paths_are_one_line_errors(tmp_path, immutable, script, args, case):
    (tmp_path / 'a-file').write_bytes(b'x')
    (tmp_path / 'a-folder').mkdir()
    flags = {'folder': ['--result_video', tmp_path / 'a-folder'],
             'parent is a file': ['--result_video', tmp_path / 'a-file' / 'r.mp4'],
             'unknown type': ['--result_video', tmp_path / 'r.txt']}.get(case)
    if flags is None:
        locked = immutable(tmp_path / 'locked')
        flags = {'immutable folder': ['--result_video', locked / 'r.mp4'],
                 'inside an immutable folder': ['--result_video', locked / 'new' / 'r.mp4'],
                 'preview in an immutable folder': ['--result_video', tmp_path / 'r.mp4', '--preview',
                                                    locked / 'p.gif']}[case]
    before = snapshot(tmp_path)
    line = one_line_error(run_script(script, *args, *flags))
    assert str(flags[-1]) in line or str(flags[-1].parent) in line, line
    assert snapshot(tmp_path) == before  # nothing created, nothing half-written


def test_a_result_beside_the_previous_one_in_an_immutable_folder(tmp_path, immutable):
    """An immutable folder holding an earlier result: refused before any work, the result kept."""
    folder = tmp_path / 'results'
    folder.mkdir()
    (folder / 'r.mp4').write_bytes(b'an earlier result')
    immutable(folder)
    line = one_line_error(run_script('demo.py', '--result_video', folder / 'r.mp4'))
    assert 'cannot write in' in line and 'r.mp4' in line
    assert (folder / 'r.mp4').read_bytes() == b'an earlier result'


@pytest.mark.parametrize('case', ['immutable', 'under a file'])
def test_run_py_log_dir_that_cannot_be_written(tmp_path, immutable, tiny_training, case):
    log_dir = immutable(tmp_path / 'log') if case == 'immutable' else tmp_path / 'a-file' / 'log'
    (tmp_path / 'a-file').write_bytes(b'x')
    line = one_line_error(train(tiny_training, log_dir))
    assert '--log_dir' in line, line
    assert not list(log_dir.glob('*')) if log_dir.is_dir() else not log_dir.exists()


def test_crop_video_cartoon_faces_and_export_out_that_cannot_be_written(tmp_path, immutable):
    locked = immutable(tmp_path / 'locked')
    line = one_line_error(run_script('crop-video.py', '--inp', BUNDLED / 'driving.mp4', '--mode', 'motion',
                                     '--motion_threshold', '0.02', '--min_frames', '10', '--out', locked / 'clips',
                                     '--quiet'))
    assert '--out' in line and 'clips' in line
    line = one_line_error(run_script('cartoon_faces.py', '--out', locked / 'data', '--videos', '2', '--frames', '4',
                                     '--size', '32'))
    assert 'data' in line
    line = one_line_error(run_script('export.py', '--config', CONFIG, '--checkpoint', CHECKPOINT, '--out',
                                     locked / 'onnx'))
    assert 'onnx' in line and 'cannot' in line, line
    assert not list(locked.iterdir())


def test_results_beside_a_checkpoint_in_an_immutable_folder(tmp_path, immutable):
    """run.py --mode reconstruction writes beside --checkpoint (the original's contract): a checkpoint
    in a folder that cannot be written is refused before any work."""
    folder = tmp_path / 'published'
    folder.mkdir()
    shutil.copy(CHECKPOINT, folder / 'cartoon-64.pth.tar')
    immutable(folder)
    line = one_line_error(run_script('run.py', '--config', CONFIG, '--mode', 'reconstruction', '--checkpoint',
                                     folder / 'cartoon-64.pth.tar', '--cpu'))
    assert 'beside --checkpoint' in line, line


# ----------------------------------------------------------------------------------------------
# Hostile or oversized inputs
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def bombs(tmp_path_factory):
    """A 9000x9000 PNG of about 250 KB, an mp4 of three 8192x8192 frames, and a 0.6 KB YAML config of
    nested aliases that expands to 10^9 nodes ('billion laughs')."""
    from PIL import Image
    folder = tmp_path_factory.mktemp('bombs')
    Image.new('RGB', (9000, 9000), (120, 80, 40)).save(folder / 'big.png', optimize=True)
    subprocess.run([ffmpeg_exe(), '-v', 'error', '-y', '-f', 'lavfi', '-i', 'color=c=gray:s=8192x8192:d=0.3', '-r', '10',
                    '-c:v', 'libx264', '-preset', 'ultrafast', str(folder / 'big.mp4')], check=True)
    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]']
    lines += [f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * 10) + ']' for i in range(1, 10)]
    (folder / 'laughs.yaml').write_text('\n'.join(lines + ['model_params: *a9']) + '\n')
    return folder


def bomb_run(script, *args):
    """(exit status, peak RSS in MB, the one error line) of a run that must refuse its input."""
    returncode, megabytes = peak_rss_mb([sys.executable, script, *args], cwd=REPO)
    line = one_line_error(run_script(script, *args))
    assert returncode == 2
    return megabytes, line


@pytest.mark.parametrize('script, args, names', [
    ('demo.py', ['--source_image', '{bombs}/big.png'], ['9000x9000', 'FOMM_MAX_PIXELS']),
    ('demo.py', ['--driving_video', '{bombs}/big.mp4'], ['8192x8192', 'FOMM_MAX_PIXELS']),
    ('part_swap.py', ['--config', CONFIG, '--checkpoint', CHECKPOINT, '--source_image', '{bombs}/big.png',
                      '--target_video', BUNDLED / 'driving.mp4', '--source_mask', BUNDLED / 'source-mask.png'],
     ['9000x9000']),
    ('crop-video.py', ['--inp', '{bombs}/big.mp4', '--quiet'], ['8192x8192']),
    ('demo.py', ['--config', '{bombs}/laughs.yaml', '--checkpoint', CHECKPOINT, '--source_image',
                 BUNDLED / 'source.png', '--driving_video', BUNDLED / 'driving.mp4'], ['aliases', 'FOMM_MAX_CONFIG_NODES']),
    ('run.py', ['--config', '{bombs}/laughs.yaml'], ['aliases']),
])
def test_memory_bombs_are_refused_before_they_are_decoded(tmp_path, bombs, script, args, names):
    args = [str(a).replace('{bombs}', str(bombs)) for a in args]
    megabytes, line = bomb_run(script, *args, *(['--result_video', tmp_path / 'r.mp4'] if script != 'crop-video.py'
                                                and script != 'run.py' else []))
    assert all(name in line for name in names), line
    assert megabytes < MAX_BOMB_RSS_MB, f'{script} reached {megabytes:.0f} MB'
    assert not list(tmp_path.iterdir())


def test_the_pixel_limit_is_documented_and_can_be_raised(tmp_path):
    """FOMM_MAX_PIXELS: the bundled 64x64 source (4096 pixels) is refused under a limit of 4000 and
    animated under 5000."""
    line = one_line_error(run_script('demo.py', '--result_video', tmp_path / 'r.mp4', env={'FOMM_MAX_PIXELS': '4000'}))
    assert '64x64' in line and 'FOMM_MAX_PIXELS' in line
    out = run_script('demo.py', '--result_video', tmp_path / 'r.mp4', env={'FOMM_MAX_PIXELS': '5000'})
    assert out.returncode == 0, out.stderr[-3000:]
    readme = (REPO / 'README.md').read_text()
    assert 'FOMM_MAX_PIXELS' in readme and 'FOMM_MAX_CONFIG_NODES' in readme


def test_part_swap_refuses_target_masks_of_the_wrong_size(tmp_path):
    """A 100x40 mask for 64x64 target frames was stretched; now refused like a wrong source mask, and
    the earlier result stays."""
    masks = tmp_path / 'masks'
    masks.mkdir()
    for t in range(3):
        iio.imwrite(masks / f'{t}.png', np.full((40, 100), 255, np.uint8))
    result = tmp_path / 'r.mp4'
    result.write_bytes(b'an earlier result')
    args = [a for a in PART_SWAP if a not in ('--source_mask', BUNDLED / 'source-mask.png')]
    line = one_line_error(run_script('part_swap.py', *args, '--target_masks', masks, '--result_video', result))
    assert '--target_masks' in line and '100x40' in line and '64x64' in line, line
    assert result.read_bytes() == b'an earlier result'


def test_hostile_checkpoint_and_truncated_input_are_one_line(tmp_path):
    """A checkpoint that would run code when unpickled, and a truncated driving video."""
    class Payload:
        def __reduce__(self):
            return (os.system, ('touch ' + str(tmp_path / 'pwned'),))
    torch.save({'generator': Payload()}, tmp_path / 'evil.pth.tar')
    line = one_line_error(run_script('demo.py', '--config', CONFIG, '--checkpoint', tmp_path / 'evil.pth.tar',
                                     '--source_image', BUNDLED / 'source.png', '--driving_video',
                                     BUNDLED / 'driving.mp4', '--result_video', tmp_path / 'r.mp4'))
    assert 'refusing to unpickle' in line and not (tmp_path / 'pwned').exists()
    truncated = tmp_path / 'cut.mp4'
    truncated.write_bytes((BUNDLED / 'driving.mp4').read_bytes()[:3000])
    line = one_line_error(run_script('demo.py', '--driving_video', truncated, '--result_video', tmp_path / 'r.mp4'))
    assert 'cut.mp4' in line
    assert not (tmp_path / 'r.mp4').exists() and not temp_files(tmp_path)
