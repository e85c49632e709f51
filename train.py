"""The training loop of the originals (FOMM's and TPSMM's train.py), on one device, several GPUs with
DataParallel, or DistributedDataParallel processes launched by torchrun.

One loop (`fit`) serves both model families; what differs (optimizers, the iteration, what a
checkpoint holds) lives in a small class per family: `FommTraining`, `TpsTraining`."""
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


def multistep(optimizers, milestones, start_epoch):
    """MultiStepLR (gamma 0.1 at `milestones`) per optimizer, positioned at `start_epoch` (from epoch 1 on the
    optimizers' param groups need 'initial_lr')."""
    return {name: MultiStepLR(optimizer, milestones, gamma=0.1, last_epoch=start_epoch - 1)
            for name, optimizer in optimizers.items()}


class FommTraining:
    """FOMM's iteration: generator + keypoint-detector step, then (only with the GAN loss on) the
    discriminator step. models: {'generator', 'discriminator', 'kp_detector'} (bare, on the device)."""

    resume_optional = ('discriminator', 'optimizer_discriminator')
    init_optional = ('discriminator',)

    def __init__(self, train_params, models, autocast_dtype=None):
        self.train_params, self.models, self.autocast_dtype = train_params, models, autocast_dtype
        self.params = train_params  # the config section fit() reads: epochs, batch size, checkpoints
        self.optimizers = make_optimizers(train_params, models['generator'], models['discriminator'],
                                          models['kp_detector'])
        if train_params['lr_kp_detector'] == 0:
            self.resume_optional += ('optimizer_kp_detector',)
        self.train_discriminator = train_params['loss_weights']['generator_gan'] != 0

    def schedulers(self, start_epoch):
        return make_schedulers(self.train_params, self.optimizers, start_epoch)

    def prepare(self, nets, device, device_ids, distributed):
        """nets: the models as the forward passes see them (DDP-wrapped or bare)."""
        self.generator_full = GeneratorFullModel(nets['kp_detector'], nets['generator'], nets['discriminator'],
                                                 self.train_params, autocast_dtype=self.autocast_dtype).to(device)
        self.discriminator_full = DiscriminatorFullModel(nets['kp_detector'], nets['generator'], nets['discriminator'],
                                                         self.train_params, autocast_dtype=self.autocast_dtype).to(device)
        if not distributed and device.type == 'cuda' and len(device_ids) > 1:
            self.generator_full = DataParallelWithCallback(self.generator_full, device_ids=device_ids)
            self.discriminator_full = DataParallelWithCallback(self.discriminator_full, device_ids=device_ids)
        return not isinstance(self.generator_full, DataParallelWithCallback)  # inputs go to the device here

    def step(self, x, epoch):
        """One iteration of the original loop. The generator-loss backward also fills discriminator
        gradients; they are zeroed before the discriminator step, as in the original.
        x: {'source', 'driving'} batch. Returns ({loss name: float}, generated dict)."""
        optimizers = self.optimizers
        losses_generator, generated = self.generator_full(x)
        losses = _values(losses_generator)
        sum(value.mean() for value in losses_generator.values()).backward()
        optimizers['optimizer_generator'].step()
        optimizers['optimizer_generator'].zero_grad()
        optimizers['optimizer_kp_detector'].step()
        optimizers['optimizer_kp_detector'].zero_grad()

        if self.train_discriminator:
            optimizers['optimizer_discriminator'].zero_grad()
            losses_discriminator = self.discriminator_full(x, generated)
            losses.update(_values(losses_discriminator))
            sum(value.mean() for value in losses_discriminator.values()).backward()
            optimizers['optimizer_discriminator'].step()
            optimizers['optimizer_discriminator'].zero_grad()
        return losses, generated

    def saved(self, epoch):
        """What a checkpoint holds after `epoch`."""
        return {**self.models, **self.optimizers}


