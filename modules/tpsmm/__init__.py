"""The Thin-Plate Spline Motion Model family (TPSMM, Zhao & Zhang, CVPR 2022): class names, constructor
arguments and state-dict keys as its original code, so its configs and published checkpoints
(vox, taichi, ted, mgif) load unchanged. Blocks shared with FOMM (hourglass, down/up/res blocks,
anti-aliased resampling) come from modules.util with TPSMM's instance normalisation.

CPABMM (Wang et al., AAAI 2024) is this family with CPAB transforms (modules.tpsmm.cpab) in the dense
motion network (CpabDenseMotionNetwork); config model_params.motion_model: cpab."""
from modules.tpsmm.avd_network import AVDNetwork
from modules.tpsmm.bg_motion_predictor import BGMotionPredictor
from modules.tpsmm.cpab import CPAB
from modules.tpsmm.cpab_dense_motion import CpabDenseMotionNetwork
from modules.tpsmm.dense_motion import DenseMotionNetwork
from modules.tpsmm.generator import TpsGenerator
from modules.tpsmm.inpainting_network import InpaintingNetwork
from modules.tpsmm.keypoint_detector import KPDetector
from modules.tpsmm.transform import TPS

__all__ = ['AVDNetwork', 'BGMotionPredictor', 'CPAB', 'CpabDenseMotionNetwork', 'DenseMotionNetwork', 'InpaintingNetwork', 'KPDetector', 'TPS',
           'TpsGenerator']
