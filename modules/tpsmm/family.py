"""What the Thin-Plate Spline Motion Model family (Zhao & Zhang, CVPR 2022) gives the family registry
(modules.families): its networks as its run.py builds them, the networks its demo loads, and its
networks behind the animation core's generator interface (TpsGenerator) with its demo modes."""
import logging

from modules.errors import InputError
from modules.tpsmm.avd_network import AVDNetwork
from modules.tpsmm.bg_motion_predictor import BGMotionPredictor
from modules.tpsmm.dense_motion import DenseMotionNetwork
from modules.tpsmm.generator import TpsGenerator
from modules.tpsmm.inpainting_network import InpaintingNetwork
from modules.tpsmm.keypoint_detector import KPDetector

log = logging.getLogger(__name__)

MODEL_NAMES = ('inpainting_network', 'dense_motion_network', 'kp_detector', 'bg_predictor', 'avd_network')
DEMO_MODELS = ('inpainting_network', 'kp_detector', 'dense_motion_network', 'avd_network')  # its demo's order
MODES = ('standard', 'relative', 'avd')  # its demo's modes
TRANSFORM_KEYS = ('num_tps',)  # common_params keys that hold K, the number of transformations


def num_transforms(model_params, keys=TRANSFORM_KEYS):
    """K of a config: the first of `keys` found in common_params."""
    common = model_params['common_params']
    return next(common[key] for key in keys if key in common)


def networks(model_params, dense_motion_class=DenseMotionNetwork, transform_keys=TRANSFORM_KEYS, k_name='num_tps'):
    """{name: () -> nn.Module}, as TPSMM's run.py:
    inpainting_network   = InpaintingNetwork(**generator_params, **common_params)
    dense_motion_network = DenseMotionNetwork(num_tps, **common_params, **dense_motion_params)
    kp_detector          = KPDetector(num_tps, **common_params)
    bg_predictor         = BGMotionPredictor()
    avd_network          = AVDNetwork(num_tps, **avd_network_params)
    A family with TPSMM's networks and another dense motion network (CPABMM) passes its class, the
    common_params keys that may hold K and the name of the class's K argument."""
    common = {k: v for k, v in model_params['common_params'].items() if k not in transform_keys}
    num = num_transforms(model_params, transform_keys)
    dense_motion_params = model_params['dense_motion_params']
    return {
        'inpainting_network': lambda: InpaintingNetwork(**model_params['generator_params'], **common),
        'dense_motion_network': lambda: dense_motion_class(**{k_name: num}, **common, **dense_motion_params),
        'kp_detector': lambda: KPDetector(num_tps=num, **common),
        'bg_predictor': BGMotionPredictor,
        'avd_network': lambda: AVDNetwork(num_tps=num, **model_params.get('avd_network_params', {})),
    }


def model_names(model_params):
    """The networks a config describes: bg_predictor only with common_params.bg."""
    bg = model_params['common_params'].get('bg', False)
    return tuple(name for name in MODEL_NAMES if bg or name != 'bg_predictor')


def animation(models, background=False):
    """{name: network} -> (generator, kp_detector) with the animation core's interface: a TpsGenerator
    over the inpainting and dense motion networks, with the background motion when `background` and
    the models hold a bg_predictor (TPSMM's reconstruction.py uses it, its demo.py does not)."""
    bg_predictor = models.get('bg_predictor') if background else None
    return (TpsGenerator(models['inpainting_network'], models['dense_motion_network'], bg_predictor),
            models['kp_detector'])


def motion(mode=None, relative=False, adapt_scale=False, avd_network=None):
    """TPSMM's demo mode -> the animation core's motion options: 'standard' = absolute keypoints,
    'relative' (default) = relative motion always scaled by the keypoints' convex-hull sizes,
    'avd' = avd_network re-poses the source's keypoints. --relative / --adapt_scale are FOMM's."""
    if relative or adapt_scale:
        log.info('--relative / --adapt_scale are for FOMM configs; TPSMM / CPABMM use --mode (now: %s)',
                 mode or 'relative')
    mode = mode or 'relative'
    if mode not in MODES:
        raise InputError(f'--mode must be one of {", ".join(MODES)}, got {mode!r}')
    if mode == 'avd' and avd_network is None:
        raise InputError('--mode avd needs an avd_network in the checkpoint (train one with run.py --mode train_avd)')
    return dict(relative=mode == 'relative', adapt_movement_scale=mode == 'relative',
                avd_network=avd_network if mode == 'avd' else None)


def from_api(inpainting_network, kp_detector, dense_motion_network=None, avd_network=None, device=None,
             mode='relative'):
    """TPSMM's make_animation(source, driving, inpainting_network, kp_detector, dense_motion_network,
    avd_network, device, mode='relative') arguments -> (generator, kp_detector, motion options)."""
    generator, kp_detector = animation({'inpainting_network': inpainting_network, 'kp_detector': kp_detector,
                                        'dense_motion_network': dense_motion_network})
    return generator, kp_detector, motion(mode, avd_network=avd_network)
