"""What the First Order Motion Model family (Siarohin et al., NeurIPS 2019) gives the family registry
(modules.families): its networks as the original run.py builds them, the networks its demo loads,
and how the animation core drives them.

FOMM's networks live where the original put them (modules/keypoint_detector.py, generator.py,
dense_motion.py, discriminator.py); its training iteration is modules.training.FommTraining.
"""
from modules.discriminator import MultiScaleDiscriminator
from modules.errors import InputError
from modules.generator import OcclusionAwareGenerator
from modules.keypoint_detector import KPDetector

MODEL_NAMES = ('generator', 'discriminator', 'kp_detector')  # a checkpoint's networks
DEMO_MODELS = ('generator', 'kp_detector')  # what demo.load_checkpoints returns
MODES = ('standard', 'relative')  # demo modes: absolute keypoints, or --relative --adapt_scale


def networks(model_params):
    """{name: () -> nn.Module}, as the original run.py:
    generator     = OcclusionAwareGenerator(**generator_params, **common_params)
    discriminator = MultiScaleDiscriminator(**discriminator_params, **common_params)
    kp_detector   = KPDetector(**kp_detector_params, **common_params)"""
    common = model_params['common_params']
    return {
        'generator': lambda: OcclusionAwareGenerator(**model_params['generator_params'], **common),
        'discriminator': lambda: MultiScaleDiscriminator(**model_params['discriminator_params'], **common),
        'kp_detector': lambda: KPDetector(**model_params['kp_detector_params'], **common),
    }


def model_names(model_params):
    """The networks an FOMM config describes (all three, always)."""
    return MODEL_NAMES


def animation(models, background=False):
    """{name: network} -> (generator, kp_detector) with the animation core's interface; FOMM's
    generator already has it (`background` is TPSMM's)."""
    return models['generator'], models['kp_detector']


def motion(mode=None, relative=False, adapt_scale=False, avd_network=None):
    """The animation core's motion options: --relative / --adapt_scale as given, or what `mode`
    asks for (relative = both on, standard = both off)."""
    if mode is not None and mode not in MODES:
        raise InputError(f'--mode {mode} is TPSMM\'s (its AVD network); FOMM configs have none: use --mode '
                         f'{" or ".join(reversed(MODES))}')
    if mode is not None:
        relative = adapt_scale = mode == 'relative'
    return dict(relative=relative, adapt_movement_scale=adapt_scale, avd_network=None)


def from_api(generator, kp_detector, relative=True, adapt_movement_scale=True, cpu=False):
    """The original's make_animation(source, driving, generator, kp_detector, relative=True,
    adapt_movement_scale=True, cpu=False) arguments -> (generator, kp_detector, motion options)."""
    return generator, kp_detector, dict(relative=relative, adapt_movement_scale=adapt_movement_scale)
