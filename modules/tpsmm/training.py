"""TPSMM's training iterations (its train.py and train_avd.py), in the form modules.training describes."""
import math

import torch

from modules.errors import TrainingError
from modules.tpsmm.model import GeneratorFullModel, avd_losses
from modules.training import loss_values, multistep


class TpsTraining:
    """TPSMM's iteration (its train.py): one Adam (weight decay 1e-4) over the inpainting, dense-motion
    and keypoint networks, another over the background predictor (stepped from bg_start on); gradients
    clipped to an infinity norm of 10 except the inpainting network's. models: {'inpainting_network',
    'dense_motion_network', 'kp_detector'[, 'bg_predictor']} (bare, on the device)."""

    resume_optional = ('bg_predictor', 'optimizer_bg_predictor')  # saved only from bg_start on
    init_optional = ('bg_predictor',)
    full_model = GeneratorFullModel  # the losses; a family with TPSMM's iteration and more losses swaps it

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
        self.generator_full = self.full_model(nets['kp_detector'], nets.get('bg_predictor'),
                                              nets['dense_motion_network'], nets['inpainting_network'],
                                              self.train_params).to(device)
        if not distributed and device.type == 'cuda' and len(device_ids) > 1:
            self.generator_full = torch.nn.DataParallel(self.generator_full, device_ids=device_ids)
        return not isinstance(self.generator_full, torch.nn.DataParallel)

    def step(self, x, epoch):
        losses_generator, generated = self.generator_full(x, epoch)
        losses = loss_values(losses_generator)
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
        losses, _ = avd_losses(self.nets['kp_detector'], self.nets['avd_network'], x, self.params)
        values = loss_values(losses)
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
