"""The schema of a CPABMM config (model_params.motion_model: cpab, or common_params.num_cpab, or
dense_motion_params.max_iter) and its cross-section rules.

CPABMM is TPSMM's networks with CPAB transforms in the dense motion network, so its schema is TPSMM's
(modules.config.tpsmm) with its own common and dense-motion keys and a few more training keys.
"""

from __future__ import annotations

from modules.config import tpsmm
from modules.config.types import (NONNEG, PATH, POS_INT, Bool, Invalid, Null, OneOf, Section, Str, choice_rule,
                                  fill, motion_model_key, opt, req)

__all__ = ["CPAB_SCHEMA", "SCHEMA", "CPAB_COMMON_KEYS", "COMMON_KEYS", "check"]

#: Keys of CPABMM's model_params.common_params; they may appear in that section only.
CPAB_COMMON_KEYS = ("num_cpab",) + tpsmm.TPS_COMMON_KEYS
COMMON_KEYS = CPAB_COMMON_KEYS

_COMMON = Section({
    "num_cpab": opt(POS_INT, "number K of partial CPAB transforms, 5 keypoints each, plus one global CPAB of all "
                             "keypoints"),
    "num_tps": opt(POS_INT, "the same as num_cpab (CPABMM's vox config names it so)"),
    **{name: key for name, key in tpsmm.COMMON.keys.items() if name != "num_tps"},
}, doc="passed to every CPABMM model constructor", only_here=CPAB_COMMON_KEYS)

_DENSE_MOTION = Section({
    **tpsmm.DENSE_MOTION.keys,
    "max_iter": opt(POS_INT, "CPABMM's Adam steps per partial fit (1.5x for the global one); used by fit: adam", 100),
    "fit": opt(Str(rule=choice_rule("gauss_newton", "adam")),
               "keypoint-to-CPAB fit: gauss_newton (batched, fast) or adam (CPABMM's loop)", "gauss_newton"),
    "fit_iterations": opt(POS_INT, "Gauss-Newton iterations per fit (it stops early once converged)", 10),
    "integration_steps": opt(POS_INT, "steps of the CPAB integrator (libcpab's 50)", 50),
}, doc="CpabDenseMotionNetwork")

_MODEL = Section({
    **tpsmm.MODEL.keys,
    "motion_model": motion_model_key("cpab"),
    "common_params": req(_COMMON, tpsmm.MODEL.keys["common_params"].doc),
    "dense_motion_params": req(_DENSE_MOTION, "dense motion network: an hourglass over the K + 2 warped sources"),
}, doc="CPABMM architecture (TPSMM's, with its own common and dense-motion keys)")

_LOSS_WEIGHTS = Section({
    **tpsmm.LOSS_WEIGHTS.keys,
    "structure": fill(NONNEG, "weight of the structure-alignment loss (DINO ViT key self-similarity; CPABMM's "
                              "0.1), used when use_vit_loss is true; needs train_params.vit_weights", 0.1),
    "sam": fill(NONNEG, "weight of the SAM-guided keypoint semantic loss; > 0 needs train_params.sam_model_path",
                0),
}, doc="loss weights")

_TRAIN = Section({
    **{name: key for name, key in tpsmm.TRAIN.keys.items() if name != "loss_weights"},
    "use_vit_loss": fill(Bool(), "add CPABMM's structure-alignment loss (weight loss_weights.structure; needs "
                                 "vit_weights)", False),
    "vit_weights": fill(OneOf(PATH, Null()), "local DINO ViT-B/8 weights (dino_vitbase8_pretrain.pth) for the "
                                             "structure loss; nothing is downloaded", None),
    "sam_model_path": fill(OneOf(PATH, Null()), "local SAM ViT-B weights (sam_vit_b_01ec64.pth) for the keypoint "
                                                "semantic loss; nothing is downloaded", None),
    "loss_weights": req(_LOSS_WEIGHTS, tpsmm.TRAIN.keys["loss_weights"].doc),
}, doc="training")

#: A CPABMM config (TPSMM's networks, CPAB transforms).
CPAB_SCHEMA = Section({
    **tpsmm.TPS_SCHEMA.keys,
    "model_params": req(_MODEL, tpsmm.TPS_SCHEMA.keys["model_params"].doc),
    "train_params": req(_TRAIN, tpsmm.TPS_SCHEMA.keys["train_params"].doc),
}, doc="a CPABMM config")
SCHEMA = CPAB_SCHEMA


def check(config: dict, where: str = "<config>") -> None:
    """CPABMM's rules: TPSMM's, and K given once (num_cpab or num_tps); raises `Invalid` on the first
    broken rule."""
    common = config["model_params"]["common_params"]
    if ("num_cpab" in common) == ("num_tps" in common):
        raise Invalid(("model_params", "common_params"),
                      "give the number of partial CPAB transforms once: num_cpab (or num_tps, as CPABMM's vox "
                      "config), not " + ("both" if "num_cpab" in common else "neither"))
    tpsmm.check(config)
