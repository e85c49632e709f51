"""Seconds per training iteration and peak memory of vox-256 (batch 2, 256x256) through the
training class's own step (modules/training.py), without and with the GAN losses (vox-256 vs
vox-adv-256 loss settings), and what `run.py --bf16` (bfloat16 mixed precision) gains on vox-256 and
on the bundled cartoon-64 (batch 12).

    python benchmarks/train_step.py [--iters 3] [--device cpu|cuda] [--batch_size 2] [--no-bf16]

Random weights (VGG19 too: speed does not depend on the values). Prints the machine, the median
seconds per iteration after one warm-up iteration, images/s and the process's peak memory. On CUDA
it also measures batch 16. The measured runs are in docs/training.md.
"""
import argparse
import copy
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.build import build_models  # noqa: E402
from modules.config import load_config  # noqa: E402
from modules.model import Vgg19  # noqa: E402
from modules.training import FommTraining  # noqa: E402
from toolkit.devices import pick_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def measure(config_name, device, batch_size, iters, vgg_path, autocast_dtype=None):
    config = load_config(REPO / 'config' / f'{config_name}.yaml')
    train_params = copy.deepcopy(config['train_params'])
    train_params['vgg19_weights'] = vgg_path
    models = build_models(config['model_params'], device=device)
    training = FommTraining(train_params, models, autocast_dtype)
    training.prepare(models, device, [], None)
    gan = training.train_discriminator
    h, w = config['dataset_params']['frame_shape'][:2]
    x = {'source': torch.rand(batch_size, 3, h, w, device=device), 'driving': torch.rand(batch_size, 3, h, w, device=device)}
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(iters + 1):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        training.step(x, epoch=0)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if i > 0:  # the first iteration is a warm-up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    memory = (f'peak GPU memory {torch.cuda.max_memory_allocated(device) / 1024 ** 3:.2f} GB'
              if device.type == 'cuda' else f'peak RSS {peak_rss_gb():.2f} GB (process so far)')
    precision = 'bf16' if autocast_dtype is not None else 'fp32'
    print(f'{config_name:12s} {precision} batch {batch_size:2d} GAN {"on " if gan else "off"}: {seconds:.2f} s/it '
          f'(median of {iters}), {batch_size / seconds:.2f} images/s, {memory}', flush=True)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--batch_size', type=int, default=2)
    parser.add_argument('--device', default=str(pick_device()))
    parser.add_argument('--bf16', action=argparse.BooleanOptionalAction, default=True,
                        help='also time run.py --bf16 (bfloat16 autocast) against float32 (default: on)')
    opt = parser.parse_args()
    device = torch.device(opt.device)
    print(f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, '
          f'device {torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}')
    with tempfile.TemporaryDirectory() as tmp:
        vgg_path = str(Path(tmp) / 'vgg19-random.pth')
        torch.save({f'features.{k.split(".", 1)[1]}': v for k, v in Vgg19().state_dict().items()
                    if k.startswith('slice')}, vgg_path)
        no_gan = measure('vox-256', device, opt.batch_size, opt.iters, vgg_path)
        gan = measure('vox-adv-256', device, opt.batch_size, opt.iters, vgg_path)
        print(f'original on a 2-core CPU: 7.7 s/it without, 9.8 s/it with GAN -> ours: '
              f'{7.7 / no_gan:.2f}x and {9.8 / gan:.2f}x of that (machines vary by up to 2x)')
        if opt.bf16:
            fast = measure('vox-256', device, opt.batch_size, opt.iters, vgg_path, torch.bfloat16)
            cartoon = measure('cartoon-64', device, 12, opt.iters, vgg_path)
            cartoon_fast = measure('cartoon-64', device, 12, opt.iters, vgg_path, torch.bfloat16)
            print(f'--bf16 speed-up: vox-256 {no_gan / fast:.2f}x, cartoon-64 {cartoon / cartoon_fast:.2f}x')
        if device.type == 'cuda':
            measure('vox-256', device, 16, opt.iters, vgg_path)
            measure('vox-adv-256', device, 16, opt.iters, vgg_path)


if __name__ == '__main__':
    main()
