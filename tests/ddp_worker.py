"""Launched by tests/test_ddp.py with torchrun (2 CPU processes, gloo): trains through train.train
(train.train_tps for a TPSMM config) and saves each rank's final weights, so the test can check that
the ranks agree."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frames_dataset import FramesDataset  # noqa: E402
from modules.build import build_models  # noqa: E402
from modules.config import load_config, model_family  # noqa: E402
from run import setup_distributed  # noqa: E402
from train import train, train_tps  # noqa: E402


def main(config_path, log_dir, out_dir):
    device, distributed = setup_distributed(cpu=True)
    torch.manual_seed(100 + distributed['rank'])  # different initial weights: DDP must sync them from rank 0
    config = load_config(config_path)
    models = build_models(config['model_params'], device=device)
    dataset = FramesDataset(is_train=True, **config['dataset_params'])
    if model_family(config['model_params']) == 'tps':
        models.pop('avd_network')
        train_tps(config, models, None, log_dir, dataset, [], device=device, distributed=distributed)
    else:
        train(config, models['generator'], models['discriminator'], models['kp_detector'], None, log_dir, dataset,
              [], device=device, distributed=distributed)
    torch.save({name: model.state_dict() for name, model in models.items()},
               Path(out_dir) / f'rank{distributed["rank"]}.pt')
    torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main(*sys.argv[1:4])