class TpsTraining:
    """TPSMM's iteration (its train.py): one Adam (weight decay 1e-4) over the inpainting, dense-motion
    and keypoint networks, another over the background predictor (stepped from bg_start on); gradients
    clipped to an infinity norm of 10 except the inpainting network's. models: {'inpainting_network',
    'dense_motion_network', 'kp_detector'[, 'bg_predictor']} (bare, on the device)."""

    resume_optional = ('bg_predictor', 'optimizer_bg_predictor')  # saved only from bg_start on
    init_optional = ('bg_predictor',)

    def __init__(self, train_params, models, autocast_dtype=None):
        if autocast_dtype is not None:
            raise TrainingError('mixed precision (--bf16) is for FOMM configs: TPSMM solves its splines in float32')
        self.train_params, self.models = train_params, models
        self.params = train_params
        self.bg_predictor = models.get('bg_predictor')
        self.bg_start = train_params.get('bg_start', 0)
        lr = train_params['lr_generator']
        parameters = [p for name in ('inpainting_network', 'dense_motion_network', 'kp_detector')
                      for p in models[name].parameters()]
        self.optimizers = {'optimizer': torch.optim.Adam([{'params': parameters, 'initial_lr': lr}], lr=lr,
                                                         betas=(0.5, 0.999), weight_decay=1e-4)}
        if self.bg_predictor is not None:
            self.optimizers['optimizer_bg_predictor'] = torch.optim.Adam(
                [{'params': self.bg_predictor.parameters(), 'initial_lr': lr}], lr=lr, betas=(0.5, 0.999),
                weight_decay=1e-4)

    def schedulers(self, start_epoch):
        return multistep(self.optimizers, self.train_params.get('epoch_milestones', []), start_epoch)

    def prepare(self, nets, device, device_ids, distributed):
        from modules.tpsmm.model import GeneratorFullModel as TpsGeneratorFullModel
        self.generator_full = TpsGeneratorFullModel(nets['kp_detector'], nets.get('bg_predictor'),
                                                    nets['dense_motion_network'], nets['inpainting_network'],
                                                    self.train_params).to(device)
        if not distributed and device.type == 'cuda' and len(device_ids) > 1:
            self.generator_full = torch.nn.DataParallel(self.generator_full, device_ids=device_ids)
        return not isinstance(self.generator_full, torch.nn.DataParallel)

    def step(self, x, epoch):
        losses_generator, generated = self.generator_full(x, epoch)
        losses = _values(losses_generator)
        sum(value.mean() for value in losses_generator.values()).backward()
        clipped = ['kp_detector', 'dense_motion_network']
        train_bg = self.bg_predictor is not None and epoch >= self.bg_start
        if train_bg:
            clipped.append('bg_predictor')
        for name in clipped:
            torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), max_norm=10, norm_type=math.inf)
        self.optimizers['optimizer'].step()
        self.optimizers['optimizer'].zero_grad()
        if train_bg:
            self.optimizers['optimizer_bg_predictor'].step()
            self.optimizers['optimizer_bg_predictor'].zero_grad()
        return losses, generated

    def saved(self, epoch):
        saved = {name: self.models[name] for name in ('inpainting_network', 'dense_motion_network', 'kp_detector')}
        saved['optimizer'] = self.optimizers['optimizer']
        if self.bg_predictor is not None and epoch >= self.bg_start:
            saved['bg_predictor'] = self.bg_predictor
            saved['optimizer_bg_predictor'] = self.optimizers['optimizer_bg_predictor']
        return saved


class AvdTraining:
    """TPSMM's train_avd.py: only the AVD network learns (Adam, betas (0.5, 0.999)), to rebuild driving
    keypoints from the source's keypoints and randomly rescaled driving ones. As TPSMM, the keypoint
    detector is left in train mode (its BatchNorm statistics follow the data: they are saved with the
    AVD checkpoint, as in the published ones). models: build_models' TPSMM dict, loaded from the trained
    checkpoint; the checkpoint written holds them all, plus optimizer_avd."""

    resume_optional = ()
    init_optional = ()

    def __init__(self, train_avd_params, models):
        self.params, self.models = train_avd_params, models
        self.avd_network = models['avd_network']
        self.optimizers = {'optimizer_avd': torch.optim.Adam(self.avd_network.parameters(), lr=train_avd_params['lr'],
                                                             betas=(0.5, 0.999))}

    def schedulers(self, start_epoch):
        # TPSMM's train_avd.py steps its scheduler with scheduler.step(epoch), so a milestone m lowers the
        # rate from epoch m + 1 on; kept
        return multistep(self.optimizers, [m + 1 for m in self.params.get('epoch_milestones', [])], start_epoch)

    def prepare(self, nets, device, device_ids, distributed):
        self.nets = nets
        return True

    def step(self, x, epoch):
        from modules.tpsmm.model import avd_losses
        losses, _ = avd_losses(self.nets['kp_detector'], self.nets['avd_network'], x, self.params)
        values = _values(losses)
        losses['rec_kp'].backward()
        self.optimizers['optimizer_avd'].step()
        self.optimizers['optimizer_avd'].zero_grad()
        return values, None

    def saved(self, epoch):
        names = ('inpainting_network', 'dense_motion_network', 'kp_detector', 'avd_network')
        saved = {name: self.models[name] for name in names}
        saved['optimizer_avd'] = self.optimizers['optimizer_avd']
        if 'bg_predictor' in self.models:
            saved['bg_predictor'] = self.models['bg_predictor']
        return saved


def train(config, generator, discriminator, kp_detector, checkpoint, log_dir, dataset, device_ids, **options):
    """Trains FOMM's three networks as the original train.py (the original's signature); see fit."""
    models = {'generator': generator, 'discriminator': discriminator, 'kp_detector': kp_detector}
    return fit(config, FommTraining(config['train_params'], models, options.pop('autocast_dtype', None)),
               checkpoint, log_dir, dataset, device_ids, **options)


def train_tps(config, models, checkpoint, log_dir, dataset, device_ids, **options):
    """Trains TPSMM's networks as its train.py; models: build_models' dict (avd_network is left out). See fit."""
    models = {name: model for name, model in models.items() if name != 'avd_network'}
    return fit(config, TpsTraining(config['train_params'], models, options.pop('autocast_dtype', None)),
               checkpoint, log_dir, dataset, device_ids, **options)


def train_avd(config, models, log_dir, dataset, device_ids, checkpoint=None, **options):
    """Trains TPSMM's AVD network as its train_avd.py (epochs from 0); models: build_models' dict with the
    trained weights loaded (the AVD network's own, if the checkpoint had them, are trained further, and
    so is its optimizer_avd). Needs the config's train_avd_params. See fit."""
    if config.get('train_avd_params') is None:
        raise TrainingError('the config has no train_avd_params section: add one (see config/tpsmm-vox-256.yaml)')
    distributed = options.get('distributed')
    if config['train_avd_params']['batch_size'] // (distributed['world_size'] if distributed else 1) < 2:
        raise TrainingError('train_avd_params.batch_size must give at least 2 keypoint sets per process: the AVD '
                            'network\'s BatchNorm1d needs them')
    training = AvdTraining(config['train_avd_params'], models)
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
