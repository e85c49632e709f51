"""Builds a motion model's networks from a config's `model_params`, exactly as the original run.py of
its family (FOMM's, TPSMM's or CPABMM's) does; what each family builds is its registry entry's
(modules.families)."""
import contextlib

import torch

from modules import fomm
from modules.families import REGISTRY, family_of
from modules.tpsmm import family as tpsmm

MODEL_NAMES = fomm.MODEL_NAMES  # FOMM's networks
TPS_MODEL_NAMES = tpsmm.MODEL_NAMES  # TPSMM's (and CPABMM's)


def all_model_names():
    """Every network name of every registered family, each once (the checkpoint entries that are networks)."""
    return tuple(dict.fromkeys(name for family in REGISTRY.values() for name in family.checkpoint_names))


def model_names(model_params):
    """The networks a config describes (its family's model_names)."""
    return family_of(model_params).model_names(model_params)


def build_models(model_params, names=None, device=None):
    """model_params: a config's `model_params` section -> {name: nn.Module} for the requested names
    (default: model_names(model_params)), built by the family's `networks` (modules.fomm,
    modules.tpsmm.family, modules.cpabmm.family list the constructor calls).

    device: where parameters are created; 'meta' builds shape-only models (no memory, no init cost),
    which is how checkpoint key lists are compared against every official config.
    """
    names = model_names(model_params) if names is None else names
    makers = family_of(model_params).networks(model_params)
    unknown = [name for name in names if name not in makers]
    if unknown:
        raise ValueError(f'build_models: unknown model name(s) {unknown}; choose from {list(makers)}')
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return {name: makers[name]() for name in names}
