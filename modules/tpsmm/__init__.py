"""The Thin-Plate Spline Motion Model family (TPSMM, Zhao & Zhang, CVPR 2022): class names, constructor
arguments and state-dict keys as its original code, so its configs and published checkpoints
(vox, taichi, ted, mgif) load unchanged. Blocks shared with FOMM (hourglass, down/up/res blocks,
anti-aliased resampling) come from modules.util with TPSMM's instance normalisation.

CPABMM, which builds on these networks, is its own family: modules.cpabmm (it imports this package,
never the other way round)."""
from modules.tpsmm.avd_network import AVDNetwork
from modules.tpsmm.bg_motion_predictor import BGMotionPredictor
from modules.tpsmm.dense_motion import DenseMotionNetwork
from modules.tpsmm.generator import TpsGenerator
from modules.tpsmm.inpainting_network import InpaintingNetwork
from modules.tpsmm.keypoint_detector import KPDetector
from modules.tpsmm.transform import TPS

__all__ = ['AVDNetwork', 'BGMotionPredictor', 'DenseMotionNetwork', 'InpaintingNetwork', 'KPDetector', 'TPS',
           'TpsGenerator']
