"""The training loop of the original (train.py), on one device, several GPUs with DataParallel and
synchronised BatchNorm, or DistributedDataParallel processes launched by torchrun."""
import logging
import math
import time
from pathlib import Path

import torch
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from frames_dataset import DatasetRepeater
from logger import Logger
from modules.checkpoint import load_state
from modules.errors import TrainingError
from modules.model import DiscriminatorFullModel, GeneratorFullModel
from sync_batchnorm import DataParallelWithCallback

log = logging.getLogger(__name__)

MODEL_NAMES = ('generator', 'discriminator', 'kp_detector')


def make_optimizers(train_params, generator, discriminator, kp_detector):
    """Adam(betas=(0.5, 0.999)) per network, with the config's learning rates."""
    nets = {'generator': generator, 'discriminator': discriminator, 'kp_detector': kp_detector}
    return {f'optimizer_{name}': torch.optim.Adam(net.parameters(), lr=train_params[f'lr_{name}'], betas=(0.5, 0.999))
            for name, net in nets.items()}


def make_schedulers(train_params, optimizers, start_epoch):
    """MultiStepLR (gamma 0.1 at epoch_milestones) per optimizer, positioned at `start_epoch`.

    On resume the optimizers already hold the decayed learning rates (restored from the
    checkpoint); `last_epoch = start_epoch - 1` puts the schedulers where they were. As the original,
    the keypoint detector's scheduler is not advanced when its learning rate is 0.
    """
    milestones = train_params.get('epoch_milestones', [])
    schedulers = {}
    for name, optimizer in optimizers.items():
        last_epoch = start_epoch - 1
        if name == 'optimizer_kp_detector' and train_params['lr_kp_detector'] == 0:
            last_epoch = -1
        for group in optimizer.param_groups:  # a scheduler created with last_epoch >= 0 needs it
            group.setdefault('initial_lr', train_params['lr_' + name[len('optimizer_'):]])
        schedulers[name] = MultiStepLR(optimizer, milestones, gamma=0.1, last_epoch=last_epoch)
    return schedulers


def _to_device(batch, device):
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _last_checkpoint(log_dir):
    found = sorted(Path(log_dir).glob('*-checkpoint.pth.tar'))
    return str(found[-1]) if found else 'none written yet'


class NonFiniteLoss(ArithmeticError):
    """A loss is NaN or inf (raised before the optimizer step that would spread it)."""

    def __init__(self, name, value):
        super().__init__(f'loss {name!r} is {value}')
        self.name, self.value = name, value


def _values(losses):
    values = {name: value.mean().item() for name, value in losses.items()}
    for name, value in values.items():
        if not math.isfinite(value):
            raise NonFiniteLoss(name, value)
    return values


def train_step(x, generator_full, discriminator_full, optimizers, train_discriminator):
    """One iteration of the original loop: generator + keypoint-detector step, then (only when the
    GAN loss is on) the discriminator step. The generator-loss backward also fills discriminator
    gradients; they are zeroed before the discriminator step, as in the original.

    x: {'source', 'driving'} batch. Returns ({loss name: float}, generated dict).
    """
    losses_generator, generated = generator_full(x)
    losses = _values(losses_generator)
    sum(value.mean() for value in losses_generator.values()).backward()
    optimizers['optimizer_generator'].step()
    optimizers['optimizer_generator'].zero_grad()
    optimizers['optimizer_kp_detector'].step()
    optimizers['optimizer_kp_detector'].zero_grad()

    if train_discriminator:
        optimizers['optimizer_discriminator'].zero_grad()
        losses_discriminator = discriminator_full(x, generated)
        losses.update(_values(losses_discriminator))
        sum(value.mean() for value in losses_discriminator.values()).backward()
        optimizers['optimizer_discriminator'].step()
        optimizers['optimizer_discriminator'].zero_grad()
    return losses, generated


