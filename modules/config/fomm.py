"""The schema of an FOMM config (First Order Motion Model) and its cross-section rules.

The configs keep the original layout (users know it by heart)::

    dataset_params        -> FramesDataset(**dataset_params)
    model_params
      common_params       -> passed to every model constructor below
      kp_detector_params  -> KPDetector(**kp_detector_params, **common_params)
      generator_params    -> OcclusionAwareGenerator(**generator_params, **common_params)
      discriminator_params-> MultiScaleDiscriminator(**discriminator_params, **common_params)
    train_params          -> train loop, losses, equivariance transform
    reconstruction_params -> reconstruction mode
    animate_params        -> animation mode
    visualizer_params     -> Visualizer(**visualizer_params)

`SCHEMA` is the single source of truth: for every section it lists the allowed keys, their types,
whether they are required, their default and a one-line help text (also the key's comment in the YAML
files). `check(config, where)` holds the rules that involve more than one key.

The sections that do not depend on the motion model (the dataset, the reconstruction and animation
modes, the visualizer) and the training keys that mean the same in every family are defined here and
reused by the TPSMM schema (modules.config.tpsmm).

Defaults and model_params: the optional constructor arguments (scale_factor, sn, use_kp, ...) are
validated but never filled in, so `model_params` comes back exactly as written and the models are
built exactly as the original would build them. Defaults are filled only where the scripts read a key
directly (e.g. `train_params.checkpoint_freq`, `visualizer_params`, `animate_params`).
"""

from __future__ import annotations

import math

from modules.config.types import (NONNEG, NONNEG_INT, PATH, POS_INT, POSITIVE, SCALE, Bool, Float,
                                  Int, Invalid, ListOf, Null, OneOf, Section, Str, documented_default,
                                  extension_rule, fill, log, motion_model_key, nonempty_rule, opt, req, warn_once)

__all__ = ["SCHEMA", "COMMON_KEYS", "NUM_VGG_LEVELS", "check"]

#: Keys of model_params.common_params; they may appear in that section only.
COMMON_KEYS = ("num_kp", "num_channels", "estimate_jacobian")

#: Number of VGG19 feature levels used by the perceptual loss (relu1_1 ... relu5_1).
NUM_VGG_LEVELS = 5

# ----------------------------------------------------------------------------------------------
# Sections, keys and help texts every family shares (modules.config.tpsmm imports them)
# ----------------------------------------------------------------------------------------------

AUGMENTATION = Section({
    "flip_param": opt(OneOf(Section({
        "horizontal_flip": opt(Bool(), "mirror both frames left-right with probability 0.5", False),
        "time_flip": opt(Bool(), "swap the two frames (play the clip backwards) with probability 0.5", False),
    }), Null()), "random flips (applied first); null or absent = none"),
    "rotation_param": opt(OneOf(Section({
        "degrees": req(OneOf(NONNEG, ListOf(Float(), length=2, length_reason="[min, max]")),
                       "rotate by a random angle in [-degrees, degrees] (or in [min, max] for a list)"),
    }), Null()), "random rotation (applied after flips); null or absent = none"),
    "resize_param": opt(OneOf(Section({
        "ratio": opt(ListOf(POSITIVE, length=2, length_reason="[min, max]"),
                     "rescale by a factor drawn uniformly from [min, max]", [0.75, 4.0 / 3.0]),
    }), Null()), "random rescaling (applied after rotation); null or absent = none"),
    "crop_param": opt(OneOf(Section({
        "size": req(OneOf(POS_INT, ListOf(POS_INT, length=2, length_reason="[height, width]")),
                    "random crop of this size [height, width] (edge-padded first if the frame is smaller)"),
    }), Null()), "random crop at the same place in both frames (applied after resizing); null or absent = none"),
    "jitter_param": opt(OneOf(Section({
        "brightness": opt(NONNEG, "brightness multiplied by a factor drawn from [1 - b, 1 + b] (0 = off)", 0),
        "contrast": opt(NONNEG, "contrast multiplied by a factor drawn from [1 - c, 1 + c] (0 = off)", 0),
        "saturation": opt(NONNEG, "saturation multiplied by a factor drawn from [1 - s, 1 + s] (0 = off)", 0),
        "hue": opt(Float(min=0, max=0.5), "hue rotated by a fraction of a full turn drawn from [-h, h], h at most 0.5 "
                                          "(0 = off)", 0),
    }), Null()), "random colour change, drawn once for both frames (applied last); null or absent = none"),
}, doc="training-time augmentation, applied in the fixed order flip, rotation, resize, crop, jitter")

