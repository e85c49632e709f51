"""run.py --mode train end to end on small generated data, in every supported video layout."""
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from modules.checkpoint import read_checkpoint
from tests.conftest import FIXTURE_DIR, KEYS_DIR, REPO
from tests.video_utils import square_frames, write_folder, write_gif, write_strip, write_video

LOG_LINE = re.compile(r'^(\d{8})\) (\w+ - \d+\.\d{5})(; \w+ - \d+\.\d{5})*$')


def make_dataset(root, layout, num_videos=3, num_frames=8, size=64):
    """root/{train,test}/ with `num_videos` moving-square videos in one layout."""
    for split in ('train', 'test'):
        os.makedirs(root / split, exist_ok=True)
        for i in range(num_videos):
            frames = square_frames(num_frames + i, size, size)
            target = root / split / f'id{i}#clip'
            {'mp4': lambda: write_video(f'{target}.mp4', frames),
             'gif': lambda: write_gif(f'{target}.gif', frames),
             'strip': lambda: write_strip(f'{target}.png', frames),
             'folder': lambda: write_folder(target, frames)}[layout]()
    return root


def make_config(tmp_path, root, vgg19_weights, epochs=2, **train_overrides):
    """The fixture's tiny vox-like config pointed at `root`, without augmentation jitter."""
    config = yaml.safe_load((FIXTURE_DIR / 'config.yaml').read_text())
    config['dataset_params'].update(root_dir=str(root), pairs_list=None, id_sampling=False)
    config['train_params'].update(num_epochs=epochs, num_repeats=2, batch_size=2, checkpoint_freq=1,
                                  vgg19_weights=str(vgg19_weights))
    config['train_params'].update(train_overrides)
    path = tmp_path / 'tiny.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, 'run.py', *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}, timeout=timeout)


