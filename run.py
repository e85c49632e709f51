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
import os
import random
import shlex
import shutil
import sys
from pathlib import Path
from time import gmtime, strftime

import numpy as np
import torch

from modules.build import build_models, model_names
from modules.checkpoint import load_state, read_checkpoint
from modules.config import load_config, model_family
from modules.errors import UserError, cannot_write, exit_status, os_error_cause, stop_on_sigterm
from modules.fileio import atomic_path, check_folder, make_folder
from modules.limits import LIMITS_HELP
from modules.inference import optimize_for_inference
from modules.vgg import fetch_vgg19_weights

log = logging.getLogger('run')


def build_parser():
    parser = argparse.ArgumentParser(description='First Order Motion Model and Thin-Plate Spline Motion Model: '
                                                 'train, reconstruct, animate.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=LIMITS_HELP)
    parser.add_argument('--config', required=True,
                        help='path to a YAML config (see config/; the model family is read from it)')
    parser.add_argument('--mode', default='train',
                        choices=['train', 'reconstruction', 'animate', 'train_avd', 'train_segmentation'],
                        help='train_avd (TPSMM configs): the AVD network, after train, from --checkpoint; '
                             'train_segmentation: the part segmenter of the config\'s segmentation_params, for '
                             'part_swap.py')
    parser.add_argument('--log_dir', default='log', help='folder of the run folders')
    parser.add_argument('--tag', default='', help='appended to the run folder\'s name')
    parser.add_argument('--checkpoint', default=None,
                        help='train: resume this run (same folder, next epoch, optimizers and schedulers '
                             'restored); reconstruction/animate: the weights to use')
    parser.add_argument('--init', default=None,
                        help='train: start a NEW run at epoch 0 from this checkpoint\'s weights only (e.g. '
                             'vox-cpk.pth.tar into vox-adv-256.yaml; a missing discriminator is fine)')
    parser.add_argument('--device_ids', default='0', type=lambda s: [int(i) for i in s.split(',') if i != ''],
                        help='comma-separated CUDA device ids; several = DataParallel with synchronised BatchNorm')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even if a GPU is present')
    parser.add_argument('--num_workers', type=int, default=min(6, os.cpu_count() or 1),
                        help='data-loading worker processes')
    parser.add_argument('--seed', type=int, default=0,
                        help='seeds torch, numpy and random before the models are built: the same command '
                             'starts the same training (initial weights, frame pairs, augmentations)')
    parser.add_argument('--bf16', action='store_true',
                        help='train with bfloat16 mixed precision (torch.autocast; losses and weights stay '
                             'float32): about 1.7x faster on CPUs with AVX512-BF16/AMX and on Ampere+ GPUs; '
                             'off (float32, as the original) by default')
    parser.add_argument('--verbose', action='store_true', help='print the models and debug logs')
    return parser


def seed_everything(seed):
    """Seeds python's, numpy's and torch's global generators (data-loader workers derive theirs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_distributed(cpu):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: one process per device, NCCL on CUDA, gloo on CPU.
    Returns (device, {'rank', 'world_size'}) or (None, None) outside torchrun."""
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1:
        return None, None
    use_cuda = torch.cuda.is_available() and not cpu
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend='nccl' if use_cuda else 'gloo')
    device = torch.device('cuda', local_rank) if use_cuda else torch.device('cpu')
    return device, {'rank': torch.distributed.get_rank(), 'world_size': torch.distributed.get_world_size()}


def pick_device(opt):
    if opt.cpu or not torch.cuda.is_available():
        if not opt.cpu:
            log.info('no CUDA device found: running on the CPU')
        return torch.device('cpu')
    return torch.device('cuda', opt.device_ids[0])


def uses_checkpoint_folder(opt):
    """With --checkpoint, train resumes in the checkpoint's folder and reconstruction/ and animation/
    are written beside the checkpoint, as the original (its README: "the reconstruction subfolder
    will be created in the checkpoint folder"). train_avd, which saves whole checkpoints of its own,
    starts a new folder so that it never overwrites the checkpoints it started from."""
    return opt.checkpoint is not None and opt.mode in ('train', 'reconstruction', 'animate')


def results_place(opt):
    """(the folder the results go into or under, what names it in messages): --checkpoint's folder
    when uses_checkpoint_folder(opt), else --log_dir."""
    if uses_checkpoint_folder(opt):
        return Path(opt.checkpoint).parent, f'the results beside --checkpoint {opt.checkpoint}'
    return Path(opt.log_dir), f'--log_dir {opt.log_dir}'


