"""A tiny fourth motion family, registered only by tests/test_family_registry.py: one keypoint (the
soft-argmax of a learned heat map) and a generator that moves the whole source by that keypoint's
displacement. It is one package plus one `register(Family(...))` call, as docs/architecture.md says
a new family is; nothing else in the toolkit knows about it.

    model_params:
      motion_model: shift
      common_params: {num_channels: 3}
      shift_params: {temperature: 0.1}
"""
import torch
import torch.nn.functional as F
from torch import nn

from modules.config import fomm as fomm_config
from modules.config.types import POS_INT, POSITIVE, Invalid, Section, fill, motion_model_key, opt, req
from modules.families import Family, register

NAME = 'shift'
MODEL_NAMES = ('kp_detector', 'generator')
MODES = ('standard', 'relative')


class ShiftKPDetector(nn.Module):
    """x (B, C, H, W) -> {'value': (B, 1, 2)}: the soft-argmax, in [-1, 1] (x, y), of a 1x1 conv heat map."""

    def __init__(self, num_channels, temperature=0.1):
        super().__init__()
        self.heat = nn.Conv2d(num_channels, 1, kernel_size=1)
        self.temperature = temperature

    def forward(self, x):
        batch, _, height, width = x.shape
        heat = F.softmax(self.heat(x).flatten(1) / self.temperature, dim=1).view(batch, height, width)
        ys = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
        value = torch.stack([(heat.sum(1) * xs).sum(1), (heat.sum(2) * ys).sum(1)], dim=1)
        return {'value': value[:, None]}


class ShiftGenerator(nn.Module):
    """The source moved by kp_driving - kp_source: {'prediction', 'deformed'} (B, C, H, W)."""

    def __init__(self, num_channels):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))  # a parameter, so the animation core finds the device
        self.num_channels = num_channels

    def encode(self, source_image):
        return source_image

    def forward(self, source_image, kp_driving, kp_source, source_features=None):
        batch, _, height, width = source_image.shape
        shift = (kp_driving['value'] - kp_source['value'])[:, 0]  # (B, 2), (x, y) in [-1, 1] units
        theta = torch.zeros(batch, 2, 3, device=source_image.device, dtype=source_image.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = -shift  # output pixel p samples the source at p - shift
        grid = F.affine_grid(theta, (batch, 1, height, width), align_corners=True)
        deformed = F.grid_sample(source_image, grid, align_corners=True, padding_mode='border')
        return {'prediction': deformed * self.gain, 'deformed': deformed}


COMMON = Section({'num_channels': req(POS_INT, 'number of image channels')}, doc='given to both networks',
                 only_here=('num_channels',))
MODEL = Section({
    'motion_model': motion_model_key(NAME),
    'common_params': req(COMMON, 'given to both networks'),
    'shift_params': opt(Section({'temperature': opt(POSITIVE, 'softmax temperature of the heat map', 0.1)},
                                doc='the keypoint detector'), 'the keypoint detector'),
}, doc='the shift family')
SCHEMA = Section({
    'dataset_params': req(fomm_config.DATASET, fomm_config.DATASET_HELP),
    'model_params': req(MODEL, 'the networks'),
    'reconstruction_params': fill(fomm_config.RECONSTRUCTION, fomm_config.RECONSTRUCTION_HELP),
    'animate_params': fill(fomm_config.ANIMATE, fomm_config.ANIMATE_HELP),
    'visualizer_params': fill(fomm_config.VISUALIZER, fomm_config.VISUALIZER_HELP),
}, doc='a shift-family config')


def check(config, where='<config>'):
    if config['dataset_params']['frame_shape'][2] != config['model_params']['common_params']['num_channels']:
        raise Invalid(('dataset_params', 'frame_shape'), 'channels differ from common_params.num_channels')


def networks(model_params):
    channels = model_params['common_params']['num_channels']
    temperature = model_params.get('shift_params', {}).get('temperature', 0.1)
    return {'kp_detector': lambda: ShiftKPDetector(channels, temperature),
            'generator': lambda: ShiftGenerator(channels)}


def animation(models, background=False):
    return models['generator'], models['kp_detector']


def motion(mode=None, relative=False, adapt_scale=False, avd_network=None):
    if mode is not None:
        relative = adapt_scale = mode == 'relative'
    return dict(relative=relative, adapt_movement_scale=adapt_scale, avd_network=None)


def from_api(generator, kp_detector, relative=True, adapt_movement_scale=True, **_):
    return generator, kp_detector, dict(relative=relative, adapt_movement_scale=adapt_movement_scale)


FAMILY = Family(
    name=NAME, title='SHIFT', recognise=lambda model_params: False, identifying_keys=(),
    schema=SCHEMA, check=check, networks=networks, checkpoint_names=MODEL_NAMES,
    model_names=lambda model_params: MODEL_NAMES, optional=(), demo_models=MODEL_NAMES[::-1],
    animation=animation, motion=motion, modes=MODES, from_api=from_api, api_network=ShiftGenerator,
    training=None)  # nothing to train: run.py --mode train refuses it


def install():
    """Registers the family (idempotent); returns it."""
    return register(FAMILY)
