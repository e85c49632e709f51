"""CPABMM's training iteration: TPSMM's (modules.tpsmm.training), with CPABMM's losses
(modules.cpabmm.model.GeneratorFullModel: TPSMM's plus the structure and keypoint semantic losses)."""
from modules.cpabmm.model import GeneratorFullModel
from modules.tpsmm.training import TpsTraining


class CpabTraining(TpsTraining):
    """TPSMM's optimizers, steps and checkpoints; CPABMM's losses."""

    full_model = GeneratorFullModel
