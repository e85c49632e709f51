"""The training loop of the originals (FOMM's and TPSMM's train.py), on one device, several GPUs with
DataParallel, or DistributedDataParallel processes launched by torchrun.

One loop (`fit`) serves every motion family; what differs (optimizers, the iteration, what a
checkpoint holds) lives in each family's training class, named by its registry entry
(modules.families; the interface: modules.training). `train`, `train_tps` and `train_avd` keep the
originals' entry points."""
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from toolkit.datasets import DatasetRepeater
from toolkit.logger import Logger
from modules.checkpoint import load_state
from modules.errors import TrainingError
from modules.families import family_of
from modules.training import FommTraining, NonFiniteLoss
from modules.tpsmm.training import AvdTraining

log = logging.getLogger(__name__)

def _to_device(batch, device):
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _last_checkpoint(log_dir):
    found = sorted(Path(log_dir).glob('*-checkpoint.pth.tar'))
    return str(found[-1]) if found else 'none written yet'


def train(config, generator, discriminator, kp_detector, checkpoint, log_dir, dataset, device_ids, **options):
    """Trains FOMM's three networks as the original train.py (the original's signature); see fit."""
    models = {'generator': generator, 'discriminator': discriminator, 'kp_detector': kp_detector}
    return fit(config, FommTraining(config['train_params'], models, options.pop('autocast_dtype', None)),
               checkpoint, log_dir, dataset, device_ids, **options)


def train_tps(config, models, checkpoint, log_dir, dataset, device_ids, **options):
    """Trains TPSMM's networks as its train.py, with the training class of the config's family
    (TPSMM's, or CPABMM's with its own losses); models: build_models' dict (the networks the family
    trains apart, the AVD network, are left out). See fit."""
    family = family_of(config['model_params'])
    models = {name: model for name, model in models.items() if name not in family.trained_apart}
    return fit(config, family.training(config['train_params'], models, options.pop('autocast_dtype', None)),
               checkpoint, log_dir, dataset, device_ids, **options)


def train_avd(config, models, log_dir, dataset, device_ids, checkpoint=None, training_class=AvdTraining, **options):
    """Trains TPSMM's AVD network as its train_avd.py (epochs from 0); models: build_models' dict with the
    trained weights loaded (the AVD network's own, if the checkpoint had them, are trained further, and
    so is its optimizer_avd). Needs the config's train_avd_params. See fit."""
    if config.get('train_avd_params') is None:
        raise TrainingError('the config has no train_avd_params section: add one (see config/tpsmm-vox-256.yaml)')
    distributed = options.get('distributed')
    if config['train_avd_params']['batch_size'] // (distributed['world_size'] if distributed else 1) < 2:
        raise TrainingError('train_avd_params.batch_size must give at least 2 keypoint sets per process: the AVD '
                            'network\'s BatchNorm1d needs them')
    training = training_class(config['train_avd_params'], models)
    if isinstance(checkpoint, dict) and checkpoint.get('optimizer_avd') is not None:
        load_state(checkpoint, training.optimizers)
    return fit(config, training, None, log_dir, dataset, device_ids, **options)


def make_dataloader(dataset, params, device, num_workers, distributed):
    """DatasetRepeater(num_repeats) -> a shuffling, drop-last DataLoader with params['batch_size'] split
    over the processes (DistributedSampler under torchrun). Returns (dataloader, sampler or None)."""
    rank = distributed['rank'] if distributed else 0
    world_size = distributed['world_size'] if distributed else 1
    num_repeats = params.get('num_repeats', 1)
    if num_repeats != 1:
        dataset = DatasetRepeater(dataset, num_repeats)
    batch_size = params['batch_size']
    if distributed:
        if batch_size % world_size:
            raise TrainingError(f'batch_size {batch_size} is not divisible by the {world_size} processes: use a '
                                f'multiple of {world_size}')
        batch_size //= world_size  # the config's batch size stays the global one, as with DataParallel
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, drop_last=True) \
        if distributed else None
    if len(dataset) // world_size < batch_size:
        raise TrainingError(f'batch_size {params["batch_size"]} is larger than the dataset ({len(dataset)} items '
                            f'with num_repeats {num_repeats}): lower batch_size or raise num_repeats')
    dataloader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=num_workers, drop_last=True, pin_memory=device.type == 'cuda',
                            persistent_workers=num_workers > 0)
    return dataloader, sampler


