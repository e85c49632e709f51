"""Entry point of the toolkit, as the original run.py:

    python run.py --config config/vox-256.yaml --mode train [--device_ids 0,1]
    python run.py --config config/vox-256.yaml --mode train --checkpoint "log/vox-256 .../00000009-checkpoint.pth.tar"
    python run.py --config config/vox-adv-256.yaml --mode train --init vox-cpk.pth.tar
    torchrun --nproc_per_node=4 run.py --config config/vox-256.yaml --mode train
    python run.py --config config/vox-256.yaml --mode reconstruction --checkpoint vox-cpk.pth.tar
    python run.py --config config/vox-256.yaml --mode animate --checkpoint vox-cpk.pth.tar
    python run.py --config config/tpsmm-vox-256.yaml --mode train                       (TPSMM)
    python run.py --config config/tpsmm-vox-256.yaml --mode train_avd --checkpoint "log/.../00000099-checkpoint.pth.tar"

A user mistake (bad config, checkpoint, dataset) is one line on stderr and exit status 2.
"""
import argparse
import logging
import sys

from modules.limits import LIMITS_HELP
from toolkit.cli import option_defaults, run_entry_point
from toolkit.runner import MODES, RunOptions, run


def build_parser():
    parser = argparse.ArgumentParser(description='First Order Motion Model and Thin-Plate Spline Motion Model: '
                                                 'train, reconstruct, animate.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=LIMITS_HELP)
    parser.add_argument('--config', required=True,
                        help='path to a YAML config (see config/; the model family is read from it)')
    parser.add_argument('--mode', choices=MODES,
                        help='train_avd (TPSMM configs): the AVD network, after train, from --checkpoint; '
                             'train_segmentation: the part segmenter of the config\'s segmentation_params, for '
                             'part_swap.py')
    parser.add_argument('--log_dir', help='folder of the run folders')
    parser.add_argument('--tag', help='appended to the run folder\'s name')
    parser.add_argument('--checkpoint',
                        help='train: resume this run (same folder, next epoch, optimizers and schedulers '
                             'restored); reconstruction/animate: the weights to use')
    parser.add_argument('--init',
                        help='train: start a NEW run at epoch 0 from this checkpoint\'s weights only (e.g. '
                             'vox-cpk.pth.tar into vox-adv-256.yaml; a missing discriminator is fine)')
    parser.add_argument('--device_ids', type=lambda s: [int(i) for i in s.split(',') if i != ''],
                        help='comma-separated CUDA device ids; several = DataParallel with synchronised BatchNorm')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even if a GPU is present')
    parser.add_argument('--num_workers', type=int, help='data-loading worker processes')
    parser.add_argument('--seed', type=int,
                        help='seeds torch, numpy and random before the models are built: the same command '
                             'starts the same training (initial weights, frame pairs, augmentations)')
    parser.add_argument('--bf16', action='store_true',
                        help='train with bfloat16 mixed precision (torch.autocast; losses and weights stay '
                             'float32): faster on CPUs with AVX512-BF16/AMX and on Ampere+ GPUs (docs/training.md); '
                             'off (float32, as the original) by default')
    parser.add_argument('--verbose', action='store_true', help='print the models and debug logs')
    parser.set_defaults(**option_defaults(RunOptions))  # one source of defaults: the options class
    return parser


def main(argv=None):
    options = vars(build_parser().parse_args(argv))
    return run_entry_point(run, dict(options, argv=argv), describe=lambda log_dir: log_dir and f'done: {log_dir}',
                           level=logging.DEBUG if options['verbose'] else logging.INFO)


if __name__ == '__main__':
    sys.exit(main())
