"""The motion-family registry: one entry per family (FOMM, TPSMM, CPABMM) holding everything that
differs between them, so that the config loader, the model builder, run.py, demo.py and part swap ask
the registry instead of testing a family's name.

A family is recognised from a config's `model_params`: `motion_model: <name>` if given, else the
first family (latest registered first) whose `recognise` accepts the section, so the originals'
configs work as they are; FOMM, registered first, accepts any section.

Adding a family is one package (its networks, its schema, its training class, its `animation` and
`motion` adapters) plus one `register(Family(...))` entry below (or, for a plug-in, a call to
`register` before the config is loaded).

    family_of(model_params) -> Family            family_named('tps') -> Family
    Family.networks(model_params) -> {name: () -> nn.Module}
    Family.animation(models, background) -> (generator, kp_detector)   the animation core's interface
    Family.motion(mode, relative, adapt_scale, avd_network) -> the animation core's motion options
"""
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple, Type

from modules import fomm
from modules.config import cpabmm as cpabmm_config, fomm as fomm_config, tpsmm as tpsmm_config
from modules.cpabmm import family as cpabmm
from modules.tpsmm import family as tpsmm
from modules.tpsmm.training import AvdTraining, TpsTraining
from modules.cpabmm.training import CpabTraining
from modules.training import FommTraining


@dataclass(frozen=True)
class Family:
    """What one motion family brings; see the module docstring for the call signatures."""
    name: str  # the value of model_params.motion_model
    title: str  # for messages
    recognise: Callable[[Mapping], bool]  # an original config's model_params without motion_model
    identifying_keys: Tuple[str, ...]  # common_params keys that name the family's K (a motion_model that
    # contradicts them is refused)
    schema: Mapping  # the config schema (modules.config.types)
    check: Callable  # the cross-section rules of a validated config: check(config, where)
    networks: Callable[[Mapping], Dict[str, Callable]]  # {checkpoint name: maker} of a config's model_params
    checkpoint_names: Tuple[str, ...]  # every network a checkpoint of the family may hold
    model_names: Callable[[Mapping], Tuple[str, ...]]  # the networks a config describes
    optional: Tuple[str, ...]  # networks a checkpoint may lack
    demo_models: Tuple[str, ...]  # what demo.load_checkpoints returns, in the original's order
    animation: Callable  # (models, background=False) -> (generator, kp_detector)
    motion: Callable  # (mode, relative, adapt_scale, avd_network) -> motion options
    modes: Tuple[str, ...]  # demo.py --mode values
    from_api: Callable  # the original's make_animation arguments -> (generator, kp_detector, motion)
    api_network: Type  # the class of the original make_animation's first network argument
    training: Optional[Type]  # run.py --mode train (modules.training describes the interface); None: none
    trained_apart: Tuple[str, ...] = ()  # networks --mode train leaves out
    avd_training: Optional[Type] = None  # run.py --mode train_avd
    mixed_precision: bool = False  # run.py --bf16
    part_segmentation: bool = False  # run.py --mode train_segmentation and part_swap.py
    not_exported: Optional[str] = None  # why export.py cannot write its models as ONNX graphs (None: it can)

    def without_missing(self, models, checkpoint):
        """{name: network}, each optional network the checkpoint lacks set to None (never left with
        random weights, as TPSMM's demo would leave its avd_network)."""
        return {name: None if name in self.optional and checkpoint.get(name) is None else model
                for name, model in models.items()}


REGISTRY: Dict[str, Family] = {}


def register(family: Family) -> Family:
    """Adds (or replaces) a family; returns it."""
    REGISTRY[family.name] = family
    return family


def family_named(name: str) -> Family:
    """The registered family called `name`; KeyError naming the registered ones if none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f'no motion family {name!r}; registered: {", ".join(REGISTRY)}') from None


def family_of(model_params: Mapping) -> Family:
    """The family of a config's model_params: motion_model if it names one, else the latest
    registered family whose `recognise` accepts the section (FOMM accepts any)."""
    name = model_params.get('motion_model') if isinstance(model_params, Mapping) else None
    if name in REGISTRY:
        return REGISTRY[name]
    for family in reversed(REGISTRY.values()):
        if family.recognise(model_params):
            return family
    raise KeyError('no registered motion family accepts this model_params')


def _section(model_params, name):
    value = model_params.get(name) if isinstance(model_params, Mapping) else None
    return value if isinstance(value, Mapping) else {}


register(Family(
    name='fomm', title='FOMM', recognise=lambda model_params: True, identifying_keys=('num_kp',),
    schema=fomm_config.SCHEMA, check=fomm_config.check,
    networks=fomm.networks, checkpoint_names=fomm.MODEL_NAMES, model_names=fomm.model_names,
    optional=('discriminator',), demo_models=fomm.DEMO_MODELS,
    animation=fomm.animation, motion=fomm.motion, modes=fomm.MODES,
    from_api=fomm.from_api, api_network=fomm.OcclusionAwareGenerator,
    training=FommTraining, mixed_precision=True, part_segmentation=True))

register(Family(
    name='tps', title='TPSMM',
    recognise=lambda model_params: 'num_tps' in _section(model_params, 'common_params'),
    identifying_keys=tpsmm.TRANSFORM_KEYS,
    schema=tpsmm_config.SCHEMA, check=tpsmm_config.check,
    networks=tpsmm.networks, checkpoint_names=tpsmm.MODEL_NAMES, model_names=tpsmm.model_names,
    optional=('bg_predictor', 'avd_network'), demo_models=tpsmm.DEMO_MODELS,
    animation=tpsmm.animation, motion=tpsmm.motion, modes=tpsmm.MODES,
    from_api=tpsmm.from_api, api_network=tpsmm.InpaintingNetwork,
    training=TpsTraining, trained_apart=('avd_network',), avd_training=AvdTraining))

register(Family(  # TPSMM's networks, adapters and modes; its own dense motion network and losses
    name='cpab', title='CPABMM',
    recognise=lambda model_params: ('num_cpab' in _section(model_params, 'common_params')
                                    or 'max_iter' in _section(model_params, 'dense_motion_params')),
    identifying_keys=cpabmm.TRANSFORM_KEYS,
    schema=cpabmm_config.SCHEMA, check=cpabmm_config.check,
    networks=cpabmm.networks, checkpoint_names=tpsmm.MODEL_NAMES, model_names=tpsmm.model_names,
    optional=('bg_predictor', 'avd_network'), demo_models=tpsmm.DEMO_MODELS,
    animation=tpsmm.animation, motion=tpsmm.motion, modes=tpsmm.MODES,
    from_api=tpsmm.from_api, api_network=tpsmm.InpaintingNetwork,
    training=CpabTraining, trained_apart=('avd_network',), avd_training=AvdTraining,
    not_exported='its keypoint fit is an iterative optimisation, not a fixed graph'))