def fit(config, training, checkpoint, log_dir, dataset, device_ids, *, device=None, init=None, num_workers=0,
        distributed=None):
    """The training loop of both families.

    config: a loaded config dict. training: FommTraining or TpsTraining around the bare models, already
    on `device`. checkpoint: path (or loaded checkpoint dict) to resume from (same run: epoch,
    optimizers and schedulers restored; training goes on at the next epoch) or None. init: path or
    dict whose weights start a new run at epoch 0. log_dir: the run folder. dataset: a FramesDataset
    in train mode. device_ids: CUDA device ids for DataParallel. distributed: None, or {'rank',
    'world_size'} when launched by torchrun (one device per process; models are wrapped in
    DistributedDataParallel, only rank 0 logs and saves). Returns the last epoch's mean losses.
    """
    train_params = training.params
    models = training.models
    device = torch.device(device) if device is not None else next(next(iter(models.values())).parameters()).device
    rank = distributed['rank'] if distributed else 0

    start_epoch = 0
    if checkpoint is not None:
        start_epoch = load_state(checkpoint, {**models, **training.optimizers}, optional=training.resume_optional,
                                 map_location=device) + 1
        log.info('resuming at epoch %d', start_epoch)
    elif init is not None:
        load_state(init, models, optional=training.init_optional, map_location=device)
        log.info('initialised the models from the --init weights; starting at epoch 0')
    schedulers = training.schedulers(start_epoch)
    dataloader, sampler = make_dataloader(dataset, train_params, device, num_workers, distributed)
    scatter_inputs = training.prepare(_wrap_ddp(models, device) if distributed else models, device, device_ids,
                                      distributed)

    means = {}
    logger = Logger(log_dir=log_dir, visualizer_params=config['visualizer_params'],
                    checkpoint_freq=train_params['checkpoint_freq'], enabled=rank == 0)
    with logger:
        for epoch in range(start_epoch, train_params['num_epochs']):
            if sampler is not None:
                sampler.set_epoch(epoch)
            totals, count, started = {}, 0, time.perf_counter()
            bar = tqdm(dataloader, desc=f'epoch {epoch + 1}/{train_params["num_epochs"]}', leave=False,
                       disable=rank != 0, dynamic_ncols=True)
            for iteration, x in enumerate(bar):
                if scatter_inputs:
                    x = _to_device(x, device)
                try:
                    losses, generated = training.step(x, epoch)
                except NonFiniteLoss as e:
                    raise TrainingError(f'loss {e.name!r} became {e.value} at epoch {epoch}, iteration '
                                        f'{iteration}; last good checkpoint: {_last_checkpoint(log_dir)}; lower '
                                        f'the learning rates or check the data, then resume from it with '
                                        f'--checkpoint') from e
                logger.log_iter(losses=losses)
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + v
                count += 1
                bar.set_postfix({k: f'{v / count:.4f}' for k, v in totals.items()})

            for scheduler in schedulers.values():
                scheduler.step()
            seconds = time.perf_counter() - started
            means = {k: v / count for k, v in totals.items()}
            summary = (f'{count} iterations in {seconds:.1f} s ({seconds / count:.3f} s/it, '
                       f'{count * train_params["batch_size"] / seconds:.1f} images/s)')
            logger.log_epoch(epoch, training.saved(epoch), inp=x, out=generated, extra=summary)
    if distributed:
        torch.distributed.barrier()
    return means


def _wrap_ddp(models, device):
    """DistributedDataParallel per network (a keypoint detector runs several times per step, which DDP
    allows: gradients are reduced once per backward). FOMM's BatchNorm statistics are synchronised
    across ranks, so every rank keeps identical running statistics and buffers need no broadcast;
    TPSMM's ResNets use plain BatchNorm: rank 0's buffers are broadcast at every forward."""
    from torch.nn.parallel import DistributedDataParallel

    from sync_batchnorm.batchnorm import _SynchronizedBatchNorm

    wrapped = {}
    for name, model in models.items():
        synchronised = [m for m in model.modules() if isinstance(m, _SynchronizedBatchNorm)]
        for module in synchronised:
            module.sync_distributed = True
        plain = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, _SynchronizedBatchNorm)
                    for m in model.modules())
        ids = [device.index] if device.type == 'cuda' else None
        wrapped[name] = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=plain,
                                                find_unused_parameters=False)
    return wrapped