def run_folder(opt, distributed):
    """<log_dir>/<config name> <dd_mm_yy_HH.MM.SS> as the original; the checkpoint's folder when
    uses_checkpoint_folder(opt)."""
    if uses_checkpoint_folder(opt):
        return results_place(opt)[0]
    stamp = [strftime('%d_%m_%y_%H.%M.%S', gmtime())]
    if distributed:  # every rank uses rank 0's time stamp
        torch.distributed.broadcast_object_list(stamp, src=0)
    tag = f' {opt.tag}' if opt.tag else ''
    return Path(opt.log_dir) / f'{Path(opt.config).name.split(".")[0]} {stamp[0]}{tag}'


class RunLogHandler(logging.FileHandler):
    """<run>/run.log. A write that fails (disk full) stops this file with one warning on stderr
    instead of logging's traceback per record; the run itself reports the failure that matters."""

    def handleError(self, record):
        logging.getLogger().removeHandler(self)
        print(f'warning: cannot write {self.baseFilename} any more ({os_error_cause(sys.exc_info()[1])}); '
              f'logging to the terminal only', file=sys.stderr)


def open_run_folder(opt, log_dir):
    """Creates the run folder (modules.fileio.make_folder: one-line OutputError if it cannot be
    written) with a copy of the config; everything logged (epoch summaries with speed, warnings)
    also goes to <run>/run.log."""
    make_folder(log_dir, results_place(opt)[1])
    config_copy = log_dir / Path(opt.config).name
    if not config_copy.exists():
        with atomic_path(config_copy) as tmp:
            shutil.copyfile(opt.config, tmp)
    try:
        handler = RunLogHandler(log_dir / 'run.log')
    except OSError as e:
        raise cannot_write(log_dir / 'run.log', e, kept=None) from e
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
    logging.getLogger().addHandler(handler)


def log_command(argv):
    """Logs the command line that started this run (argv: main's, or None for sys.argv)."""
    args = sys.argv[1:] if argv is None else list(argv)
    log.info('command: %s', ' '.join(shlex.quote(str(a)) for a in ['python', 'run.py', *args]))


def segmentation_run(opt, config, device, argv):
    """--mode train_segmentation: the config's segmentation network, trained in a new run folder."""
    from modules.segmentation import build_segmentation_network
    from train_segmentation import train_segmentation
    if config.get('segmentation_params') is None:
        raise UserError(f'{opt.config} has no segmentation_params section: add one (see config/cartoon-64.yaml)')
    if opt.checkpoint or opt.init:
        raise UserError('--mode train_segmentation starts a new run: drop --checkpoint / --init')
    network = build_segmentation_network(config['segmentation_params'],
                                         config['model_params']['common_params']['num_channels']).to(device)
    log_dir = run_folder(opt, None)
    open_run_folder(opt, log_dir)
    log.info('segmentation training %s on %s, seed %d; run folder: %s', opt.config, device, opt.seed, log_dir)
    log_command(argv)
    train_segmentation(config, network, log_dir, device, num_workers=opt.num_workers)
    return log_dir


def inference_models(family, models, weights, mode):
    """(generator, kp_detector) in eval mode, rewritten for inference (modules/inference.py). TPSMM:
    a TpsGenerator over its networks, with the background motion in reconstruction mode when the
    checkpoint has a bg_predictor (as TPSMM's reconstruction.py)."""
    if family == 'fomm':
        return (optimize_for_inference(models[n].eval()) for n in ('generator', 'kp_detector'))
    from modules.tpsmm import TpsGenerator
    use_bg = mode == 'reconstruction' and 'bg_predictor' in models and weights.get('bg_predictor') is not None
    for name in ('inpainting_network', 'dense_motion_network', 'kp_detector', 'bg_predictor'):
        if name in models:
            optimize_for_inference(models[name].eval())
    generator = TpsGenerator(models['inpainting_network'], models['dense_motion_network'],
                             models['bg_predictor'] if use_bg else None)
    return generator, models['kp_detector']