def error_line(out):
    """The process failed with exactly one 'error: ...' line (the last one) and no traceback."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr
    assert [line for line in lines if line.startswith('error: ')] == lines[-1:], out.stderr[-3000:]
    return lines[-1]


def only_run_folder(log_dir):
    folders = [p for p in log_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.mark.parametrize('layout', ['mp4', 'gif', 'strip', 'folder'])
def test_two_epochs_end_to_end(tmp_path, vgg19_weights_file, layout):
    root = make_dataset(tmp_path / 'data', layout)
    config = make_config(tmp_path, root, vgg19_weights_file)
    out = run('--config', config, '--mode', 'train', '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-3000:]
    folder = only_run_folder(tmp_path / 'log')
    assert re.fullmatch(r'tiny \d\d_\d\d_\d\d_\d\d\.\d\d\.\d\d', folder.name)
    assert (folder / 'tiny.yaml').read_text() == config.read_text()
    lines = (folder / 'log.txt').read_text().splitlines()
    assert [LOG_LINE.match(line).group(1) for line in lines] == ['00000000', '00000001']
    names = [part.split(' - ')[0] for part in lines[0].split(') ')[1].split('; ')]
    assert names == ['perceptual', 'gen_gan', 'feature_matching', 'equivariance_value', 'equivariance_jacobian',
                     'disc_gan']
    assert sorted(p.name for p in folder.glob('*-checkpoint.pth.tar')) == ['00000000-checkpoint.pth.tar',
                                                                          '00000001-checkpoint.pth.tar']
    assert sorted(p.name for p in (folder / 'train-vis').iterdir()) == ['00000000-rec.png', '00000001-rec.png']
    assert 'done: ' in out.stdout


def test_checkpoint_layout_matches_the_original(tmp_path, vgg19_weights_file):
    root = make_dataset(tmp_path / 'data', 'folder')
    config = make_config(tmp_path, root, vgg19_weights_file, epochs=1)
    assert run('--config', config, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0').returncode == 0
    ckpt = read_checkpoint(next(only_run_folder(tmp_path / 'log').glob('00000000-checkpoint.pth.tar')))
    assert list(ckpt) == ['generator', 'discriminator', 'kp_detector', 'optimizer_generator',
                          'optimizer_discriminator', 'optimizer_kp_detector', 'epoch']
    assert ckpt['epoch'] == 0
    reference = torch.load(FIXTURE_DIR / 'checkpoint.pth.tar', map_location='cpu', weights_only=True)
    for name in ('generator', 'discriminator', 'kp_detector'):
        assert [(k, tuple(v.shape), v.dtype) for k, v in ckpt[name].items()] == \
               [(k, tuple(v.shape), v.dtype) for k, v in reference[name].items()], name
        nbt = [v for k, v in ckpt[name].items() if k.endswith('num_batches_tracked')]
        assert all(int(v) == 0 for v in nbt), 'num_batches_tracked stays 0, as the original'
    assert KEYS_DIR.exists()


def test_resume_continues_at_the_next_epoch(tmp_path, vgg19_weights_file):
    root = make_dataset(tmp_path / 'data', 'strip')
    config = make_config(tmp_path, root, vgg19_weights_file, epochs=2)
    assert run('--config', config, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0').returncode == 0
    folder = only_run_folder(tmp_path / 'log')
    first = read_checkpoint(folder / '00000001-checkpoint.pth.tar')
    steps = first['optimizer_generator']['state'][0]['step'].item()

    longer = make_config(tmp_path, root, vgg19_weights_file, epochs=3)
    out = run('--config', longer, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0',
              '--checkpoint', folder / '00000001-checkpoint.pth.tar')
    assert out.returncode == 0, out.stderr[-3000:]
    assert only_run_folder(tmp_path / 'log') == folder, 'resume writes into the same run folder'
    lines = (folder / 'log.txt').read_text().splitlines()
    assert [line[:8] for line in lines] == ['00000000', '00000001', '00000002']
    resumed = read_checkpoint(folder / '00000002-checkpoint.pth.tar')
    assert resumed['epoch'] == 2
    # Adam went on from the restored state: one more epoch of steps (3 videos x 2 repeats / batch 2).
    assert resumed['optimizer_generator']['state'][0]['step'].item() == steps + steps / 2
    assert resumed['optimizer_generator']['param_groups'][0]['lr'] == pytest.approx(2e-4)


def test_init_starts_a_new_run_from_weights(tmp_path, vgg19_weights_file):
    root = make_dataset(tmp_path / 'data', 'gif')
    config = make_config(tmp_path, root, vgg19_weights_file, epochs=1)
    weights = tmp_path / 'published.pth.tar'
    state = torch.load(FIXTURE_DIR / 'checkpoint.pth.tar', map_location='cpu', weights_only=True)
    torch.save({'generator': state['generator'], 'kp_detector': state['kp_detector']}, weights)  # no discriminator
    out = run('--config', config, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0', '--init', weights)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no 'discriminator' entry" in out.stderr
    folder = only_run_folder(tmp_path / 'log')
    assert [line[:8] for line in (folder / 'log.txt').read_text().splitlines()] == ['00000000']


def test_loss_goes_down_on_an_easy_dataset(tmp_path, vgg19_weights_file):
    """Static scenes (source == driving up to the equivariance warp): a model that learns anything
    reconstructs them better and better; a broken optimizer would leave the loss where it started."""
    root = tmp_path / 'data'
    frames = square_frames(1, 64, 64)
    for split in ('train', 'test'):
        for i in range(4):
            write_folder(root / split / f'v{i}', frames.repeat(4, axis=0))
    config = make_config(tmp_path, root, vgg19_weights_file, epochs=6, lr_generator=1e-3, lr_kp_detector=1e-3)
    out = run('--config', config, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (only_run_folder(tmp_path / 'log') / 'log.txt').read_text().splitlines()
    perceptual = [float(re.search(r'perceptual - ([\d.]+)', line).group(1)) for line in lines]
    assert len(perceptual) == 6
    assert perceptual[-1] < 0.7 * perceptual[0], perceptual


def test_bad_inputs_are_one_line_errors(tmp_path, vgg19_weights_file):
    empty = tmp_path / 'empty'
    (empty / 'train').mkdir(parents=True)
    (empty / 'test').mkdir()
    out = run('--config', make_config(tmp_path, empty, vgg19_weights_file), '--log_dir', tmp_path / 'log', '--cpu')
    assert 'no videos found' in error_line(out)

    root = make_dataset(tmp_path / 'data', 'folder', num_videos=1)
    out = run('--config', make_config(tmp_path, root, vgg19_weights_file, batch_size=4) , '--log_dir',
              tmp_path / 'log', '--cpu', '--num_workers', '0')
    assert 'batch_size 4 is larger than the dataset (2 items' in error_line(out)

    vox = REPO / 'config' / 'vox-256.yaml'
    other = yaml.safe_load(vox.read_text())
    other['dataset_params'].update(root_dir=str(root), pairs_list=None)
    other_path = tmp_path / 'vox.yaml'
    other_path.write_text(yaml.safe_dump(other, sort_keys=False))
    out = run('--config', other_path, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0',
              '--checkpoint', FIXTURE_DIR / 'checkpoint.pth.tar')
    assert 'does not fit' in error_line(out)


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path, vgg19_weights_file, monkeypatch):
    """A loss that turns NaN stops training before the step that would spread it, naming the loss and
    the last checkpoint; the checkpoints already written stay as they were."""
    import modules.training as training_classes
    from toolkit import training as train_module
    from toolkit.datasets import FramesDataset
    from modules.build import build_models
    from modules.config import load_config
    from modules.errors import TrainingError
    from modules.model import GeneratorFullModel

    calls = {'n': 0}

    class GoesNaN(GeneratorFullModel):
        def forward(self, x):
            losses, generated = super().forward(x)
            calls['n'] += 1
            if calls['n'] == 5:  # third epoch (2 iterations per epoch)
                losses['equivariance_value'] = losses['equivariance_value'] * float('nan')
            return losses, generated

    monkeypatch.setattr(training_classes, 'GeneratorFullModel', GoesNaN)
    root = make_dataset(tmp_path / 'data', 'folder', num_videos=2)
    config = load_config(make_config(tmp_path, root, vgg19_weights_file, epochs=4))
    models = build_models(config['model_params'])
    dataset = FramesDataset(is_train=True, **config['dataset_params'])
    run_dir = tmp_path / 'run'
    with pytest.raises(TrainingError) as err:
        train_module.train(config, models['generator'], models['discriminator'], models['kp_detector'], None,
                           str(run_dir), dataset, [], device='cpu')
    message = str(err.value)
    assert "loss 'equivariance_value' became nan at epoch 2, iteration 0" in message
    assert '00000001-checkpoint.pth.tar' in message
    good = read_checkpoint(run_dir / '00000001-checkpoint.pth.tar')
    assert good['epoch'] == 1
    assert all(torch.isfinite(v).all() for v in good['generator'].values() if v.is_floating_point())
    assert sorted(p.name for p in run_dir.glob('*.pth.tar')) == ['00000000-checkpoint.pth.tar',
                                                                 '00000001-checkpoint.pth.tar']


def test_bf16_training_runs_and_saves_float32_checkpoints(tmp_path, vgg19_weights_file):
    root = make_dataset(tmp_path / 'data', 'folder')
    config = make_config(tmp_path, root, vgg19_weights_file, epochs=1)
    out = run('--config', config, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0', '--bf16')
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'bfloat16 mixed precision' in out.stderr
    folder = only_run_folder(tmp_path / 'log')
    assert LOG_LINE.match((folder / 'log.txt').read_text().splitlines()[0])
    checkpoint = read_checkpoint(folder / '00000000-checkpoint.pth.tar')
    for name in ('generator', 'kp_detector', 'discriminator'):
        assert {v.dtype for v in checkpoint[name].values() if v.is_floating_point()} == {torch.float32}, name

    out = run('--config', config, '--log_dir', tmp_path / 'log', '--cpu', '--mode', 'reconstruction', '--bf16',
              '--checkpoint', folder / '00000000-checkpoint.pth.tar')
    assert '--bf16 is for --mode train only' in error_line(out)
