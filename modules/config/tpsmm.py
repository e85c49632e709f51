"""The schema of a TPSMM config (Thin-Plate Spline Motion Model; model_params.motion_model: tps, or
common_params.num_tps) and its cross-section rules.

TPSMM's model_params and train_params are its own; the dataset, the reconstruction and animation modes
and the visualizer are FOMM's sections (modules.config.fomm), as are the training keys both families
share (epochs, the perceptual loss, the VGG19 weights, the equivariance loss).
"""

from __future__ import annotations

from modules.config.fomm import (ANIMATE, ANIMATE_HELP, BATCH_SIZE, CHECKPOINT_FREQ, COMMON_PARAMS, DATASET,
                                 DATASET_HELP, DENSE_BLOCK_EXPANSION, DENSE_SCALE_FACTOR, EPOCHS_KEYS,
                                 EQUIVARIANCE_VALUE, MODEL_HELP, NUM_CHANNELS, PERCEPTUAL, RECONSTRUCTION,
                                 RECONSTRUCTION_HELP, SIGMA_AFFINE, TRAIN_HELP, VGG19_WEIGHTS, VISUALIZER,
                                 VISUALIZER_HELP)
from modules.config.types import (NONNEG, NONNEG_INT, POS_INT, POSITIVE, SCALE, Bool, Float, Int, Invalid, ListOf,
                                  Section, documented_default, fill, motion_model_key, opt, req)

__all__ = ["TPS_SCHEMA", "SCHEMA", "TPS_COMMON_KEYS", "COMMON_KEYS", "check"]

#: Keys of TPSMM's model_params.common_params; they may appear in that section only (bg is not one of
#: them: it is also a loss weight's name).
TPS_COMMON_KEYS = ("num_tps", "num_channels", "multi_mask")
COMMON_KEYS = TPS_COMMON_KEYS

COMMON = Section({
    "num_tps": req(POS_INT, "number K of thin-plate-spline transforms, 5 keypoints each"),
    "num_channels": req(POS_INT, NUM_CHANNELS),
    "bg": opt(Bool(), "estimate an affine background motion (BGMotionPredictor, a ResNet-18)", False),
    "multi_mask": opt(Bool(), "occlusion maps at every resolution of the inpainting network "
                              "(needs dense_motion_params.scale_factor 0.25 and num_down_blocks 3)", True),
}, doc="passed to every TPSMM model constructor", only_here=TPS_COMMON_KEYS)

_GENERATOR = Section({
    "block_expansion": req(POS_INT, "channels of the first level of the inpainting network, doubled per level"),
    "max_features": req(POS_INT, "channel cap of the inpainting network"),
    "num_down_blocks": req(POS_INT, "number of downsampling (and upsampling) levels (multi_mask needs 3)"),
}, doc="InpaintingNetwork")

DENSE_MOTION = Section({
    "block_expansion": req(POS_INT, DENSE_BLOCK_EXPANSION),
    "max_features": req(POS_INT, "channel cap of the dense-motion hourglass"),
    "num_blocks": req(POS_INT, "number of down/up blocks of the dense-motion hourglass"),
    "scale_factor": opt(SCALE, DENSE_SCALE_FACTOR, 0.25),
    "kp_variance": opt(POSITIVE, "variance of the Gaussian drawn around each keypoint ([-1, 1] units)", 0.01),
}, doc="DenseMotionNetwork")

_AVD = Section({
    "id_bottle_size": opt(POS_INT, "width of the identity (source shape) embedding", 64),
    "pose_bottle_size": opt(POS_INT, "width of the pose (driving motion) embedding", 64),
}, doc="AVDNetwork")

MODEL = Section({
    "motion_model": motion_model_key("tps"),
    "common_params": req(COMMON, COMMON_PARAMS),
    "generator_params": req(_GENERATOR, "inpainting network"),
    "dense_motion_params": req(DENSE_MOTION, "dense motion network: an hourglass over the K + 1 warped sources"),
    "avd_network_params": opt(_AVD, "animation-via-disentanglement network for demo.py --mode avd (absent = its "
                                    "defaults)"),
}, doc="TPSMM architecture")

_TRANSFORM = Section({
    "sigma_affine": SIGMA_AFFINE,
    "sigma_tps": req(NONNEG, "std of the spline weights of the control points"),
    "points_tps": req(Int(min=2), "the spline's control points form a points_tps x points_tps grid"),
}, doc="random thin-plate-spline warp for the equivariance loss")

LOSS_WEIGHTS = Section({
    "perceptual": PERCEPTUAL,
    "equivariance_value": EQUIVARIANCE_VALUE,
    "warp_loss": req(NONNEG, "weight of the warp loss (encoder features of the driving frame vs the "
                             "warped source's)"),
    "bg": req(NONNEG, "weight of the background cycle loss |I - bg(s, d) bg(d, s)| (from bg_start on)"),
}, doc="loss weights")