DATASET = Section({
    "root_dir": req(PATH, "folder of .mp4/.gif videos, stacked .png strips or frame folders; with train/ and test/ "
                          "subfolders, else split 80/20 at random"),
    "frame_shape": fill(OneOf(ListOf(POS_INT, length=3, length_reason="[height, width, channels]"), Null()),
                        "[height, width, channels] of one frame; used to cut stacked .png/.jpg strips "
                        "(null, as in TPSMM's and CPABMM's files: [256, 256, 3])", [256, 256, 3]),
    "id_sampling": fill(Bool(), "true: an epoch visits each identity folder (train/<id>/...) once, picking one of "
                                "its videos at random; false: every video", False),
    "pairs_list": fill(OneOf(PATH, Null()), "CSV with 'source' and 'driving' video names used by animate; "
                                            "null = random pairs", None),
    "augmentation_params": fill(AUGMENTATION, "random augmentation of training frames, applied in the order flip, "
                                              "rotation, resize, crop, jitter; absent = none", {}),
}, doc="the video dataset")

#: Keys that mean the same in every family's train_params.
EPOCHS_KEYS = {
    "num_epochs": req(POS_INT, "number of training epochs"),
    "num_repeats": fill(POS_INT, "each epoch passes over the dataset this many times (fewer, longer epochs)", 1),
    "epoch_milestones": fill(ListOf(NONNEG_INT), "divide all learning rates by 10 at these epochs", []),
}
VGG19_WEIGHTS = fill(OneOf(PATH, Null()), "local vgg19-dcbb9e9d.pth for the perceptual loss; "
                                          "null = $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth; "
                                          "'portable' = fixed pseudo-random weights (no file)", None)
PERCEPTUAL = req(ListOf(NONNEG, length=NUM_VGG_LEVELS,
                        length_reason="one weight per VGG19 feature level, relu1_1 ... relu5_1"),
                 "weights of the VGG19 L1 loss on every pyramid scale, one per VGG level (relu1_1 ... relu5_1)")
EQUIVARIANCE_VALUE = req(NONNEG, "weight of the keypoint equivariance loss: keypoints must follow a known random "
                                 "warp of the frame")
SIGMA_AFFINE = req(NONNEG, "std of the noise added to the identity affine matrix of the equivariance warp")
BATCH_SIZE = req(POS_INT, "frame pairs per step, over all devices together")
CHECKPOINT_FREQ = "save a checkpoint every this many epochs (and one at the end)"
FORMAT = fill(Str(rule=extension_rule), "file extension of the visualisations ('.mp4' or '.gif'); a .png strip of "
                                        "the predicted frames is written too", ".mp4")
NUM_CHANNELS = "number of image channels (3 for RGB); must match frame_shape"
COMMON_PARAMS = "given to every network (write these keys here only)"
DENSE_BLOCK_EXPANSION = "channels of the first dense-motion hourglass block, doubled at each level"
DENSE_SCALE_FACTOR = "the dense motion is estimated on the source downscaled by this factor (anti-aliased)"

#: Help of the top-level sections every family has.
DATASET_HELP = "videos to train and test on"
MODEL_HELP = "the networks; each *_params section holds constructor arguments"
TRAIN_HELP = "training (run.py --mode train)"
RECONSTRUCTION_HELP = ("reconstruction mode (run.py --mode reconstruction): every test video is rebuilt from its own "
                       "first frame")
ANIMATE_HELP = "animate mode (run.py --mode animate): the motion of one test video drives the first frame of another"
VISUALIZER_HELP = "pictures drawn during training and in the other modes"

RECONSTRUCTION = Section({
    "num_videos": fill(OneOf(NONNEG_INT, Null()), "number of test videos to reconstruct; null = all", None),
    "format": FORMAT,
    "extractor": fill(OneOf(Str(nonempty_rule), Null()),
                      "also compute the paper's AKD, MKR and AED with this extractor (faces, cartoon or "
                      "module:Class; see evaluate.py); null = L1 only", None),
}, doc="reconstruction mode")

NORMALIZATION = Section({
    "adapt_movement_scale": fill(Bool(), "scale the motion by sqrt(source / driving keypoint convex-hull "
                                         "area)", False),
    "use_relative_movement": fill(Bool(), "move the source keypoints by the driving keypoints' "
                                          "displacement since the first frame", False),
    "use_relative_jacobian": fill(Bool(), "with relative movement, also apply the jacobians' change "
                                          "since the first frame", False),
}, doc="how driving keypoints are transferred onto the source")

ANIMATE = Section({
    "num_pairs": fill(POS_INT, "number of (source, driving) pairs to animate", 50),
    "format": FORMAT,
    "normalization_params": fill(NORMALIZATION, "how driving keypoints are transferred onto the source"),
}, doc="animation mode")

