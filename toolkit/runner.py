"""run.py's job as a library: `run(**options)` (RunOptions: run.py's flags) trains, reconstructs or
animates with a config of any registered motion family (modules.families), as the originals' run.py do.

    train               the family's training class (modules.training describes it) in toolkit.training.fit
    train_avd           the family's AVD training (TPSMM, CPABMM), from a trained checkpoint
    train_segmentation  the part segmenter of the config's segmentation_params (families with part segmentation)
    reconstruction      toolkit.reconstruction, through the family's animation adapter
    animate             toolkit.animation.animate, likewise

Run folders are <log_dir>/<config name> <dd_mm_yy_HH.MM.SS>[ tag], as the original; with a checkpoint,
train resumes and reconstruction / animate write beside it.
"""
import dataclasses
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

from modules.build import build_models
from modules.checkpoint import load_state, read_checkpoint
from modules.config import load_config
from modules.errors import UserError, cannot_write, os_error_cause
from modules.families import REGISTRY, family_of
from modules.fileio import atomic_path, check_folder, make_folder
from modules.inference import optimize_for_inference
from modules.vgg import fetch_vgg19_weights
from modules.segmentation import build_segmentation_network
from toolkit.animation import animate
from toolkit.datasets import FramesDataset
from toolkit.devices import pick_device
from toolkit.evaluation import load_extractor
from toolkit.reconstruction import reconstruction
from toolkit.segmentation_training import train_segmentation
from toolkit.training import fit

log = logging.getLogger(__name__)


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
    device = pick_device(cpu, index=int(os.environ.get('LOCAL_RANK', '0')))
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    return device, {'rank': torch.distributed.get_rank(), 'world_size': torch.distributed.get_world_size()}


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
    """(generator, kp_detector) in eval mode, rewritten for inference (modules/inference.py), through
    the family's animation adapter; optional networks the checkpoint lacks are left out, and the
    reconstruction mode uses the background motion where the family has one (TPSMM's
    reconstruction.py does)."""
    models = {name: optimize_for_inference(model.eval())
              for name, model in family.without_missing(models, weights).items() if model is not None}
    return family.animation(models, background=mode == 'reconstruction')


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What `python run.py` takes, named as its flags (see its --help)."""
    config: str
    mode: str = 'train'
    log_dir: str = 'log'
    tag: str = ''
    checkpoint: str = None
    init: str = None
    device_ids: tuple = (0,)
    cpu: bool = False
    num_workers: int = min(6, os.cpu_count() or 1)  # data-loading worker processes
    seed: int = 0
    bf16: bool = False
    verbose: bool = False


MODES = ('train', 'reconstruction', 'animate', 'train_avd', 'train_segmentation')


def titles(has):
    """'TPSMM / CPABMM': the registered families for which has(family) is true."""
    return ' / '.join(family.title for family in REGISTRY.values() if has(family))


def check_run(opt, family, config):
    """The option combinations that cannot work with this config's family: UserError, before any work."""
    if opt.checkpoint is not None and opt.init is not None:
        raise UserError('give either --checkpoint (resume a run) or --init (new run from weights), not both')
    for path in (opt.checkpoint, opt.init):
        if path is not None and not Path(path).is_file():
            raise UserError(f'checkpoint {path} not found: check the path')
    if opt.bf16 and opt.mode != 'train':
        raise UserError('--bf16 is for --mode train only (inference: demo.py --fast)')
    if opt.mode not in ('train', 'train_segmentation') and opt.checkpoint is None:
        raise UserError(f'--mode {opt.mode} needs --checkpoint' + (' (the trained model)' if
                                                                  opt.mode == 'train_avd' else ''))
    if opt.mode == 'train' and family.training is None:
        raise UserError(f'--mode train: {opt.config} is a {family.title} config, a family without training')
    if opt.mode == 'train_avd' and family.avd_training is None:
        raise UserError(f'--mode train_avd trains the AVD network of {titles(lambda f: f.avd_training)}: '
                        f'{opt.config} is an {family.title} config, which has none')
    if opt.mode == 'train_segmentation' and not family.part_segmentation:
        raise UserError(f'--mode train_segmentation needs a config of {titles(lambda f: f.part_segmentation)} with '
                        f'segmentation_params ({opt.config} is a {family.title} config)')
    if opt.mode == 'train_avd' and config.get('train_avd_params') is None:
        raise UserError(f'{opt.config} has no train_avd_params section: add one (see config/tpsmm-vox-256.yaml)')
    if opt.bf16 and not family.mixed_precision:
        raise UserError(f'--bf16 is for {titles(lambda f: f.mixed_precision)} configs ({family.title} solves its '
                        f'motion in float32)')


