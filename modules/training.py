"""The training iteration of each motion family, as the originals' train.py run it: a class per family
that owns the optimizers, runs one step and says what a checkpoint holds. The loop around it (data,
epochs, logging, checkpoints, several devices) is toolkit.training.fit; the family registry
(modules.families) names each family's class.

A training class has: `__init__(train_params, models, autocast_dtype=None)`, `params` (the config
section the loop reads), `optimizers` ({name: optimizer}), `resume_optional` / `init_optional`
(checkpoint entries that may be missing), `schedulers(start_epoch)`, `prepare(nets, device,
device_ids, distributed)` (returns whether batches go to the device in the loop), `step(x, epoch)` ->
({loss name: float}, generated) and `saved(epoch)` -> what a checkpoint holds."""
import math

import torch
from torch.optim.lr_scheduler import MultiStepLR

from modules.model import DiscriminatorFullModel, GeneratorFullModel
from sync_batchnorm import DataParallelWithCallback


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


class NonFiniteLoss(ArithmeticError):
    """A loss is NaN or inf (raised before the optimizer step that would spread it)."""

    def __init__(self, name, value):
        super().__init__(f'loss {name!r} is {value}')
        self.name, self.value = name, value


def loss_values(losses):
    """{name: loss tensor} -> {name: float mean}; NonFiniteLoss if one is NaN or inf."""
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
        losses = loss_values(losses_generator)
        sum(value.mean() for value in losses_generator.values()).backward()
        optimizers['optimizer_generator'].step()
        optimizers['optimizer_generator'].zero_grad()
        optimizers['optimizer_kp_detector'].step()
        optimizers['optimizer_kp_detector'].zero_grad()

        if self.train_discriminator:
            optimizers['optimizer_discriminator'].zero_grad()
            losses_discriminator = self.discriminator_full(x, generated)
            losses.update(loss_values(losses_discriminator))
            sum(value.mean() for value in losses_discriminator.values()).backward()
            optimizers['optimizer_discriminator'].step()
            optimizers['optimizer_discriminator'].zero_grad()
        return losses, generated

    def saved(self, epoch):
        """What a checkpoint holds after `epoch`."""
        return {**self.models, **self.optimizers}
