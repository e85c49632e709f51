"""Builds the three networks from a config's `model_params`, exactly as the original run.py does."""
import contextlib

import torch

from modules.discriminator import MultiScaleDiscriminator
from modules.generator import OcclusionAwareGenerator
from modules.keypoint_detector import KPDetector

MODEL_NAMES = ('generator', 'discriminator', 'kp_detector')


def build_models(model_params, names=MODEL_NAMES, device=None):
    """model_params: a config's `model_params` section -> {name: nn.Module} for the requested names.

    generator     = OcclusionAwareGenerator(**generator_params, **common_params)
    discriminator = MultiScaleDiscriminator(**discriminator_params, **common_params)
    kp_detector   = KPDetector(**kp_detector_params, **common_params)

    device: where parameters are created; 'meta' builds shape-only models (no memory, no init cost),
    which is how checkpoint key lists are compared against every official config.
    """
    common = model_params['common_params']
    makers = {
        'generator': lambda: OcclusionAwareGenerator(**model_params['generator_params'], **common),
        'discriminator': lambda: MultiScaleDiscriminator(**model_params['discriminator_params'], **common),
        'kp_detector': lambda: KPDetector(**model_params['kp_detector_params'], **common),
    }
    unknown = [name for name in names if name not in makers]
    if unknown:
        raise ValueError(f'build_models: unknown model name(s) {unknown}; choose from {list(makers)}')
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return {name: makers[name]() for name in names}