def main(argv=None):
    opt = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if opt.verbose else logging.INFO, format='%(message)s')
    distributed = None
    stop_on_sigterm()
    try:
        config = load_config(opt.config)
        if opt.checkpoint is not None and opt.init is not None:
            raise UserError('give either --checkpoint (resume a run) or --init (new run from weights), not both')
        for path in (opt.checkpoint, opt.init):
            if path is not None and not Path(path).is_file():
                raise UserError(f'checkpoint {path} not found: check the path')
        if opt.bf16 and opt.mode != 'train':
            raise UserError('--bf16 is for --mode train only (inference: demo.py --fast)')
        if opt.mode not in ('train', 'train_segmentation') and opt.checkpoint is None:
            raise UserError(f'--mode {opt.mode} needs --checkpoint' + (' (the trained TPSMM model)' if
                                                                      opt.mode == 'train_avd' else ''))
        family = model_family(config['model_params'])  # CPABMM trains and runs as TPSMM
        if opt.mode == 'train_avd' and family != 'tps':
            raise UserError(f'--mode train_avd trains the AVD network of TPSMM / CPABMM: {opt.config} is an FOMM config')
        if opt.mode == 'train_segmentation' and family != 'fomm':
            raise UserError('--mode train_segmentation needs an FOMM config with segmentation_params')
        if opt.mode == 'train_avd' and config.get('train_avd_params') is None:
            raise UserError(f'{opt.config} has no train_avd_params section: add one (see config/tpsmm-vox-256.yaml)')
        if opt.bf16 and family != 'fomm':
            raise UserError('--bf16 is for FOMM configs (TPSMM solves its splines in float32)')
        # where the results go must be writable: checked before any work and before anything is created
        check_folder(*results_place(opt))

        device, distributed = setup_distributed(opt.cpu)
        device = device or pick_device(opt)
        rank = distributed['rank'] if distributed else 0
        if rank != 0:
            logging.getLogger().setLevel(logging.WARNING)

        seed_everything(opt.seed)
        if opt.mode == 'train_segmentation':
            print(f'done: {segmentation_run(opt, config, device, argv)}')
            return 0
        names = model_names(config['model_params'])
        if family == 'tps' and opt.mode == 'train':
            names = tuple(n for n in names if n != 'avd_network')  # trained apart: --mode train_avd
        models = build_models(config['model_params'], names=names, device=device)
        if opt.verbose:
            for name, model in models.items():
                log.debug('%s:\n%s', name, model)
        # Cheap checks first: the checkpoint fits the config before any data or VGG19 is touched.
        weights_path = opt.checkpoint or opt.init
        weights = None
        if weights_path is not None:
            weights = read_checkpoint(weights_path, map_location=device)
            # train() loads them (with the optimizers); the other modes use the models as loaded here
            optional = ('discriminator',) if family == 'fomm' else ('bg_predictor', 'avd_network')
            load_state(weights, models, source=weights_path, config_path=opt.config, optional=optional,
                       check_only=opt.mode == 'train')

        from frames_dataset import FramesDataset
        dataset = FramesDataset(is_train=opt.mode in ('train', 'train_avd'), **config['dataset_params'])

        log_dir = run_folder(opt, distributed)
        if rank == 0:
            open_run_folder(opt, log_dir)

        if opt.mode == 'train':
            from train import train
            train_params = config['train_params']
            if sum(train_params['loss_weights']['perceptual']) != 0:
                fetch_vgg19_weights(train_params.get('vgg19_weights'))  # downloads only if missing
            log.info('training %s on %s%s%s, seed %d; run folder: %s', opt.config, device,
                     f' x {distributed["world_size"]} processes' if distributed else '',
                     ', bfloat16 mixed precision' if opt.bf16 else '', opt.seed, log_dir)
            log_command(argv)
            options = dict(device=device, init=weights if opt.init else None, num_workers=opt.num_workers,
                           distributed=distributed, autocast_dtype=torch.bfloat16 if opt.bf16 else None)
            if family == 'tps':
                from train import train_tps
                train_tps(config, models, weights if opt.checkpoint else None, str(log_dir), dataset,
                          opt.device_ids, **options)
            else:
                train(config, models['generator'], models['discriminator'], models['kp_detector'],
                      weights if opt.checkpoint else None, str(log_dir), dataset, opt.device_ids, **options)
        elif opt.mode == 'train_avd':
            from train import train_avd
            log.info('training the AVD network of %s on %s, seed %d; run folder: %s', opt.config, device, opt.seed,
                     log_dir)
            log_command(argv)
            train_avd(config, models, str(log_dir), dataset, opt.device_ids, checkpoint=weights, device=device,
                      num_workers=opt.num_workers, distributed=distributed)
        else:
            # Inference only: modules/inference.py's exact rewrites (FOMM's batch norms folded,
            # upsampling convolutions as transposed ones: a rounding-level change), and
            # checkpoint=None: the weights were loaded (strictly) above.
            generator, kp_detector = inference_models(family, models, weights, opt.mode)
            if opt.mode == 'reconstruction':
                from reconstruction import reconstruction
                reconstruction(config, generator, kp_detector, None, str(log_dir), dataset)
            else:
                from animate import animate
                animate(config, generator, kp_detector, None, str(log_dir), dataset)
    except BaseException as e:  # a user or machine failure: one line (modules.errors); a bug: its traceback
        return exit_status(e)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    if rank == 0:
        print(f'done: {log_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