def train(config, generator, discriminator, kp_detector, checkpoint, log_dir, dataset, device_ids, *,
          device=None, init=None, num_workers=0, distributed=None, autocast_dtype=None):
    """Trains the three networks as the original train.py.

    config: a loaded config dict. generator, discriminator, kp_detector: the bare models, already on
    `device`. checkpoint: path (or loaded checkpoint dict) to resume from (same run: epoch, optimizers and schedulers restored;
    training goes on at the next epoch) or None. init: path or dict whose weights start a new run at epoch 0
    (a missing discriminator is fine). log_dir: the run folder. dataset: a FramesDataset in train
    mode. device_ids: CUDA device ids for DataParallel (several -> synchronised BatchNorm across
    them). distributed: None, or {'rank', 'world_size'} when launched by torchrun (one device per
    process; models are wrapped in DistributedDataParallel, only rank 0 logs and saves).
    autocast_dtype: None (float32) or torch.bfloat16: mixed-precision training (see GeneratorFullModel).
    Returns the last epoch's mean losses {name: float}.
    """
    train_params = config['train_params']
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    rank = distributed['rank'] if distributed else 0
    world_size = distributed['world_size'] if distributed else 1
    optimizers = make_optimizers(train_params, generator, discriminator, kp_detector)
    models = {'generator': generator, 'discriminator': discriminator, 'kp_detector': kp_detector}

    start_epoch = 0
    if checkpoint is not None:
        optional = ('discriminator', 'optimizer_discriminator')
        if train_params['lr_kp_detector'] == 0:
            optional += ('optimizer_kp_detector',)
        start_epoch = load_state(checkpoint, {**models, **optimizers}, optional=optional, map_location=device) + 1
        log.info('resuming at epoch %d', start_epoch)
    elif init is not None:
        load_state(init, models, optional=('discriminator',), map_location=device)
        log.info('initialised the models from the --init weights; starting at epoch 0')
    schedulers = make_schedulers(train_params, optimizers, start_epoch)

    num_repeats = train_params.get('num_repeats', 1)
    if num_repeats != 1:
        dataset = DatasetRepeater(dataset, num_repeats)
    batch_size = train_params['batch_size']
    if distributed:
        if batch_size % world_size:
            raise TrainingError(f'train_params.batch_size {batch_size} is not divisible by the {world_size} '
                                f'processes: use a multiple of {world_size}')
        batch_size //= world_size  # the config's batch size stays the global one, as with DataParallel
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, drop_last=True) \
        if distributed else None
    if len(dataset) // world_size < batch_size:
        raise TrainingError(f'train_params.batch_size {train_params["batch_size"]} is larger than the dataset '
                            f'({len(dataset)} items with num_repeats {num_repeats}): lower batch_size or raise '
                            f'num_repeats')
    dataloader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=num_workers, drop_last=True, pin_memory=device.type == 'cuda',
                            persistent_workers=num_workers > 0)

    nets = _wrap_ddp(models, device) if distributed else models
    generator_full = GeneratorFullModel(nets['kp_detector'], nets['generator'], nets['discriminator'], train_params,
                                        autocast_dtype=autocast_dtype)
    discriminator_full = DiscriminatorFullModel(nets['kp_detector'], nets['generator'], nets['discriminator'],
                                                train_params, autocast_dtype=autocast_dtype)
    generator_full.to(device)  # the pyramid and VGG19 buffers
    discriminator_full.to(device)
    if not distributed and device.type == 'cuda' and len(device_ids) > 1:
        generator_full = DataParallelWithCallback(generator_full, device_ids=device_ids)
        discriminator_full = DataParallelWithCallback(discriminator_full, device_ids=device_ids)
    scatter_inputs = not isinstance(generator_full, DataParallelWithCallback)

    train_discriminator = train_params['loss_weights']['generator_gan'] != 0
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
                    losses, generated = train_step(x, generator_full, discriminator_full, optimizers,
                                                   train_discriminator)
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
            logger.log_epoch(epoch, {**models, **optimizers}, inp=x, out=generated, extra=summary)
    if distributed:
        torch.distributed.barrier()
    return means


def _wrap_ddp(models, device):
    """DistributedDataParallel per network (kp_detector runs several times per step, which DDP
    allows: gradients are reduced once per backward). BatchNorm statistics are synchronised across
    ranks, so every rank keeps identical running statistics and buffers need no broadcast."""
    from torch.nn.parallel import DistributedDataParallel

    from sync_batchnorm.batchnorm import _SynchronizedBatchNorm

    wrapped = {}
    for name, model in models.items():
        for module in model.modules():
            if isinstance(module, _SynchronizedBatchNorm):
                module.sync_distributed = True
        ids = [device.index] if device.type == 'cuda' else None
        wrapped[name] = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False,
                                                find_unused_parameters=False)
    return wrapped
