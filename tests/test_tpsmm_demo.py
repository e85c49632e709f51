"""demo.py with TPSMM configs: TPSMM's load_checkpoints / make_animation API against the original's
outputs (tests/data/tpsmm_fixture_small), and the CLI's --mode standard|relative|avd."""
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from toolkit import demo
from toolkit.animation import ImageAnimator, adapt_movement_scale_factor, relative_kp
from toolkit.logger import Logger
from modules.build import build_models
from modules.families import family_named
from tests.conftest import REPO, assert_close
from tests.tpsmm_fixture import TPSMM_FIXTURE_DIR, build_checkpoint
from tests.video_utils import square_frames, write_video
from toolkit.video_io import iter_video_frames, read_video_meta

CONFIG = TPSMM_FIXTURE_DIR / 'config.yaml'
T = 4


@pytest.fixture(scope='module')
def tps_ref():
    return torch.load(TPSMM_FIXTURE_DIR / 'fixtures.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def checkpoint_file(tmp_path_factory):
    """The fixture checkpoint as TPSMM's train_avd.py saved it (with avd_network), and one without it."""
    folder = tmp_path_factory.mktemp('tps')
    checkpoint = build_checkpoint()
    torch.save(checkpoint, folder / 'with-avd.pth.tar')
    torch.save({k: v for k, v in checkpoint.items() if k not in ('avd_network', 'optimizer_avd')},
               folder / 'without-avd.pth.tar')
    return folder / 'with-avd.pth.tar'


@pytest.fixture(scope='module')
def models(checkpoint_file):
    return demo.load_checkpoints(str(CONFIG), str(checkpoint_file), torch.device('cpu'))


def fixture_frames(ref):
    source = ref['inputs/source'][0].permute(1, 2, 0).numpy()
    driving = [ref['inputs/driving'][0, :, t].permute(1, 2, 0).numpy() for t in range(T)]
    return source, driving


def test_load_checkpoints_returns_tpsmms_four_models(models, checkpoint_file):
    from modules.tpsmm import AVDNetwork, DenseMotionNetwork, InpaintingNetwork, KPDetector
    inpainting, kp_detector, dense_motion, avd = models
    assert isinstance(inpainting, InpaintingNetwork) and isinstance(kp_detector, KPDetector)
    assert isinstance(dense_motion, DenseMotionNetwork) and isinstance(avd, AVDNetwork)
    assert not any(m.training for m in models)
    without = demo.load_checkpoints(str(CONFIG), str(checkpoint_file.with_name('without-avd.pth.tar')), cpu=True)
    assert without[3] is None, 'no AVD network in the checkpoint: None, not random weights'


def test_relative_kp_matches_the_original(tps_ref):
    kp_source = {'fg_kp': tps_ref['kp_source/fg_kp']}
    initial = {'fg_kp': tps_ref['kp_driving/0/fg_kp']}
    scale = adapt_movement_scale_factor(kp_source, initial)
    assert scale == pytest.approx(float(tps_ref['relative_kp/adapt_movement_scale']), rel=1e-9)
    for t in range(T):
        out = relative_kp(kp_source, {'fg_kp': tps_ref[f'kp_driving/{t}/fg_kp']}, initial, scale,
                          use_relative_movement=True)
        assert_close(out['fg_kp'], tps_ref[f'relative_kp/{t}/fg_kp'], f'relative_kp/{t}')


@pytest.mark.parametrize('mode', ['relative', 'avd'])
@pytest.mark.parametrize('batch_size', [1, 3])
def test_make_animation_matches_the_original(models, tps_ref, mode, batch_size):
    source, driving = fixture_frames(tps_ref)
    out = demo.make_animation(source, driving, *models, torch.device('cpu'), batch_size=batch_size, mode=mode)
    assert len(out) == T
    assert_close(torch.from_numpy(np.stack(out)), tps_ref[f'make_animation/{mode}'], mode)


def test_standard_mode_is_the_absolute_animation(models, tps_ref):
    source, driving = fixture_frames(tps_ref)
    out = demo.make_animation(source, driving, *models, 'cpu', mode='standard')
    for t in (1, 3):
        assert_close(torch.from_numpy(out[t]).permute(2, 0, 1)[None], tps_ref[f'inpainting/nobg/{t}/prediction'],
                     f'standard/{t}')


def test_fast_mode_stays_close(models, tps_ref):
    source, driving = fixture_frames(tps_ref)
    family = family_named('tps')
    named = dict(zip(family.demo_models, models))
    generator, kp_detector = family.animation(named)
    motion = family.motion('relative', avd_network=named['avd_network'])
    fast = ImageAnimator(source, generator, kp_detector, fast=True, **motion)(np.stack(driving))
    mse = float(np.mean((fast - tps_ref['make_animation/relative'].numpy()) ** 2))
    assert 0 < mse and 10 * np.log10(1 / mse) > 35


def run_demo(*args):
    return subprocess.run([sys.executable, 'demo.py', '--cpu', *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})


@pytest.fixture(scope='module')
def cli_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('inputs')
    iio.imwrite(folder / 'source.png', square_frames(1)[0])
    return folder / 'source.png', write_video(folder / 'driving.mp4', square_frames(9), fps=12)


@pytest.mark.parametrize('mode', ['standard', 'relative', 'avd'])
def test_cli_modes_write_a_video(tmp_path, checkpoint_file, cli_inputs, mode):
    source, driving = cli_inputs
    result = tmp_path / 'result.mp4'
    out = run_demo('--config', CONFIG, '--checkpoint', checkpoint_file, '--source_image', source,
                   '--driving_video', driving, '--result_video', result, '--mode', mode)
    assert out.returncode == 0, out.stderr[-3000:]
    frames = list(iter_video_frames(result))
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)
    assert read_video_meta(result)['fps'] == pytest.approx(12)


