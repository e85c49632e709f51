"""DistributedDataParallel training with 2 CPU processes (gloo), launched by torchrun."""
import os
import subprocess
import sys

import torch

from tests.conftest import REPO
from tests.test_train import make_config, make_dataset, only_run_folder


def torchrun(*args, timeout=300):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MASTER_ADDR': '127.0.0.1'}
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           *map(str, args)], cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)


def test_ranks_end_with_identical_weights(tmp_path, vgg19_weights_file):
    root = make_dataset(tmp_path / 'data', 'folder', num_videos=4)
    config = make_config(tmp_path, root, vgg19_weights_file, epochs=1, batch_size=4)
    out = torchrun('tests/ddp_worker.py', config, tmp_path / 'run', tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    rank0 = torch.load(tmp_path / 'rank0.pt', weights_only=True)
    rank1 = torch.load(tmp_path / 'rank1.pt', weights_only=True)
    initial = build_reference_initial(config)
    changed = 0
    for name in rank0:
        for key, value in rank0[name].items():
            assert torch.equal(value, rank1[name][key]), f'{name}.{key} differs between ranks'
            changed += not torch.equal(value, initial[name][key])
    assert changed > 50, 'training changed the weights'
    # Only rank 0 wrote: one log line per epoch, one checkpoint.
    assert [p.name for p in sorted((tmp_path / 'run').glob('*.pth.tar'))] == ['00000000-checkpoint.pth.tar']
    assert len((tmp_path / 'run' / 'log.txt').read_text().splitlines()) == 1


def build_reference_initial(config):
    from modules.build import build_models
    from modules.config import load_config
    torch.manual_seed(100)
    models = build_models(load_config(config)['model_params'])
    return {name: model.state_dict() for name, model in models.items()}


def test_run_py_under_torchrun(tmp_path, vgg19_weights_file):
    root = make_dataset(tmp_path / 'data', 'mp4', num_videos=2)
    config = make_config(tmp_path, root, vgg19_weights_file, epochs=1, batch_size=2)
    out = torchrun('run.py', '--config', config, '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-4000:]
    folder = only_run_folder(tmp_path / 'log')
    assert [p.name for p in folder.glob('*-checkpoint.pth.tar')] == ['00000000-checkpoint.pth.tar']
    assert len((folder / 'log.txt').read_text().splitlines()) == 1
