"""Launched by tests/test_ddp.py with torchrun (2 CPU processes, gloo): trains the config's family's
training class (modules.families) through toolkit.training.fit and saves each rank's final weights, so
the test can check that the ranks agree."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.datasets import FramesDataset  # noqa: E402
from modules.build import build_models  # noqa: E402
from modules.config import load_config  # noqa: E402
from modules.families import family_of  # noqa: E402
from toolkit.runner import setup_distributed  # noqa: E402
from toolkit.training import fit  # noqa: E402


def main(config_path, log_dir, out_dir):
    device, distributed = setup_distributed(cpu=True)
    torch.manual_seed(100 + distributed['rank'])  # different initial weights: DDP must sync them from rank 0
    config = load_config(config_path)
    models = build_models(config['model_params'], device=device)
    dataset = FramesDataset(is_train=True, **config['dataset_params'])
    family = family_of(config['model_params'])
    for name in family.trained_apart:
        models.pop(name)
    fit(config, family.training(config['train_params'], models), None, log_dir, dataset, [], device=device,
        distributed=distributed)
    torch.save({name: model.state_dict() for name, model in models.items()},
               Path(out_dir) / f'rank{distributed["rank"]}.pt')
    torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main(*sys.argv[1:4])