VISUALIZER = Section({
    "kp_size": fill(POS_INT, "radius in pixels of the drawn keypoints", 5),
    "draw_border": fill(Bool(), "draw white lines at the left and right edge of each image", False),
    "colormap": fill(Str(rule=nonempty_rule), "matplotlib colormap that colours the keypoints",
                     "gist_rainbow"),
}, doc="visualisations")

# ----------------------------------------------------------------------------------------------
# FOMM's model and training
# ----------------------------------------------------------------------------------------------

_COMMON = Section({
    "num_kp": req(POS_INT, "number of keypoints K"),
    "num_channels": req(POS_INT, NUM_CHANNELS),
    "estimate_jacobian": opt(Bool(), "first-order model: each keypoint also gets a 2x2 jacobian (local affine "
                                     "motion); false = zero-order, keypoint positions only", False),
}, doc="passed to every model constructor", only_here=COMMON_KEYS)

_KP_DETECTOR = Section({
    "temperature": req(POSITIVE, "softmax temperature of the keypoint heatmaps (smaller = peakier)"),
    "block_expansion": req(POS_INT, "channels of the first hourglass block, doubled at each level"),
    "max_features": req(POS_INT, "channel cap of the hourglass"),
    "num_blocks": req(POS_INT, "number of down/up blocks of the hourglass"),
    "scale_factor": opt(SCALE, "the detector works on the image downscaled by this factor (anti-aliased)", 1),
    "single_jacobian_map": opt(Bool(), "all keypoints share one set of 4 jacobian maps", False),
    "pad": opt(NONNEG_INT, "zero padding of the 7x7 keypoint head (0 = its output is 6 pixels smaller)", 0),
}, doc="KPDetector")

_DENSE_MOTION = Section({
    "block_expansion": req(POS_INT, DENSE_BLOCK_EXPANSION),
    "max_features": req(POS_INT, "channel cap of the dense-motion hourglass"),
    "num_blocks": req(POS_INT, "number of down/up blocks of the dense-motion hourglass"),
    "scale_factor": opt(SCALE, DENSE_SCALE_FACTOR, 1),
    "kp_variance": opt(POSITIVE, "variance of the Gaussian drawn around each keypoint ([-1, 1] units)", 0.01),
}, doc="DenseMotionNetwork (num_kp, num_channels and estimate_occlusion_map come from the generator)")

_GENERATOR = Section({
    "block_expansion": req(POS_INT, "channels of the first encoder block, doubled at each downsampling"),
    "max_features": req(POS_INT, "channel cap of the encoder/decoder"),
    "num_down_blocks": req(NONNEG_INT, "stride-2 encoder blocks (the decoder has as many upsampling blocks)"),
    "num_bottleneck_blocks": req(NONNEG_INT, "number of residual blocks at the lowest resolution"),
    "estimate_occlusion_map": opt(Bool(), "also predict an occlusion map that dims the warped features where the "
                                          "source cannot show the driving pose", False),
    "skips": opt(Bool(), "also warp the encoder's finer feature maps and feed them to the decoder at their "
                         "resolution (not in the original FOMM; its checkpoints have none)", False),
    "paste_source": opt(Bool(), "the prediction is the warped source image where the occlusion map says visible, "
                                "the decoder's output elsewhere (TPSMM's output; not in the original FOMM)", False),
    "dense_motion_params": opt(OneOf(_DENSE_MOTION, Null()),
                               "network that turns the keypoints into a dense motion field (and the occlusion "
                               "map); null or absent = no warping at all", None),
}, doc="OcclusionAwareGenerator")

_DISCRIMINATOR = Section({
    "scales": opt(ListOf(SCALE, unique=True), "one discriminator per image scale, each in train_params.scales; "
                                              "write 1, not 1.0 (the checkpoint key is discs.<scale>)", []),
    "block_expansion": opt(POS_INT, "channels of the first block, doubled per block", 64),
    "max_features": opt(POS_INT, "channel cap", 512),
    "num_blocks": opt(POS_INT, "number of down blocks (= number of feature maps for feature matching)", 4),
    "sn": opt(Bool(), "spectral normalisation on every convolution", False),
    "use_kp": opt(Bool(), "also feed the driving keypoint heatmaps to the discriminator", False),
    "kp_variance": opt(POSITIVE, "variance of those keypoint heatmaps ([-1, 1] units)", 0.01),
}, doc="MultiScaleDiscriminator")