TRAIN = Section({
    **EPOCHS_KEYS,
    "lr_generator": req(NONNEG, "learning rate of the one Adam (betas 0.5, 0.999; weight decay 1e-4) of all "
                                "networks"),
    "batch_size": BATCH_SIZE,
    "scales": req(ListOf(SCALE, min_length=1, unique=True), "image pyramid scales of the perceptual loss"),
    "dataloader_workers": opt(NONNEG_INT, "data-loading processes (run.py --num_workers overrides it)"),
    "checkpoint_freq": fill(POS_INT, CHECKPOINT_FREQ, 50),
    "dropout_epoch": fill(NONNEG_INT, "TPS dropout (whole transforms dropped at random) during the first this many "
                                      "epochs (0 = none)", 0),
    "dropout_maxp": fill(Float(min=0, max=1), "largest dropout probability", 0.3),
    "dropout_startp": fill(Float(min=0, max=1), "dropout probability at epoch 0", 0.0),
    "dropout_inc_epoch": fill(POS_INT, "the probability rises linearly to dropout_maxp over this many epochs",
                              10),
    "bg_start": fill(NONNEG_INT, "train the background motion (and its loss) from this epoch on", 0),
    "vgg19_weights": VGG19_WEIGHTS,
    "transform_params": req(_TRANSFORM, "random thin-plate-spline warp for the equivariance loss"),
    "loss_weights": req(LOSS_WEIGHTS, "weight of each loss term (the logged losses are already weighted)"),
}, doc="training")

_TRAIN_AVD = Section({
    "num_epochs": req(POS_INT, "number of training epochs of the AVD network"),
    "num_repeats": fill(POS_INT, "each epoch passes over the dataset this many times", 1),
    "batch_size": req(POS_INT, "keypoint sets per step"),
    "dataloader_workers": opt(NONNEG_INT, "data-loading processes (run.py --num_workers overrides it)"),
    "checkpoint_freq": fill(POS_INT, CHECKPOINT_FREQ, 50),
    "epoch_milestones": fill(ListOf(NONNEG_INT), "divide the learning rate by 10 at these epochs", []),
    "lr": req(POSITIVE, "Adam learning rate (betas 0.5, 0.999)"),
    "lambda_shift": req(NONNEG, "weight of the keypoint reconstruction loss"),
    "lambda_affine": opt(NONNEG, "not used (accepted: TPSMM's mgif-256.yaml has it)"),
    "random_scale": req(Float(min=0, max=1, min_exclusive=True),
                        "driving keypoints are rescaled about the centre by factors in [1 - s, 1 + s] per axis"),
}, doc="training of the AVD network (run.py --mode train_avd)")

#: A TPSMM config (the Thin-Plate Spline Motion Model family).
TPS_SCHEMA = Section({
    "dataset_params": req(DATASET, DATASET_HELP),
    "model_params": req(MODEL, MODEL_HELP),
    "train_params": req(TRAIN, TRAIN_HELP),
    "train_avd_params": opt(_TRAIN_AVD, "training of the AVD network (run.py --mode train_avd, after train; only the "
                                        "AVD network learns)"),
    "reconstruction_params": fill(RECONSTRUCTION, RECONSTRUCTION_HELP),
    "animate_params": fill(ANIMATE, ANIMATE_HELP),
    "visualizer_params": fill(VISUALIZER, VISUALIZER_HELP),
}, doc="a TPSMM config")
SCHEMA = TPS_SCHEMA


def check(config: dict, where: str = "<config>") -> None:
    """TPSMM's cross-section rules, on a config `TPS_SCHEMA` (or CPABMM's) has validated; raises
    `Invalid` on the first broken rule."""
    model = config["model_params"]
    common = model["common_params"]
    frame_shape = config["dataset_params"]["frame_shape"]
    if frame_shape[2] != common["num_channels"]:
        raise Invalid(("dataset_params", "frame_shape"),
                      f"{frame_shape} is [height, width, channels] with {frame_shape[2]} channel(s), but "
                      f"model_params.common_params.num_channels is {common['num_channels']}; make them equal")
    if common["num_channels"] != 3:
        raise Invalid(("model_params", "common_params", "num_channels"),
                      f"is {common['num_channels']}, but TPSMM's ResNet-18 keypoint and background networks take "
                      f"RGB images; use 3")
    multi_mask = common.get("multi_mask", documented_default(COMMON, "multi_mask"))
    if not multi_mask and config["train_params"]["loss_weights"]["warp_loss"] != 0:
        raise Invalid(("train_params", "loss_weights", "warp_loss"),
                      "is not 0, but the warp loss compares encoder levels with their own occlusion maps, which "
                      "need multi_mask: true; set warp_loss: 0 or multi_mask: true")
    if multi_mask:
        # TPSMM's layout: 2 occlusion maps from the hourglass + log2(1 / scale) upsampled ones = 4, one
        # per level of a 3-level inpainting network.
        scale = model["dense_motion_params"].get("scale_factor", documented_default(DENSE_MOTION, "scale_factor"))
        if scale != 0.25:
            raise Invalid(("model_params", "dense_motion_params", "scale_factor"),
                          f"is {scale!r}, but multi_mask (multi-resolution occlusion maps) works only with "
                          f"0.25 (TPSMM's layout); set it to 0.25 or multi_mask: false")
        if model["generator_params"]["num_down_blocks"] != 3:
            raise Invalid(("model_params", "generator_params", "num_down_blocks"),
                          f"is {model['generator_params']['num_down_blocks']!r}, but multi_mask (one occlusion "
                          f"map per level) works only with 3 (TPSMM's layout); set it to 3 or multi_mask: false")