def run(argv=None, **options):
    """`python run.py` as a function: options named as its flags (RunOptions); argv: the command line
    to log. Returns the run folder, or None on ranks other than 0 of a distributed run."""
    opt = RunOptions(**options)
    distributed = None
    try:
        config = load_config(opt.config)
        family = family_of(config['model_params'])
        check_run(opt, family, config)
        # an extractor named by reconstruction_params is loaded (or fails, in one line) before any work
        extractor = load_extractor(config['reconstruction_params'].get('extractor'),
                                   'reconstruction_params.extractor') if opt.mode == 'reconstruction' else None
        # where the results go must be writable: checked before any work and before anything is created
        check_folder(*results_place(opt))

        device, distributed = setup_distributed(opt.cpu)
        device = device or pick_device(opt.cpu, index=opt.device_ids[0])
        rank = distributed['rank'] if distributed else 0
        if rank != 0:
            logging.getLogger().setLevel(logging.WARNING)

        seed_everything(opt.seed)
        if opt.mode == 'train_segmentation':
            return segmentation_run(opt, config, device, argv)
        names = family.model_names(config['model_params'])
        if opt.mode == 'train':
            names = tuple(n for n in names if n not in family.trained_apart)  # e.g. TPSMM's AVD: --mode train_avd
        models = build_models(config['model_params'], names=names, device=device)
        for name, model in models.items():
            log.debug('%s:\n%s', name, model)
        # Cheap checks first: the checkpoint fits the config before any data or VGG19 is touched.
        weights_path = opt.checkpoint or opt.init
        weights = None
        if weights_path is not None:
            weights = read_checkpoint(weights_path, map_location=device)
            # training loads them (with the optimizers); the other modes use the models as loaded here
            load_state(weights, models, source=weights_path, config_path=opt.config, optional=family.optional,
                       check_only=opt.mode == 'train')

        dataset = FramesDataset(is_train=opt.mode in ('train', 'train_avd'), **config['dataset_params'])

        log_dir = run_folder(opt, distributed)
        if rank == 0:
            open_run_folder(opt, log_dir)

        if opt.mode == 'train':
            train_params = config['train_params']
            if sum(train_params['loss_weights']['perceptual']) != 0:
                fetch_vgg19_weights(train_params.get('vgg19_weights'))  # downloads only if missing
            log.info('training %s (%s) on %s%s%s, seed %d; run folder: %s', opt.config, family.title, device,
                     f' x {distributed["world_size"]} processes' if distributed else '',
                     ', bfloat16 mixed precision' if opt.bf16 else '', opt.seed, log_dir)
            log_command(argv)
            training = family.training(train_params, models, torch.bfloat16 if opt.bf16 else None)
            fit(config, training, weights if opt.checkpoint else None, str(log_dir), dataset, list(opt.device_ids),
                device=device, init=weights if opt.init else None, num_workers=opt.num_workers,
                distributed=distributed)
        elif opt.mode == 'train_avd':
            from toolkit.training import train_avd
            log.info('training the AVD network of %s on %s, seed %d; run folder: %s', opt.config, device, opt.seed,
                     log_dir)
            log_command(argv)
            train_avd(config, models, str(log_dir), dataset, list(opt.device_ids), checkpoint=weights, device=device,
                      num_workers=opt.num_workers, distributed=distributed, training_class=family.avd_training)
        else:
            # Inference only: modules/inference.py's exact rewrites (FOMM's batch norms folded,
            # upsampling convolutions as transposed ones: a rounding-level change), and
            # checkpoint=None: the weights were loaded (strictly) above.
            generator, kp_detector = inference_models(family, models, weights, opt.mode)
            if opt.mode == 'reconstruction':
                reconstruction(config, generator, kp_detector, None, str(log_dir), dataset, extractor=extractor)
            else:
                animate(config, generator, kp_detector, None, str(log_dir), dataset)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return log_dir if rank == 0 else None