_MODEL = Section({
    "motion_model": motion_model_key("fomm"),
    "common_params": req(_COMMON, COMMON_PARAMS),
    "kp_detector_params": req(_KP_DETECTOR, "keypoint detector: an hourglass network with one heatmap per keypoint"),
    "generator_params": req(_GENERATOR, "generator: encodes the source image, warps its features, decodes the result"),
    "discriminator_params": req(_DISCRIMINATOR, "multi-scale patch discriminator (trained only when generator_gan "
                                                "> 0)"),
}, doc="model architecture")

_TRANSFORM = Section({
    "sigma_affine": SIGMA_AFFINE,
    "sigma_tps": opt(NONNEG, "std of the spline weights of the control points (needs points_tps)"),
    "points_tps": opt(Int(min=2), "the spline's control points form a points_tps x points_tps grid "
                                  "(needs sigma_tps)"),
}, doc="random warp for the equivariance losses")

_LOSS_WEIGHTS = Section({
    "generator_gan": req(NONNEG, "weight of the generator's LSGAN loss; 0 = no adversarial training"),
    "discriminator_gan": req(NONNEG, "weight of the discriminator's LSGAN loss"),
    "feature_matching": req(ListOf(NONNEG), "L1 between discriminator features of real and generated frames, one "
                                            "weight per discriminator block"),
    "perceptual": PERCEPTUAL,
    "equivariance_value": EQUIVARIANCE_VALUE,
    "equivariance_jacobian": req(NONNEG, "weight of the jacobian equivariance loss: jacobians must agree with the "
                                         "jacobian of that warp"),
    "l1": fill(NONNEG, "weight of an L1 loss between the generated and the driving frame at full resolution "
                       "(not in the original; 0 = off): the pseudo-random VGG19 of vgg19_weights: portable is "
                       "nearly blind to colour", 0),
}, doc="loss weights")

_TRAIN = Section({
    **EPOCHS_KEYS,
    "lr_generator": req(NONNEG, "Adam learning rate of the generator"),
    "lr_discriminator": req(NONNEG, "Adam learning rate of the discriminator"),
    "lr_kp_detector": req(NONNEG, "Adam learning rate of the keypoint detector (0 = frozen)"),
    "batch_size": BATCH_SIZE,
    "scales": req(ListOf(SCALE, min_length=1, unique=True),
                  "image pyramid scales of the perceptual loss (also feed the discriminator)"),
    "checkpoint_freq": fill(POS_INT, CHECKPOINT_FREQ, 100),
    "vgg19_weights": VGG19_WEIGHTS,
    "crop": opt(Bool(), "not used; accepted so that the original custom_data.yaml loads"),
    "transform_params": req(_TRANSFORM, "random warp for the equivariance losses: affine, plus a thin-plate spline "
                                        "with sigma_tps and points_tps"),
    "loss_weights": req(_LOSS_WEIGHTS, "weight of each loss term (0 switches it off)"),
}, doc="training")

_SEGMENTATION_MODEL = Section({
    "block_expansion": req(POS_INT, "channels of the hourglass's first block, doubled per level"),
    "max_features": req(POS_INT, "channel cap of the hourglass"),
    "num_blocks": req(POS_INT, "hourglass levels (frame sides must divide by 2 ** num_blocks)"),
}, doc="the segmentation network (modules.segmentation.SegmentationNetwork)")

_SEGMENTATION_TRAIN = Section({
    "num_epochs": req(POS_INT, "number of training epochs"),
    "num_repeats": fill(POS_INT, "random frames drawn from each training video per epoch", 1),
    "batch_size": req(POS_INT, "frames per step"),
    "lr": req(POSITIVE, "Adam learning rate (cross-entropy loss)"),
    "epoch_milestones": fill(ListOf(NONNEG_INT), "divide the learning rate by 10 at these epochs", []),
}, doc="training of the segmentation network")

_SEGMENTATION = Section({
    "part_names": req(ListOf(Str(rule=nonempty_rule), min_length=2, unique=True),
                      "one name per label, the background (label 0) first"),
    "annotations": req(PATH, "folder with <split>/<video>.npz files holding 'masks' (T, H, W) uint8 labels, "
                             "one per frame of the dataset's frame-folder videos (cartoon_faces.py writes them)"),
    "model_params": req(_SEGMENTATION_MODEL, "the segmentation network: an hourglass (as the keypoint detector's) and "
                                             "a 7x7 convolution to one logit per label"),
    "train_params": req(_SEGMENTATION_TRAIN, "its training (run.py --mode train_segmentation)"),
}, doc="part segmentation for part_swap.py")

