"""The bundled cartoon model: its training recipe is reproducible, its quality holds, and a bare
`python demo.py` animates the bundled samples with it."""
import subprocess
import sys
from pathlib import Path

import torch
import yaml

import cartoon_faces
from tests.conftest import REPO

CONFIG = REPO / 'config' / 'cartoon-64.yaml'
BUNDLED = REPO / 'pretrained' / 'cartoon-64'
CHECKPOINT = BUNDLED / 'cartoon-64.pth.tar'


def load_quality_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('cartoon_quality', REPO / 'benchmarks' / 'cartoon_quality.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_one_epoch(tmp_path, data, log_dir, num_workers):
    """The recorded training command (config/cartoon-64.yaml, --seed 0) for one short epoch on `data`."""
    config = yaml.safe_load(CONFIG.read_text())
    config['dataset_params'].update(root_dir=str(data), pairs_list=None)
    config['train_params'].update(num_epochs=1, num_repeats=2)  # 2 steps of batch 12 on 13 videos
    path = tmp_path / 'cartoon-64.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run([sys.executable, 'run.py', '--config', str(path), '--mode', 'train', '--cpu', '--seed', '0',
                          '--log_dir', str(log_dir), '--num_workers', str(num_workers)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = Path(log_dir).iterdir()
    return run_dir


def test_the_training_recipe_is_reproducible(tmp_path):
    data = tmp_path / 'data'
    cartoon_faces.generate(data, videos=14, frames=8, size=64, seed=0, test_videos=1, progress=False)
    first = train_one_epoch(tmp_path, data, tmp_path / 'a', num_workers=1)
    second = train_one_epoch(tmp_path, data, tmp_path / 'b', num_workers=1)
    log_line = (first / 'log.txt').read_text()
    assert log_line.startswith('00000000) perceptual - ') and log_line == (second / 'log.txt').read_text()
    a = torch.load(first / '00000000-checkpoint.pth.tar', weights_only=True)
    b = torch.load(second / '00000000-checkpoint.pth.tar', weights_only=True)
    for name in ('generator', 'kp_detector'):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])
