"""The CPAB motion model family (CPABMM, Wang et al., AAAI 2024): TPSMM's networks with the
thin-plate splines of the dense motion network replaced by CPAB transforms (Freifeld et al., PAMI
2017), selected by a config's model_params.motion_model: cpab (common_params.num_cpab; CPABMM's own
vox config names it num_tps).

Its own parts:
* cpab: the CPAB transform and its fits to keypoints (CPAB, fit_gauss_newton, fit_adam);
* dense_motion: CpabDenseMotionNetwork, a TPSMM DenseMotionNetwork with K partial CPABs (5 keypoints
  each) and one global CPAB of all 5K keypoints (TPSMM's state-dict key names; shapes for K + 2
  transforms);
* feature_losses: the structure-alignment loss (StructureLoss, DINO ViT keys) and the keypoint
  semantic loss (KeypointSemanticLoss, SAM image encoder features), behind pluggable extractors;
* model: GeneratorFullModel, TPSMM's training step (modules.tpsmm.model) plus those two losses.

Reused from TPSMM (modules.tpsmm) unchanged: the keypoint detector, background motion predictor,
inpainting network, AVD network, TpsGenerator, the training losses, transform dropout and train_avd, so a
CPABMM checkpoint has TPSMM's layout.
"""
from modules.cpabmm.cpab import CPAB
from modules.cpabmm.dense_motion import CpabDenseMotionNetwork
from modules.cpabmm.feature_losses import KeypointSemanticLoss, StructureLoss
from modules.cpabmm.model import GeneratorFullModel

__all__ = ['CPAB', 'CpabDenseMotionNetwork', 'GeneratorFullModel', 'KeypointSemanticLoss', 'StructureLoss']
