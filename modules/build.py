"""Builds a motion model's networks from a config's `model_params`, exactly as the original run.py
(FOMM's, TPSMM's or CPABMM's) does."""
import contextlib

import torch

from modules.config import motion_model
from modules.discriminator import MultiScaleDiscriminator
from modules.generator import OcclusionAwareGenerator
from modules.keypoint_detector import KPDetector

MODEL_NAMES = ('generator', 'discriminator', 'kp_detector')  # FOMM
TPS_MODEL_NAMES = ('inpainting_network', 'dense_motion_network', 'kp_detector', 'bg_predictor', 'avd_network')


def model_names(model_params):
    """The networks a config describes: FOMM's three, or TPSMM's (bg_predictor only with common_params.bg)."""
    if motion_model(model_params) == 'fomm':
        return MODEL_NAMES
    bg = model_params['common_params'].get('bg', False)
    return tuple(name for name in TPS_MODEL_NAMES if bg or name != 'bg_predictor')


def num_transforms(model_params):
    """K of a TPSMM-family config: common_params.num_tps, or num_cpab (CPABMM's configs; its vox file
    says num_tps)."""
    common = model_params['common_params']
    return common['num_cpab'] if 'num_cpab' in common else common['num_tps']


def _tps_makers(model_params):
    from modules import tpsmm
    common = {k: v for k, v in model_params['common_params'].items() if k not in ('num_tps', 'num_cpab')}
    num = num_transforms(model_params)
    if motion_model(model_params) == 'cpab':
        dense_motion = lambda: tpsmm.CpabDenseMotionNetwork(num_cpab=num, **common,  # noqa: E731
                                                            **model_params['dense_motion_params'])
    else:
        dense_motion = lambda: tpsmm.DenseMotionNetwork(num_tps=num, **common,  # noqa: E731
                                                        **model_params['dense_motion_params'])
    return {
        'inpainting_network': lambda: tpsmm.InpaintingNetwork(**model_params['generator_params'], **common),
        'dense_motion_network': dense_motion,
        'kp_detector': lambda: tpsmm.KPDetector(num_tps=num, **common),
        'bg_predictor': tpsmm.BGMotionPredictor,
        'avd_network': lambda: tpsmm.AVDNetwork(num_tps=num, **model_params.get('avd_network_params', {})),
    }


def build_models(model_params, names=None, device=None):
    """model_params: a config's `model_params` section -> {name: nn.Module} for the requested names
    (default: model_names(model_params)).

    FOMM:  generator     = OcclusionAwareGenerator(**generator_params, **common_params)
           discriminator = MultiScaleDiscriminator(**discriminator_params, **common_params)
           kp_detector   = KPDetector(**kp_detector_params, **common_params)
    TPSMM: inpainting_network   = InpaintingNetwork(**generator_params, **common_params)
           dense_motion_network = DenseMotionNetwork(**common_params, **dense_motion_params)
           kp_detector          = KPDetector(**common_params)
           bg_predictor         = BGMotionPredictor()
           avd_network          = AVDNetwork(num_tps, **avd_network_params)
    CPABMM (motion_model cpab): the same, with CpabDenseMotionNetwork(num_cpab, ...) as dense_motion_network.

    device: where parameters are created; 'meta' builds shape-only models (no memory, no init cost),
    which is how checkpoint key lists are compared against every official config.
    """
    names = model_names(model_params) if names is None else names
    if motion_model(model_params) != 'fomm':
        makers = _tps_makers(model_params)
    else:
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

