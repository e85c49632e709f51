"""run.py with a TPSMM config on small generated videos: train (loss goes down, TPSMM's checkpoint
layout), train_avd, reconstruction and animate, --tag, and the errors of the new modes."""
import re

import numpy as np
import pytest
import torch
import yaml

from modules.build import build_models
from modules.checkpoint import read_checkpoint
from tests.test_train import error_line, make_dataset, run
from tests.tpsmm_fixture import TPSMM_FIXTURE_DIR

LOSSES = ['perceptual', 'equivariance_value', 'warp_loss', 'bg']


def tps_config(tmp_path, root, epochs=4, **train_overrides):
    """TPSMM's tiny fixture config pointed at `root`, with the portable VGG19 weights."""
    config = yaml.safe_load((TPSMM_FIXTURE_DIR / 'config.yaml').read_text())
    config['dataset_params'].update(root_dir=str(root), id_sampling=False)
    config['train_params'].update(num_epochs=epochs, num_repeats=4, batch_size=2, checkpoint_freq=2,
                                  epoch_milestones=[100], bg_start=1, dropout_epoch=2, vgg19_weights='portable')
    config['train_params'].update(train_overrides)
    config['train_avd_params'].update(num_epochs=3, num_repeats=8, batch_size=4, checkpoint_freq=3,
                                      epoch_milestones=[100])
    config['reconstruction_params'] = {'num_videos': 2, 'format': '.gif'}
    config['animate_params'] = {'num_pairs': 2, 'format': '.gif',
                                'normalization_params': {'use_relative_movement': True, 'adapt_movement_scale': True}}
    path = tmp_path / 'tiny-tps.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def log_lines(folder):
    """[(epoch, {loss: value})] of a run folder's log.txt."""
    rows = []
    for line in (folder / 'log.txt').read_text().splitlines():
        epoch, values = line.split(') ')
        rows.append((int(epoch), {k: float(v) for k, v in (part.split(' - ') for part in values.split('; '))}))
    return rows


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Four epochs of TPSMM training (dropout in epochs 0-1, background motion from epoch 1)."""
    tmp_path = tmp_path_factory.mktemp('tps-run')
    root = make_dataset(tmp_path / 'data', 'mp4', num_videos=3, num_frames=12)
    config = tps_config(tmp_path, root)
    out = run('--config', config, '--mode', 'train', '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0',
              '--tag', 'first try')
    assert out.returncode == 0, out.stderr[-3000:]
    folders = [p for p in (tmp_path / 'log').iterdir() if p.is_dir()]
    assert len(folders) == 1
    return dict(tmp_path=tmp_path, config=config, folder=folders[0], root=root)


def test_train_writes_tpsmms_layout_and_learns(trained):
    folder = trained['folder']
    assert re.fullmatch(r'tiny-tps \d\d_\d\d_\d\d_\d\d\.\d\d\.\d\d first try', folder.name)
    rows = log_lines(folder)
    assert [epoch for epoch, _ in rows] == [0, 1, 2, 3]
    assert list(rows[0][1]) == LOSSES[:3], 'no bg loss before bg_start'
    assert list(rows[1][1]) == LOSSES
    assert rows[-1][1]['perceptual'] < rows[0][1]['perceptual'], rows
    assert sorted(p.name for p in folder.glob('*-checkpoint.pth.tar')) == ['00000001-checkpoint.pth.tar',
                                                                          '00000003-checkpoint.pth.tar']
    checkpoint = read_checkpoint(folder / '00000003-checkpoint.pth.tar')
    assert list(checkpoint) == ['inpainting_network', 'dense_motion_network', 'kp_detector', 'optimizer', 'bg_predictor',
                                'optimizer_bg_predictor', 'epoch']
    assert checkpoint['epoch'] == 3
    group = checkpoint['optimizer']['param_groups'][0]
    assert group['weight_decay'] == 1e-4 and tuple(group['betas']) == (0.5, 0.999)
    models = build_models(yaml.safe_load(trained['config'].read_text())['model_params'])
    expected = sum(len(list(models[n].parameters())) for n in ('inpainting_network', 'dense_motion_network',
                                                                'kp_detector'))
    assert len(checkpoint['optimizer']['param_groups']) == 1 and len(group['params']) == expected
    assert len(checkpoint['optimizer']['state']) == expected, 'every tensor of the one Adam was stepped'
    assert sorted(p.name for p in (folder / 'train-vis').iterdir()) == [f'0000000{i}-rec.png' for i in range(4)]


def test_resume_goes_on_at_the_next_epoch(trained, tmp_path):
    import shutil
    folder = tmp_path / 'resumed'
    shutil.copytree(trained['folder'], folder)
    config = yaml.safe_load(trained['config'].read_text())
    config['train_params']['num_epochs'] = 5
    (folder / 'tiny-tps.yaml').write_text(yaml.safe_dump(config))
    out = run('--config', folder / 'tiny-tps.yaml', '--mode', 'train', '--cpu', '--num_workers', '0',
              '--checkpoint', folder / '00000003-checkpoint.pth.tar')
    assert out.returncode == 0, out.stderr[-3000:]
    assert [epoch for epoch, _ in log_lines(folder)] == [0, 1, 2, 3, 4]


def test_train_avd_then_demo_in_avd_mode(trained, tmp_path):
    checkpoint = trained['folder'] / '00000003-checkpoint.pth.tar'
    out = run('--config', trained['config'], '--mode', 'train_avd', '--checkpoint', checkpoint,
              '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-3000:]
    folder = next(p for p in (tmp_path / 'log').iterdir() if p.is_dir())
    rows = log_lines(folder)
    assert [epoch for epoch, _ in rows] == [0, 1, 2] and all(list(values) == ['rec_kp'] for _, values in rows)
    assert rows[-1][1]['rec_kp'] < rows[0][1]['rec_kp'], rows
    saved = read_checkpoint(folder / '00000002-checkpoint.pth.tar')
    assert list(saved) == ['inpainting_network', 'dense_motion_network', 'kp_detector', 'avd_network',
                           'optimizer_avd', 'bg_predictor', 'epoch']
    before = read_checkpoint(checkpoint)
    for name in ('inpainting_network', 'dense_motion_network'):
        assert all(torch.equal(before[name][k], v) for k, v in saved[name].items()), f'{name} is not trained here'

    from toolkit import demo
    source = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    driving = [np.roll(source, 3 * t, axis=1) for t in range(4)]
    models = demo.load_checkpoints(str(trained['config']), str(folder / '00000002-checkpoint.pth.tar'), cpu=True)
    assert models[3] is not None
    frames = demo.make_animation(source, driving, *models, 'cpu', mode='avd')
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3) and np.isfinite(frames).all()


@pytest.mark.parametrize('mode,folder,pattern', [('reconstruction', 'reconstruction', 'l1.csv'),
                                                  ('animate', 'animation', '*.gif')])
def test_reconstruction_and_animate_modes(trained, tmp_path, mode, folder, pattern):
    checkpoint = trained['folder'] / '00000003-checkpoint.pth.tar'
    out = run('--config', trained['config'], '--mode', mode, '--checkpoint', checkpoint, '--log_dir',
              tmp_path / 'log', '--cpu', '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-3000:]
    run_folder = checkpoint.parent  # the checkpoint's folder, as TPSMM's run.py
    assert not (tmp_path / 'log').exists()
    assert list((run_folder / folder).glob(pattern))
    assert len(list((run_folder / folder / 'png').glob('*.png'))) == 2
    if mode == 'reconstruction':
        rows = (run_folder / folder / 'l1.csv').read_text().splitlines()
        assert rows[0] == 'video,l1' and rows[-1].startswith('mean,') and 0 < float(rows[-1].split(',')[1]) < 0.5


def test_new_mode_errors_are_one_line(trained, tmp_path):
    cases = [
        (['--config', trained['config'], '--mode', 'train_avd'], 'needs --checkpoint'),
        (['--config', 'config/cartoon-64.yaml', '--mode', 'train_avd', '--checkpoint',
          'pretrained/cartoon-64/cartoon-64.pth.tar'], 'is an FOMM config'),
        (['--config', trained['config'], '--mode', 'train', '--bf16'], 'FOMM configs'),
        (['--config', trained['config'], '--mode', 'reconstruction', '--checkpoint',
          'pretrained/cartoon-64/cartoon-64.pth.tar'], 'FOMM checkpoint'),
    ]
    for args, message in cases:
        out = run(*args, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0')
        assert message in error_line(out)


def test_ddp_ranks_end_with_identical_parameters(tmp_path):
    """Two torchrun processes (gloo): DDP keeps TPSMM's parameters identical across ranks (its
    ResNets' plain BatchNorm statistics are broadcast from rank 0 at each forward, then move with
    each rank's own batch); only rank 0 writes."""
    from tests.test_ddp import torchrun
    root = make_dataset(tmp_path / 'data', 'folder', num_videos=4)
    config = tps_config(tmp_path, root, epochs=1, batch_size=4, checkpoint_freq=1)
    out = torchrun('tests/ddp_worker.py', config, tmp_path / 'run', tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    rank0 = torch.load(tmp_path / 'rank0.pt', weights_only=True)
    rank1 = torch.load(tmp_path / 'rank1.pt', weights_only=True)
    models = build_models(yaml.safe_load(config.read_text())['model_params'])
    for name in ('inpainting_network', 'dense_motion_network', 'kp_detector', 'bg_predictor'):
        for key, _ in models[name].named_parameters():
            assert torch.equal(rank0[name][key], rank1[name][key]), f'{name}.{key} differs between ranks'
    assert [p.name for p in sorted((tmp_path / 'run').glob('*.pth.tar'))] == ['00000000-checkpoint.pth.tar']
    assert len((tmp_path / 'run' / 'log.txt').read_text().splitlines()) == 1