def test_cli_modes_differ_and_bad_combinations_are_one_line(tmp_path, checkpoint_file, cli_inputs):
    source, driving = cli_inputs
    videos = {}
    for mode in ('standard', 'avd'):
        videos[mode] = tmp_path / f'{mode}.mp4'
        assert run_demo('--config', CONFIG, '--checkpoint', checkpoint_file, '--source_image', source,
                        '--driving_video', driving, '--result_video', videos[mode], '--mode', mode).returncode == 0
    a, b = (np.stack(list(iter_video_frames(v))).astype(float) for v in videos.values())
    assert np.abs(a - b).mean() > 0.5, 'the AVD network moves the keypoints elsewhere'

    cases = [
        (['--config', CONFIG, '--checkpoint', checkpoint_file.with_name('without-avd.pth.tar'), '--mode', 'avd'],
         'needs an avd_network'),
        (['--config', REPO / 'config' / 'cartoon-64.yaml', '--checkpoint',
          REPO / 'pretrained' / 'cartoon-64' / 'cartoon-64.pth.tar', '--mode', 'avd'], "--mode avd is TPSMM's"),
        (['--config', CONFIG, '--checkpoint', REPO / 'pretrained' / 'cartoon-64' / 'cartoon-64.pth.tar'],
         'an FOMM checkpoint'),
    ]
    for args, message in cases:
        result = tmp_path / 'bad.mp4'
        out = run_demo(*args, '--source_image', source, '--driving_video', driving, '--result_video', result)
        assert out.returncode == 2, out.stderr[-2000:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith('error: ') and message in last and 'Traceback' not in out.stderr, last
        assert not result.exists()


def test_logger_load_cpk_takes_tpsmms_keywords(checkpoint_file):
    """TPSMM's Logger.load_cpk(checkpoint, inpainting_network=..., ...) call works, a checkpoint
    without AVD network included."""
    config = yaml.safe_load(CONFIG.read_text())
    models = build_models(config['model_params'])
    assert Logger.load_cpk(checkpoint_file, **models) == 0
    expected = build_checkpoint()
    for name, model in models.items():
        assert all(torch.equal(value, expected[name][key]) for key, value in model.state_dict().items()), name
    fresh = build_models(config['model_params'], names=['inpainting_network', 'kp_detector', 'avd_network'])
    before = {k: v.clone() for k, v in fresh['avd_network'].state_dict().items()}
    assert Logger.load_cpk(checkpoint_file.with_name('without-avd.pth.tar'), **fresh) == 0
    assert all(torch.equal(before[k], v) for k, v in fresh['avd_network'].state_dict().items()), 'kept, with a warning'


def test_part_swap_refuses_a_tpsmm_config(tmp_path, checkpoint_file, cli_inputs):
    source, driving = cli_inputs
    out = subprocess.run([sys.executable, 'part_swap.py', '--config', str(CONFIG), '--checkpoint', str(checkpoint_file),
                          '--source_image', str(source), '--target_video', str(driving), '--source_mask', str(source),
                          '--result_video', str(tmp_path / 'swap.mp4'), '--cpu'],
                         cwd=REPO, capture_output=True, text=True)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and last.startswith('error: ') and 'TPSMM config' in last, out.stderr[-2000:]
    assert not (tmp_path / 'swap.mp4').exists()