#: The whole config: one source of truth for keys, types, requirements, defaults and descriptions.
SCHEMA = Section({
    "dataset_params": req(DATASET, DATASET_HELP),
    "model_params": req(_MODEL, MODEL_HELP),
    "train_params": req(_TRAIN, TRAIN_HELP),
    "reconstruction_params": fill(RECONSTRUCTION, RECONSTRUCTION_HELP),
    "animate_params": fill(ANIMATE, ANIMATE_HELP),
    "visualizer_params": fill(VISUALIZER, VISUALIZER_HELP),
    "segmentation_params": opt(_SEGMENTATION, "part segmentation for part_swap.py"),
}, doc="an FOMM config")


# ----------------------------------------------------------------------------------------------
# Cross-section rules
# ----------------------------------------------------------------------------------------------

def check(config: dict, where: str = "<config>") -> None:
    """FOMM's rules that involve more than one key, on a config `SCHEMA` has validated; raises
    `Invalid` on the first broken rule."""
    model = config["model_params"]
    common = model["common_params"]
    train = config["train_params"]
    discriminator = model["discriminator_params"]
    estimate_jacobian = common.get("estimate_jacobian", documented_default(_COMMON, "estimate_jacobian"))

    frame_shape = config["dataset_params"]["frame_shape"]
    if frame_shape[2] != common["num_channels"]:
        raise Invalid(("dataset_params", "frame_shape"),
                      f"{frame_shape} is [height, width, channels] with {frame_shape[2]} channel(s), but "
                      f"model_params.common_params.num_channels is {common['num_channels']}; make them equal")

    # The discriminator looks up pyramid level 'prediction_' + str(scale) built from train_params.scales.
    train_scales = train["scales"]
    train_keys = {"prediction_" + str(scale) for scale in train_scales}
    for i, scale in enumerate(discriminator.get("scales", documented_default(_DISCRIMINATOR, "scales"))):
        if "prediction_" + str(scale) in train_keys:
            continue
        path = ("model_params", "discriminator_params", "scales", i)
        same_value = [t for t in train_scales if math.isclose(t, scale)]
        if same_value:
            raise Invalid(path, f"scale {scale!r} equals {same_value[0]!r} of train_params.scales only "
                                f"numerically; the discriminator looks its image up by name "
                                f"('prediction_{scale}' vs 'prediction_{same_value[0]}'), so write both "
                                f"the same way")
        raise Invalid(path, f"scale {scale!r} is missing from train_params.scales {train_scales}; the "
                            f"discriminator reads image pyramid level 'prediction_{scale}', so add "
                            f"{scale!r} to train_params.scales or drop it here")

    weights = train["loss_weights"]
    num_blocks = discriminator.get("num_blocks", documented_default(_DISCRIMINATOR, "num_blocks"))
    if discriminator.get("scales") and len(weights["feature_matching"]) != num_blocks:
        raise Invalid(("train_params", "loss_weights", "feature_matching"),
                      f"has {len(weights['feature_matching'])} weight(s) but the discriminator has "
                      f"{num_blocks} blocks (model_params.discriminator_params.num_blocks); "
                      f"give one weight per block")

    # equivariance_jacobian without jacobians is refused where it is read: by the training model
    # (modules/model.py), so that such a config still reconstructs and animates.

    generator = model["generator_params"]
    if generator.get("paste_source") and not (generator.get("estimate_occlusion_map")
                                              and generator.get("dense_motion_params")):
        raise Invalid(("model_params", "generator_params", "paste_source"),
                      "is true but there is no occlusion map to paste by; set estimate_occlusion_map: True "
                      "(with dense_motion_params) or paste_source: False")

    transform = train["transform_params"]
    if ("sigma_tps" in transform) != ("points_tps" in transform):
        given, absent = ("sigma_tps", "points_tps") if "sigma_tps" in transform else ("points_tps", "sigma_tps")
        raise Invalid(("train_params", "transform_params"),
                      f"'{given}' is set but '{absent}' is not; the thin-plate-spline warp needs both, "
                      f"so give both or neither")

    normalization = config["animate_params"]["normalization_params"]
    if (normalization["use_relative_movement"] and normalization["use_relative_jacobian"]
            and not estimate_jacobian):
        # The paper's no-jacobian ablation in a copy of vox-256.yaml: the original crashed when it
        # animated; the relative jacobian is skipped instead (animate.normalize_kp).
        warn_once(f"{where}: animate_params.normalization_params.use_relative_jacobian is true but "
                  "model_params.common_params.estimate_jacobian is false: there are no jacobians, so the relative "
                  "jacobian is skipped when animating (set it to false to silence this)")

    if "crop" in train:
        log.warning("train_params.crop is not used (it is accepted only for compatibility with the "
                    "original custom_data.yaml)")
