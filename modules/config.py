"""Loading and checking the YAML configs of the First Order Motion Model.

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

`SCHEMA` below is the single source of truth: for every section it lists the allowed keys, their
types, whether they are required, their default and a one-line description. `load_config` reads a
file with `yaml.safe_load`, checks it against the schema (unknown keys, wrong types, missing required
keys, then a few cross-section rules) and fills the defaults marked as filled. Every problem raises a
`ConfigError` whose one-line message names the file, the dotted key path and what to do, e.g.::

    my.yaml: model_params.kp_detector_params: unknown key 'temprature' (did you mean 'temperature'?) (line 24)

Defaults and model_params: the optional constructor arguments (scale_factor, sn, use_kp, ...) are
validated but never filled in, so `model_params` comes back exactly as written and the models are
built exactly as the original would build them. Defaults are filled only where the scripts read a key
directly (e.g. `train_params.checkpoint_freq`, `visualizer_params`, `animate_params`).
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple, Union

import yaml

from modules.errors import ConfigError
from modules.limits import MAX_CONFIG_NODES_ENV, max_config_nodes

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1 << 20  # the official configs are 2-6 KB
_WARNED: set = set()


def _warn_once(message: str) -> None:
    """log.warning, once per process for the same message (configs are loaded more than once)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)

__all__ = [
    "CHECKPOINT_NAMES",
    "COMMON_KEYS",
    "TPS_COMMON_KEYS",
    "MOTION_MODELS",
    "TPS_SCHEMA",
    "motion_model",
    "CONFIG_DIR",
    "Key",
    "NO_DEFAULT",
    "SCHEMA",
    "Section",
    "find_config_files",
    "iter_schema",
    "load_config",
    "validate_config",
]

#: Folder of the official configs (the repository's ``config/``).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

#: Official config name -> file name of the checkpoint the authors published for it (None: none).
CHECKPOINT_NAMES = {
    "vox-256": "vox-cpk.pth.tar",
    "vox-adv-256": "vox-adv-cpk.pth.tar",
    "taichi-256": "taichi-cpk.pth.tar",
    "taichi-adv-256": "taichi-adv-cpk.pth.tar",
    "bair-256": "bair-cpk.pth.tar",
    "fashion-256": "fashion.pth.tar",
    "mgif-256": "mgif-cpk.pth.tar",
    "nemo-256": "nemo-cpk.pth.tar",
    "cartoon-64": "pretrained/cartoon-64/cartoon-64.pth.tar",  # ours, bundled (trained by this repository)
    # TPSMM's published checkpoints (Thin-Plate Spline Motion Model family)
    "tpsmm-vox-256": "vox.pth.tar",
    "tpsmm-taichi-256": "taichi.pth.tar",
    "tpsmm-ted-384": "ted.pth.tar",
    "tpsmm-mgif-256": "mgif.pth.tar",
    "tpsmm-cartoon-64": None,  # none published: the FOMM vs TPSMM comparison trains it (README)
    **{f"cpabmm-{name}": None for name in ("vox-256", "taichi-256", "ted-384", "mgif-256", "cartoon-64")},  # none
}

#: Keys of model_params.common_params; they may appear in that section only.
COMMON_KEYS = ("num_kp", "num_channels", "estimate_jacobian")
TPS_COMMON_KEYS = ("num_tps", "num_channels", "multi_mask")  # (bg is also a loss weight's name)

#: Motion-model families and the common_params keys that may identify each one (CPABMM's vox config
#: names its K num_tps, its other configs num_cpab).
MOTION_MODELS = ("fomm", "tps", "cpab")
FAMILY_KEYS = {"fomm": ("num_kp",), "tps": ("num_tps",), "cpab": ("num_cpab", "num_tps")}


def motion_model(model_params: Mapping) -> str:
    """The motion model of a config's model_params: `motion_model` if given, else 'cpab' when
    common_params has num_cpab or dense_motion_params has max_iter (CPABMM's configs), 'tps' when
    common_params has num_tps (TPSMM's) and 'fomm' otherwise, so original configs of every family
    work as they are. (An invalid value is left for the schema check to report.)"""
    family = model_params.get("motion_model") if isinstance(model_params, Mapping) else None
    if family in MOTION_MODELS:
        return family
    common = model_params.get("common_params") if isinstance(model_params, Mapping) else None
    dense = model_params.get("dense_motion_params") if isinstance(model_params, Mapping) else None
    if (isinstance(common, Mapping) and "num_cpab" in common) or (isinstance(dense, Mapping) and "max_iter" in dense):
        return "cpab"
    return "tps" if isinstance(common, Mapping) and "num_tps" in common else "fomm"


def model_family(model_params: Mapping) -> str:
    """'fomm' or 'tps': the architecture. CPABMM ('cpab') is TPSMM's networks with CPAB transforms in
    the dense motion network, so it trains, evaluates and animates as TPSMM does."""
    return "fomm" if motion_model(model_params) == "fomm" else "tps"


#: Number of VGG19 feature levels used by the perceptual loss (relu1_1 ... relu5_1).
NUM_VGG_LEVELS = 5

Path_ = Tuple[Union[str, int], ...]


class _NoDefault:
    """Marker for a key without a default value."""

    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT = _NoDefault()


class _Invalid(Exception):
    """Internal: one problem at a key path; turned into a ConfigError by the public functions.

    `path` is the key path the message is about; `at` is the path whose YAML line is reported
    (e.g. the offending unknown key itself), defaulting to `path`.
    """

    def __init__(self, path: Path_, message: str, at: Optional[Path_] = None):
        super().__init__(message)
        self.path = tuple(path)
        self.message = message
        self.at = tuple(at) if at is not None else self.path


# ----------------------------------------------------------------------------------------------
# Value types
# ----------------------------------------------------------------------------------------------

def _describe_value(value: Any) -> str:
    """Short human description of a YAML value for error messages."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


class _Type:
    """Base of the schema types: `matches` is a shallow type test, `check` validates deeply.

    `check` returns a fresh copy of the value (containers are rebuilt, scalars kept as they are, so an
    int stays an int: the discriminator key depends on str(scale)).
    """

    description = "a value"
    plural = "values"

    def matches(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, value: Any, path: Path_) -> Any:
        return value

    def validate(self, value: Any, path: Path_) -> Any:
        """Check `value` (at key `path`) and return a clean copy, or raise `_Invalid`."""
        if not self.matches(value):
            raise _Invalid(path, f"expected {self.description}, got {_describe_value(value)}"
                                 f"{_type_hint(self, value)}")
        return self.check(value, path)

    def kinds(self) -> set:
        """Basic kinds this type accepts ('int', 'float', 'bool', 'str', 'null', 'list', 'map')."""
        return set()


class Int(_Type):
    """An integer (booleans and floats are refused), optionally with a lower bound."""

    description = "an integer"
    plural = "integers"

    def __init__(self, min: Optional[int] = None):
        self.min = min

    def matches(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def check(self, value: Any, path: Path_) -> Any:
        if self.min is not None and value < self.min:
            raise _Invalid(path, f"must be >= {self.min}, got {value}")
        return value

    def kinds(self) -> set:
        return {"int"}


class Float(_Type):
    """A real number; integers are accepted and kept as integers. Optional range and extra rule."""

    description = "a number"
    plural = "numbers"

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None,
                 min_exclusive: bool = False, rule: Optional[Callable[[float], Optional[str]]] = None):
        self.min = min
        self.max = max
        self.min_exclusive = min_exclusive
        self.rule = rule

    def matches(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def check(self, value: Any, path: Path_) -> Any:
        if not math.isfinite(value):
            raise _Invalid(path, f"must be a finite number, got {value!r}")
        if self.min is not None:
            if self.min_exclusive and value <= self.min:
                raise _Invalid(path, f"must be > {self.min}, got {value!r}")
            if not self.min_exclusive and value < self.min:
                raise _Invalid(path, f"must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise _Invalid(path, f"must be <= {self.max}, got {value!r}")
        if self.rule is not None:
            problem = self.rule(value)
            if problem:
                raise _Invalid(path, problem)
        return value

    def kinds(self) -> set:
        return {"int", "float"}


class Bool(_Type):
    """true or false (YAML also reads True/False/yes/no as booleans)."""

    description = "true or false"
    plural = "booleans"

    def matches(self, value: Any) -> bool:
        return isinstance(value, bool)

    def kinds(self) -> set:
        return {"bool"}


class Str(_Type):
    """A string, optionally restricted by a rule (a function returning a problem or None)."""

    description = "a string"
    plural = "strings"

    def __init__(self, rule: Optional[Callable[[str], Optional[str]]] = None):
        self.rule = rule

    def matches(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: Path_) -> Any:
        if self.rule is not None:
            problem = self.rule(value)
            if problem:
                raise _Invalid(path, problem)
        return value

    def kinds(self) -> set:
        return {"str"}


class Null(_Type):
    """YAML null (``null``, ``~`` or an empty value)."""

    description = "null"
    plural = "nulls"

    def matches(self, value: Any) -> bool:
        return value is None

    def kinds(self) -> set:
        return {"null"}


class ListOf(_Type):
    """A list whose items all have type `item`; optionally an exact or minimal length."""

    plural = "lists"

    def __init__(self, item: _Type, length: Optional[int] = None, min_length: int = 0,
                 length_reason: str = "", unique: bool = False):
        self.item = item
        self.length = length
        self.min_length = min_length
        self.length_reason = length_reason
        self.unique = unique

    @property
    def description(self) -> str:  # type: ignore[override]
        count = f"{self.length} " if self.length is not None else ""
        return f"a list of {count}{self.item.plural}"

    def matches(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: Any, path: Path_) -> Any:
        reason = f" ({self.length_reason})" if self.length_reason else ""
        if self.length is not None and len(value) != self.length:
            raise _Invalid(path, f"must have exactly {self.length} items{reason}, got {len(value)}")
        if len(value) < self.min_length:
            raise _Invalid(path, f"must have at least {self.min_length} item(s){reason}, got {len(value)}")
        out = [self.item.validate(item, path + (i,)) for i, item in enumerate(value)]
        if self.unique:
            seen = {}
            for i, item in enumerate(out):
                if str(item) in seen:
                    raise _Invalid(path + (i,), f"{item!r} is listed twice (items {seen[str(item)]} and {i}); "
                                                f"keep it once")
                seen[str(item)] = i
        return out

    def kinds(self) -> set:
        return {"list"}


class OneOf(_Type):
    """Any one of several types; the first whose shallow test matches validates the value."""

    def __init__(self, *types: _Type):
        self.types = types

    @property
    def description(self) -> str:  # type: ignore[override]
        return " or ".join(t.description for t in self.types)

    @property
    def plural(self) -> str:  # type: ignore[override]
        return " or ".join(t.plural for t in self.types)

    def matches(self, value: Any) -> bool:
        return any(t.matches(value) for t in self.types)

    def check(self, value: Any, path: Path_) -> Any:
        for t in self.types:
            if t.matches(value):
                return t.check(value, path)
        raise AssertionError("unreachable: matches() was true")  # pragma: no cover

    def kinds(self) -> set:
        return set().union(*(t.kinds() for t in self.types))


@dataclass(frozen=True)
class Key:
    """One allowed key of a section.

    Attributes:
        type: the value's type (a `_Type`, or a `Section` for a nested mapping).
        doc: one-line description (also the comment text users see in the docs).
        required: the key must be present.
        default: the value used when the key is absent (for optional constructor arguments this is
            the constructor's default, documented only).
        fill: when True, an absent key is added to the returned config with `default`
            (for a nested `Section`, with that section's own filled defaults).
    """

    type: _Type
    doc: str
    required: bool = False
    default: Any = NO_DEFAULT
    fill: bool = False


class Section(_Type):
    """A mapping with a fixed set of allowed keys (each a `Key`)."""

    description = "a mapping of keys (key: value lines)"
    plural = "mappings"

    def __init__(self, keys: Mapping[str, Key], doc: str = ""):
        self.keys = dict(keys)
        self.doc = doc
        self.dotted = ""  # set by _index_schema: where this section lives in SCHEMA

    def matches(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    def check(self, value: Any, path: Path_) -> Any:
        for name in value:
            if not isinstance(name, str):
                raise _Invalid(path, f"key {name!r} is not a name; keys must be words such as "
                                     f"'{next(iter(self.keys))}'", at=path + (str(name),))
            if name not in self.keys:
                raise _Invalid(path, _unknown_key_message(self, name), at=path + (name,))
        out = {}
        for name, item in value.items():
            out[name] = self.keys[name].type.validate(item, path + (name,))
        for name, key in self.keys.items():
            if name in value:
                continue
            if key.required:
                raise _Invalid(path, f"required key '{name}' is missing ({key.doc}); add it")
            if key.fill:
                out[name] = self.default_for(name, path)
        return out

    def default_for(self, name: str, path: Path_) -> Any:
        """The value filled in for the absent key `name` (a fresh copy)."""
        key = self.keys[name]
        if isinstance(key.type, Section) and key.default is NO_DEFAULT:
            return key.type.check({}, path + (name,))
        return copy.deepcopy(key.default)

    def kinds(self) -> set:
        return {"map"}


def _type_hint(expected: _Type, value: Any) -> str:
    """A '; <what to do>' suffix for common type slips (quoted numbers, 1e-4, 10.0 for an int, ...)."""
    kinds = expected.kinds()
    if isinstance(value, str) and kinds & {"int", "float"}:
        try:
            number = float(value)
        except ValueError:
            return ""
        text = value.strip()
        if "e" in text.lower() and "." not in text.lower().split("e")[0]:
            mantissa, exponent = text.lower().split("e", 1)
            sign = exponent if exponent[:1] in "+-" else "+" + exponent
            return (f"; YAML reads {text} as text, write it with a dot and a signed exponent, "
                    f"e.g. {mantissa}.0e{sign}")
        if "int" in kinds and "float" not in kinds and not number.is_integer():
            return ""
        return "; remove the quotes"
    if isinstance(value, str) and "bool" in kinds and value.strip().lower() in ("true", "false", "yes", "no"):
        return "; write true or false without quotes"
    if isinstance(value, bool) and kinds & {"int", "float"}:
        return "; write a number, not true/false"
    if isinstance(value, float) and "int" in kinds and "float" not in kinds and value.is_integer():
        return f"; write it without a decimal point: {int(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and "bool" in kinds:
        return "; write true or false"
    if value is None and kinds == {"map"}:
        return "; give its keys on indented lines below it, or remove it"
    return ""


# ----------------------------------------------------------------------------------------------
# Value rules
# ----------------------------------------------------------------------------------------------

def _inverse_integer_rule(value: float) -> Optional[str]:
    """Rule: value in (0, 1] and 1/value a whole number (the anti-aliased downscaling keeps every
    (1/value)-th pixel)."""
    if not 0 < value <= 1:
        return f"must be in (0, 1], got {value!r}"
    inverse = 1.0 / value
    if not math.isclose(inverse, round(inverse), rel_tol=1e-9, abs_tol=1e-9):
        return (f"must be 1/n for a whole number n (1, 0.5, 0.25, 0.125, ...): the image is blurred and "
                f"then every n-th pixel kept, got {value!r}")
    return None


def _extension_rule(value: str) -> Optional[str]:
    """Rule: a file extension with its leading dot, e.g. '.mp4'."""
    if not value.startswith(".") or len(value) < 2:
        return f"must be a file extension with its leading dot, e.g. '.mp4' or '.gif', got {value!r}"
    return None


def _nonempty_rule(value: str) -> Optional[str]:
    """Rule: a non-empty string."""
    if not value.strip():
        return "must not be empty"
    return None


_SCALE = Float(rule=_inverse_integer_rule)
_POS_INT = Int(min=1)
_NONNEG_INT = Int(min=0)
_NONNEG = Float(min=0)
_POSITIVE = Float(min=0, min_exclusive=True)
_PATH = Str(rule=_nonempty_rule)


def _req(type_: _Type, doc: str) -> Key:
    """A required key."""
    return Key(type_, doc, required=True)


def _opt(type_: _Type, doc: str, default: Any = NO_DEFAULT) -> Key:
    """An optional key that is validated but not filled in (`default` is documentation only)."""
    return Key(type_, doc, default=default)


def _fill(type_: _Type, doc: str, default: Any = NO_DEFAULT) -> Key:
    """An optional key that is filled in with `default` when absent."""
    return Key(type_, doc, default=default, fill=True)


# ----------------------------------------------------------------------------------------------
# The schema
# ----------------------------------------------------------------------------------------------

_AUGMENTATION = Section({
    "flip_param": _opt(OneOf(Section({
        "horizontal_flip": _opt(Bool(), "mirror both frames left-right with probability 0.5", False),
        "time_flip": _opt(Bool(), "swap the order of the frames with probability 0.5", False),
    }), Null()), "random flips (applied first); null or absent = none"),
    "rotation_param": _opt(OneOf(Section({
        "degrees": _req(OneOf(_NONNEG, ListOf(Float(), length=2, length_reason="[min, max]")),
                        "rotate by a random angle in [-degrees, degrees] (or in [min, max] for a list)"),
    }), Null()), "random rotation (applied after flips); null or absent = none"),
    "resize_param": _opt(OneOf(Section({
        "ratio": _opt(ListOf(_POSITIVE, length=2, length_reason="[min, max]"),
                      "rescale by a random factor drawn from [min, max]", [0.75, 4.0 / 3.0]),
    }), Null()), "random rescaling (applied after rotation); null or absent = none"),
    "crop_param": _opt(OneOf(Section({
        "size": _req(OneOf(_POS_INT, ListOf(_POS_INT, length=2, length_reason="[height, width]")),
                     "random crop of this size [height, width] (edge-padded first if the frame is smaller)"),
    }), Null()), "random crop (applied after resizing); null or absent = none"),
    "jitter_param": _opt(OneOf(Section({
        "brightness": _opt(_NONNEG, "brightness factor drawn from [1 - b, 1 + b] (0 = off)", 0),
        "contrast": _opt(_NONNEG, "contrast factor drawn from [1 - c, 1 + c] (0 = off)", 0),
        "saturation": _opt(_NONNEG, "saturation factor drawn from [1 - s, 1 + s] (0 = off)", 0),
        "hue": _opt(Float(min=0, max=0.5), "hue shift drawn from [-h, h], at most 0.5 (0 = off)", 0),
    }), Null()), "random colour jitter (applied last); null or absent = none"),
}, doc="training-time augmentation, applied in the fixed order flip, rotation, resize, crop, jitter")

_DATASET = Section({
    "root_dir": _req(_PATH, "folder of the videos; with train/ and test/ subfolders, else split 80/20 at random"),
    "frame_shape": _fill(OneOf(ListOf(_POS_INT, length=3, length_reason="[height, width, channels]"), Null()),
                         "[height, width, channels] of one frame; used to cut stacked .png/.jpg strips "
                         "(null, as in TPSMM's and CPABMM's files: [256, 256, 3])", [256, 256, 3]),
    "id_sampling": _fill(Bool(), "train on one random video per identity folder (train/<id>/<video>/*.mp4) "
                                 "instead of on every video", False),
    "pairs_list": _fill(OneOf(_PATH, Null()), "CSV with 'source' and 'driving' video names used by animate; "
                                              "null = random pairs", None),
    "augmentation_params": _fill(_AUGMENTATION, "training-time augmentation; absent = none", {}),
}, doc="the video dataset")

_COMMON = Section({
    "num_kp": _req(_POS_INT, "number of keypoints"),
    "num_channels": _req(_POS_INT, "number of image channels (3 for RGB)"),
    "estimate_jacobian": _opt(Bool(), "first-order model: predict a 2x2 jacobian per keypoint "
                                      "(false = zero-order, keypoint positions only)", False),
}, doc="passed to every model constructor")

_KP_DETECTOR = Section({
    "temperature": _req(_POSITIVE, "softmax temperature of the keypoint heatmaps (smaller = peakier)"),
    "block_expansion": _req(_POS_INT, "channel width multiplier of the hourglass"),
    "max_features": _req(_POS_INT, "channel cap of the hourglass"),
    "num_blocks": _req(_POS_INT, "number of down/up blocks of the hourglass"),
    "scale_factor": _opt(_SCALE, "the detector works on the image downscaled by this factor (anti-aliased)", 1),
    "single_jacobian_map": _opt(Bool(), "one set of jacobian maps shared by all keypoints", False),
    "pad": _opt(_NONNEG_INT, "zero padding of the 7x7 keypoint head (0 = its output is 6 pixels smaller)", 0),
}, doc="KPDetector")

_DENSE_MOTION = Section({
    "block_expansion": _req(_POS_INT, "channel width multiplier of the dense-motion hourglass"),
    "max_features": _req(_POS_INT, "channel cap of the dense-motion hourglass"),
    "num_blocks": _req(_POS_INT, "number of down/up blocks of the dense-motion hourglass"),
    "scale_factor": _opt(_SCALE, "dense motion is estimated on the source downscaled by this factor", 1),
    "kp_variance": _opt(_POSITIVE, "variance of the Gaussian drawn around each keypoint ([-1, 1] units)", 0.01),
}, doc="DenseMotionNetwork (num_kp, num_channels and estimate_occlusion_map come from the generator)")

_GENERATOR = Section({
    "block_expansion": _req(_POS_INT, "channel width multiplier of the encoder/decoder"),
    "max_features": _req(_POS_INT, "channel cap of the encoder/decoder"),
    "num_down_blocks": _req(_NONNEG_INT, "number of downsampling (and upsampling) blocks"),
    "num_bottleneck_blocks": _req(_NONNEG_INT, "number of residual blocks at the lowest resolution"),
    "estimate_occlusion_map": _opt(Bool(), "predict an occlusion map that masks the warped features", False),
    "skips": _opt(Bool(), "also warp the encoder's finer feature maps and feed them to the decoder at their "
                          "resolution (not in the original FOMM; its checkpoints have none)", False),
    "paste_source": _opt(Bool(), "the prediction is the warped source image where the occlusion map says visible, "
                                 "the decoder's output elsewhere (TPSMM's output; not in the original FOMM)", False),
    "dense_motion_params": _opt(OneOf(_DENSE_MOTION, Null()),
                                "dense motion network; null or absent = no warping at all", None),
}, doc="OcclusionAwareGenerator")

_DISCRIMINATOR = Section({
    "scales": _opt(ListOf(_SCALE, unique=True), "one discriminator per image scale; each must be in "
                                                "train_params.scales", []),
    "block_expansion": _opt(_POS_INT, "channel width multiplier", 64),
    "max_features": _opt(_POS_INT, "channel cap", 512),
    "num_blocks": _opt(_POS_INT, "number of down blocks (= number of feature maps for feature matching)", 4),
    "sn": _opt(Bool(), "spectral normalisation on every convolution", False),
    "use_kp": _opt(Bool(), "also feed the driving keypoint heatmaps to the discriminator", False),
    "kp_variance": _opt(_POSITIVE, "variance of those keypoint heatmaps ([-1, 1] units)", 0.01),
}, doc="MultiScaleDiscriminator")

def _family_rule(value: str) -> Optional[str]:
    """motion_model names a family (whether it fits the keys is checked in _validate)."""
    return None if value in MOTION_MODELS else f"expected one of {list(MOTION_MODELS)}, got {value!r}"


def _motion_model_key(family: str) -> Key:
    return _opt(Str(rule=_family_rule), f"model family: {family!r} (this layout) or the other one of "
                                        f"{list(MOTION_MODELS)}; absent = read from the keys")


#: Keys that mean the same in both families' train_params.
_EPOCHS_KEYS = {
    "num_epochs": _req(_POS_INT, "number of training epochs"),
    "num_repeats": _fill(_POS_INT, "each epoch passes over the dataset this many times", 1),
    "epoch_milestones": _fill(ListOf(_NONNEG_INT), "divide all learning rates by 10 at these epochs", []),
}
_VGG19_WEIGHTS = _fill(OneOf(_PATH, Null()), "local vgg19-dcbb9e9d.pth for the perceptual loss; "
                                             "null = $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth; "
                                             "'portable' = fixed pseudo-random weights (no file)", None)
_PERCEPTUAL = _req(ListOf(_NONNEG, length=NUM_VGG_LEVELS,
                          length_reason="one weight per VGG19 feature level, relu1_1 ... relu5_1"),
                   "weights of the multi-scale VGG19 perceptual loss")
_EQUIVARIANCE_VALUE = _req(_NONNEG, "weight of the keypoint equivariance loss")
_SIGMA_AFFINE = _req(_NONNEG, "std of the random affine part of the equivariance warp")


_MODEL = Section({
    "motion_model": _motion_model_key("fomm"),
    "common_params": _req(_COMMON, "parameters shared by all models"),
    "kp_detector_params": _req(_KP_DETECTOR, "keypoint detector"),
    "generator_params": _req(_GENERATOR, "generator"),
    "discriminator_params": _req(_DISCRIMINATOR, "discriminator"),
}, doc="model architecture")

_TRANSFORM = Section({
    "sigma_affine": _SIGMA_AFFINE,
    "sigma_tps": _opt(_NONNEG, "std of the thin-plate-spline part (needs points_tps)"),
    "points_tps": _opt(Int(min=2), "the spline's control points form a points_tps x points_tps grid "
                                   "(needs sigma_tps)"),
}, doc="random warp for the equivariance losses")

_LOSS_WEIGHTS = Section({
    "generator_gan": _req(_NONNEG, "weight of the generator's LSGAN loss; 0 = no adversarial training"),
    "discriminator_gan": _req(_NONNEG, "weight of the discriminator's LSGAN loss"),
    "feature_matching": _req(ListOf(_NONNEG), "one weight per discriminator block (discriminator "
                                              "feature-matching L1)"),
    "perceptual": _PERCEPTUAL,
    "equivariance_value": _EQUIVARIANCE_VALUE,
    "equivariance_jacobian": _req(_NONNEG, "weight of the jacobian equivariance loss"),
    "l1": _fill(_NONNEG, "weight of an L1 loss between the generated and the driving frame at full resolution "
                         "(not in the original; 0 = off): the pseudo-random VGG19 of vgg19_weights: portable is "
                         "nearly blind to colour", 0),
}, doc="loss weights")

_TRAIN = Section({
    **_EPOCHS_KEYS,
    "lr_generator": _req(_NONNEG, "Adam learning rate of the generator"),
    "lr_discriminator": _req(_NONNEG, "Adam learning rate of the discriminator"),
    "lr_kp_detector": _req(_NONNEG, "Adam learning rate of the keypoint detector (0 = frozen)"),
    "batch_size": _req(_POS_INT, "batch size (over all devices)"),
    "scales": _req(ListOf(_SCALE, min_length=1, unique=True),
                   "image pyramid scales of the perceptual loss (also feed the discriminator)"),
    "checkpoint_freq": _fill(_POS_INT, "save a checkpoint every this many epochs", 100),
    "vgg19_weights": _VGG19_WEIGHTS,
    "crop": _opt(Bool(), "not used; accepted so that the original custom_data.yaml loads"),
    "transform_params": _req(_TRANSFORM, "random warp for the equivariance losses"),
    "loss_weights": _req(_LOSS_WEIGHTS, "loss weights"),
}, doc="training")

_RECONSTRUCTION = Section({
    "num_videos": _fill(OneOf(_NONNEG_INT, Null()), "number of test videos to reconstruct; null = all", None),
    "format": _fill(Str(rule=_extension_rule), "file extension of the visualisations ('.mp4' or '.gif')",
                    ".mp4"),
}, doc="reconstruction mode")

_NORMALIZATION = Section({
    "adapt_movement_scale": _fill(Bool(), "scale the motion by sqrt(source / driving keypoint convex-hull "
                                          "area)", False),
    "use_relative_movement": _fill(Bool(), "move the source keypoints by the driving keypoints' "
                                           "displacement since the first frame", False),
    "use_relative_jacobian": _fill(Bool(), "with relative movement, also apply the jacobians' change "
                                           "since the first frame", False),
}, doc="how driving keypoints are transferred onto the source")

_ANIMATE = Section({
    "num_pairs": _fill(_POS_INT, "number of (source, driving) pairs to animate", 50),
    "format": _fill(Str(rule=_extension_rule), "file extension of the visualisations ('.mp4' or '.gif')",
                    ".mp4"),
    "normalization_params": _fill(_NORMALIZATION, "how driving keypoints are transferred onto the source"),
}, doc="animation mode")

_VISUALIZER = Section({
    "kp_size": _fill(_POS_INT, "radius in pixels of the drawn keypoints", 5),
    "draw_border": _fill(Bool(), "draw a white frame around each image", False),
    "colormap": _fill(Str(rule=_nonempty_rule), "matplotlib colormap that colours the keypoints",
                      "gist_rainbow"),
}, doc="visualisations")

_SEGMENTATION_MODEL = Section({
    "block_expansion": _req(_POS_INT, "channels of the hourglass's first block, doubled per level"),
    "max_features": _req(_POS_INT, "channel cap of the hourglass"),
    "num_blocks": _req(_POS_INT, "hourglass levels (frame sides must divide by 2 ** num_blocks)"),
}, doc="the segmentation network (modules.segmentation.SegmentationNetwork)")

_SEGMENTATION_TRAIN = Section({
    "num_epochs": _req(_POS_INT, "number of training epochs"),
    "num_repeats": _fill(_POS_INT, "random frames drawn from each training video per epoch", 1),
    "batch_size": _req(_POS_INT, "frames per step"),
    "lr": _req(_POSITIVE, "Adam learning rate"),
    "epoch_milestones": _fill(ListOf(_NONNEG_INT), "divide the learning rate by 10 at these epochs", []),
}, doc="training of the segmentation network")

_SEGMENTATION = Section({
    "part_names": _req(ListOf(Str(rule=_nonempty_rule), min_length=2, unique=True),
                       "one name per label, the background (label 0) first"),
    "annotations": _req(_PATH, "folder with <split>/<video>.npz files holding 'masks' (T, H, W) uint8 labels, "
                               "one per frame of the dataset's frame-folder videos (cartoon_faces.py writes them)"),
    "model_params": _req(_SEGMENTATION_MODEL, "the segmentation network"),
    "train_params": _req(_SEGMENTATION_TRAIN, "its training (run.py --mode train_segmentation)"),
}, doc="part segmentation for part_swap.py")

# ---- TPSMM (model_params.motion_model: tps; common_params.num_tps) -----------------------------

_TPS_COMMON = Section({
    "num_tps": _req(_POS_INT, "number of thin-plate-spline transforms (5 keypoints each)"),
    "num_channels": _req(_POS_INT, "number of image channels (3 for RGB)"),
    "bg": _opt(Bool(), "estimate an affine background motion (BGMotionPredictor)", False),
    "multi_mask": _opt(Bool(), "occlusion maps at every resolution of the inpainting network "
                               "(needs dense_motion_params.scale_factor 0.25 and num_down_blocks 3)", True),
}, doc="passed to every TPSMM model constructor")

_TPS_GENERATOR = Section({
    "block_expansion": _req(_POS_INT, "channel width multiplier of the inpainting network"),
    "max_features": _req(_POS_INT, "channel cap of the inpainting network"),
    "num_down_blocks": _req(_POS_INT, "number of downsampling (and upsampling) levels"),
}, doc="InpaintingNetwork")

_TPS_DENSE_MOTION = Section({
    "block_expansion": _req(_POS_INT, "channel width multiplier of the dense-motion hourglass"),
    "max_features": _req(_POS_INT, "channel cap of the dense-motion hourglass"),
    "num_blocks": _req(_POS_INT, "number of down/up blocks of the dense-motion hourglass"),
    "scale_factor": _opt(_SCALE, "dense motion is estimated on the source downscaled by this factor", 0.25),
    "kp_variance": _opt(_POSITIVE, "variance of the Gaussian drawn around each keypoint ([-1, 1] units)", 0.01),
}, doc="DenseMotionNetwork")

_AVD = Section({
    "id_bottle_size": _opt(_POS_INT, "width of the identity embedding", 64),
    "pose_bottle_size": _opt(_POS_INT, "width of the pose embedding", 64),
}, doc="AVDNetwork")

_TPS_MODEL = Section({
    "motion_model": _motion_model_key("tps"),
    "common_params": _req(_TPS_COMMON, "parameters shared by all models"),
    "generator_params": _req(_TPS_GENERATOR, "inpainting network"),
    "dense_motion_params": _req(_TPS_DENSE_MOTION, "dense motion network"),
    "avd_network_params": _opt(_AVD, "animation-via-disentanglement network (absent = its defaults)"),
}, doc="TPSMM architecture")

_TPS_TRANSFORM = Section({
    "sigma_affine": _SIGMA_AFFINE,
    "sigma_tps": _req(_NONNEG, "std of the thin-plate-spline part"),
    "points_tps": _req(Int(min=2), "the spline's control points form a points_tps x points_tps grid"),
}, doc="random thin-plate-spline warp for the equivariance loss")

_TPS_LOSS_WEIGHTS = Section({
    "perceptual": _PERCEPTUAL,
    "equivariance_value": _EQUIVARIANCE_VALUE,
    "warp_loss": _req(_NONNEG, "weight of the warp loss (encoder features of the driving frame vs the "
                               "warped source's)"),
    "bg": _req(_NONNEG, "weight of the background cycle loss |I - bg(s, d) bg(d, s)| (from bg_start on)"),
}, doc="loss weights")

_TPS_TRAIN = Section({
    **_EPOCHS_KEYS,
    "lr_generator": _req(_NONNEG, "Adam learning rate of all networks"),
    "batch_size": _req(_POS_INT, "batch size (over all devices)"),
    "scales": _req(ListOf(_SCALE, min_length=1, unique=True), "image pyramid scales of the perceptual loss"),
    "dataloader_workers": _opt(_NONNEG_INT, "data-loading processes (run.py --num_workers overrides it)"),
    "checkpoint_freq": _fill(_POS_INT, "save a checkpoint every this many epochs", 50),
    "dropout_epoch": _fill(_NONNEG_INT, "TPS dropout during the first this many epochs (0 = none)", 0),
    "dropout_maxp": _fill(Float(min=0, max=1), "largest dropout probability", 0.3),
    "dropout_startp": _fill(Float(min=0, max=1), "dropout probability at epoch 0", 0.0),
    "dropout_inc_epoch": _fill(_POS_INT, "the probability rises linearly to dropout_maxp over this many epochs",
                               10),
    "bg_start": _fill(_NONNEG_INT, "train the background motion (and its loss) from this epoch on", 0),
    "vgg19_weights": _VGG19_WEIGHTS,
    "transform_params": _req(_TPS_TRANSFORM, "random warp for the equivariance loss"),
    "loss_weights": _req(_TPS_LOSS_WEIGHTS, "loss weights"),
}, doc="training")

_TRAIN_AVD = Section({
    "num_epochs": _req(_POS_INT, "number of training epochs of the AVD network"),
    "num_repeats": _fill(_POS_INT, "each epoch passes over the dataset this many times", 1),
    "batch_size": _req(_POS_INT, "batch size"),
    "dataloader_workers": _opt(_NONNEG_INT, "data-loading processes (run.py --num_workers overrides it)"),
    "checkpoint_freq": _fill(_POS_INT, "save a checkpoint every this many epochs", 50),
    "epoch_milestones": _fill(ListOf(_NONNEG_INT), "divide the learning rate by 10 at these epochs", []),
    "lr": _req(_POSITIVE, "Adam learning rate"),
    "lambda_shift": _req(_NONNEG, "weight of the keypoint reconstruction loss"),
    "lambda_affine": _opt(_NONNEG, "not used (accepted: TPSMM's mgif-256.yaml has it)"),
    "random_scale": _req(Float(min=0, max=1, min_exclusive=True),
                         "keypoints are rescaled about the centre by factors in [1 - s, 1 + s] per axis"),
}, doc="training of the AVD network (run.py --mode train_avd)")

#: A TPSMM config (the Thin-Plate Spline Motion Model family).
TPS_SCHEMA = Section({
    "dataset_params": _req(_DATASET, "the video dataset"),
    "model_params": _req(_TPS_MODEL, "model architecture"),
    "train_params": _req(_TPS_TRAIN, "training"),
    "train_avd_params": _opt(_TRAIN_AVD, "training of the AVD network"),
    "reconstruction_params": _fill(_RECONSTRUCTION, "reconstruction mode"),
    "animate_params": _fill(_ANIMATE, "animation mode"),
    "visualizer_params": _fill(_VISUALIZER, "visualisations"),
}, doc="a TPSMM config")


# ---- CPABMM (model_params.motion_model: cpab; TPSMM's networks with CPAB transforms) ------------

def _choice_rule(*choices: str) -> Callable[[str], Optional[str]]:
    return lambda value: None if value in choices else f"expected one of {list(choices)}, got {value!r}"


_CPAB_COMMON = Section({
    "num_cpab": _opt(_POS_INT, "number of partial CPAB transforms (5 keypoints each; one global CPAB is added)"),
    "num_tps": _opt(_POS_INT, "the same as num_cpab (CPABMM's vox config names it so)"),
    **{name: key for name, key in _TPS_COMMON.keys.items() if name != "num_tps"},
}, doc="passed to every CPABMM model constructor")

_CPAB_DENSE_MOTION = Section({
    **_TPS_DENSE_MOTION.keys,
    "max_iter": _opt(_POS_INT, "CPABMM's Adam steps per partial fit (1.5x for the global one); used by fit: adam", 100),
    "fit": _opt(Str(rule=_choice_rule("gauss_newton", "adam")),
                 "keypoint-to-CPAB fit: gauss_newton (batched, fast) or adam (CPABMM's loop)", "gauss_newton"),
    "fit_iterations": _opt(_POS_INT, "Gauss-Newton iterations per fit (it stops early once converged)", 10),
    "integration_steps": _opt(_POS_INT, "steps of the CPAB integrator (libcpab's 50)", 50),
}, doc="CpabDenseMotionNetwork")

_CPAB_MODEL = Section({
    **_TPS_MODEL.keys,
    "motion_model": _motion_model_key("cpab"),
    "common_params": _req(_CPAB_COMMON, "parameters shared by all models"),
    "dense_motion_params": _req(_CPAB_DENSE_MOTION, "dense motion network"),
}, doc="CPABMM architecture (TPSMM's, with its own common and dense-motion keys)")

_CPAB_LOSS_WEIGHTS = Section({
    **_TPS_LOSS_WEIGHTS.keys,
    "structure": _fill(_NONNEG, "weight of the structure-alignment loss (DINO ViT key self-similarity; CPABMM's "
                                "0.1), used when use_vit_loss is true; needs train_params.vit_weights", 0.1),
    "sam": _fill(_NONNEG, "weight of the SAM-guided keypoint semantic loss; > 0 needs train_params.sam_model_path",
                 0),
}, doc="loss weights")

_CPAB_TRAIN = Section({
    **{name: key for name, key in _TPS_TRAIN.keys.items() if name != "loss_weights"},
    "use_vit_loss": _fill(Bool(), "add the structure-alignment loss (weight loss_weights.structure)", False),
    "vit_weights": _fill(OneOf(_PATH, Null()), "local DINO ViT-B/8 weights (dino_vitbase8_pretrain.pth) for the "
                                               "structure loss; nothing is downloaded", None),
    "sam_model_path": _fill(OneOf(_PATH, Null()), "local SAM ViT-B weights (sam_vit_b_01ec64.pth) for the keypoint "
                                                  "semantic loss; nothing is downloaded", None),
    "loss_weights": _req(_CPAB_LOSS_WEIGHTS, "loss weights"),
}, doc="training")

#: A CPABMM config (TPSMM's networks, CPAB transforms).
CPAB_SCHEMA = Section({
    **TPS_SCHEMA.keys,
    "model_params": _req(_CPAB_MODEL, "model architecture"),
    "train_params": _req(_CPAB_TRAIN, "training"),
}, doc="a CPABMM config")


#: The whole config: one source of truth for keys, types, requirements, defaults and descriptions.
SCHEMA = Section({
    "dataset_params": _req(_DATASET, "the video dataset"),
    "model_params": _req(_MODEL, "model architecture"),
    "train_params": _req(_TRAIN, "training"),
    "reconstruction_params": _fill(_RECONSTRUCTION, "reconstruction mode"),
    "animate_params": _fill(_ANIMATE, "animation mode"),
    "visualizer_params": _fill(_VISUALIZER, "visualisations"),
    "segmentation_params": _opt(_SEGMENTATION, "part segmentation for part_swap.py"),
}, doc="an FOMM config")

#: Schema per motion-model family (motion_model(model_params) chooses).
SCHEMAS = {"fomm": SCHEMA, "tps": TPS_SCHEMA, "cpab": CPAB_SCHEMA}


def _walk_sections(section: Section, dotted: str) -> Iterator[Tuple[str, Section]]:
    """Yield (dotted path, Section) for `section` and every section nested in it."""
    yield dotted, section
    for name, key in section.keys.items():
        child = f"{dotted}.{name}" if dotted else name
        types = key.type.types if isinstance(key.type, OneOf) else (key.type,)
        for t in types:
            if isinstance(t, Section):
                yield from _walk_sections(t, child)


def _index_schema() -> dict:
    """Record each section's dotted path; map every key name to the sections that allow it (in
    either family's schema)."""
    homes: dict = {}
    for schema in SCHEMAS.values():
        for dotted, section in _walk_sections(schema, ""):
            section.dotted = dotted
            for name in section.keys:
                if (dotted or "the top level") not in homes.setdefault(name, []):
                    homes[name].append(dotted or "the top level")
    return homes


_KEY_HOMES = _index_schema()


def iter_schema(family: str = "fomm") -> Iterator[Tuple[str, Key]]:
    """Yield (dotted key path, Key) for every key of a family's schema, depth first, in schema order."""
    for dotted, section in _walk_sections(SCHEMAS[family], ""):
        for name, key in section.keys.items():
            yield (f"{dotted}.{name}" if dotted else name), key


def _unknown_key_message(section: Section, name: str) -> str:
    """'unknown key ...' with a close-match suggestion and/or the section the key belongs in."""
    homes = [home for home in _KEY_HOMES.get(name, []) if home != (section.dotted or "the top level")]
    lowered = {allowed.lower(): allowed for allowed in section.keys}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if homes and name in COMMON_KEYS + TPS_COMMON_KEYS + ("num_cpab",):
        return (f"unknown key '{name}' (it belongs in {' or '.join(homes)} only, which is passed to every "
                f"model); move it there")
    if homes and close:
        return (f"unknown key '{name}' (did you mean '{lowered[close[0]]}'? '{name}' is a key of "
                f"{' or '.join(homes)})")
    if homes:
        return f"unknown key '{name}' (it belongs in {' or '.join(homes)}); move it there"
    if close:
        return f"unknown key '{name}' (did you mean '{lowered[close[0]]}'?)"
    return f"unknown key '{name}' (allowed here: {', '.join(section.keys)}); remove or rename it"


# ----------------------------------------------------------------------------------------------
# Cross-section rules
# ----------------------------------------------------------------------------------------------

def _default(section: Section, name: str) -> Any:
    """Documented default of an optional key of `section`."""
    return section.keys[name].default


def _check_semantics(config: dict, where: str = "<config>") -> None:
    """Rules that involve more than one key; raises `_Invalid` on the first broken rule."""
    model = config["model_params"]
    common = model["common_params"]
    train = config["train_params"]
    discriminator = model["discriminator_params"]
    estimate_jacobian = common.get("estimate_jacobian", _default(_COMMON, "estimate_jacobian"))

    frame_shape = config["dataset_params"]["frame_shape"]
    if frame_shape[2] != common["num_channels"]:
        raise _Invalid(("dataset_params", "frame_shape"),
                       f"{frame_shape} is [height, width, channels] with {frame_shape[2]} channel(s), but "
                       f"model_params.common_params.num_channels is {common['num_channels']}; make them equal")

    # The discriminator looks up pyramid level 'prediction_' + str(scale) built from train_params.scales.
    train_scales = train["scales"]
    train_keys = {"prediction_" + str(scale) for scale in train_scales}
    for i, scale in enumerate(discriminator.get("scales", _default(_DISCRIMINATOR, "scales"))):
        if "prediction_" + str(scale) in train_keys:
            continue
        path = ("model_params", "discriminator_params", "scales", i)
        same_value = [t for t in train_scales if math.isclose(t, scale)]
        if same_value:
            raise _Invalid(path, f"scale {scale!r} equals {same_value[0]!r} of train_params.scales only "
                                 f"numerically; the discriminator looks its image up by name "
                                 f"('prediction_{scale}' vs 'prediction_{same_value[0]}'), so write both "
                                 f"the same way")
        raise _Invalid(path, f"scale {scale!r} is missing from train_params.scales {train_scales}; the "
                             f"discriminator reads image pyramid level 'prediction_{scale}', so add "
                             f"{scale!r} to train_params.scales or drop it here")

    weights = train["loss_weights"]
    num_blocks = discriminator.get("num_blocks", _default(_DISCRIMINATOR, "num_blocks"))
    if discriminator.get("scales") and len(weights["feature_matching"]) != num_blocks:
        raise _Invalid(("train_params", "loss_weights", "feature_matching"),
                       f"has {len(weights['feature_matching'])} weight(s) but the discriminator has "
                       f"{num_blocks} blocks (model_params.discriminator_params.num_blocks); "
                       f"give one weight per block")

    # equivariance_jacobian without jacobians is refused where it is read: by the training model
    # (modules/model.py), so that such a config still reconstructs and animates.

    generator = model["generator_params"]
    if generator.get("paste_source") and not (generator.get("estimate_occlusion_map")
                                              and generator.get("dense_motion_params")):
        raise _Invalid(("model_params", "generator_params", "paste_source"),
                       "is true but there is no occlusion map to paste by; set estimate_occlusion_map: True "
                       "(with dense_motion_params) or paste_source: False")

    transform = train["transform_params"]
    if ("sigma_tps" in transform) != ("points_tps" in transform):
        given, absent = ("sigma_tps", "points_tps") if "sigma_tps" in transform else ("points_tps", "sigma_tps")
        raise _Invalid(("train_params", "transform_params"),
                       f"'{given}' is set but '{absent}' is not; the thin-plate-spline warp needs both, "
                       f"so give both or neither")

    normalization = config["animate_params"]["normalization_params"]
    if (normalization["use_relative_movement"] and normalization["use_relative_jacobian"]
            and not estimate_jacobian):
        # The paper's no-jacobian ablation in a copy of vox-256.yaml: the original crashed when it
        # animated; the relative jacobian is skipped instead (animate.normalize_kp).
        _warn_once(f"{where}: animate_params.normalization_params.use_relative_jacobian is true but "
                   "model_params.common_params.estimate_jacobian is false: there are no jacobians, so the relative "
                   "jacobian is skipped when animating (set it to false to silence this)")

    if "crop" in train:
        log.warning("train_params.crop is not used (it is accepted only for compatibility with the "
                    "original custom_data.yaml)")


def _check_tps_semantics(config: dict, where: str = "<config>") -> None:
    """TPSMM's cross-section rules; raises `_Invalid` on the first broken rule."""
    model = config["model_params"]
    common = model["common_params"]
    frame_shape = config["dataset_params"]["frame_shape"]
    if frame_shape[2] != common["num_channels"]:
        raise _Invalid(("dataset_params", "frame_shape"),
                       f"{frame_shape} is [height, width, channels] with {frame_shape[2]} channel(s), but "
                       f"model_params.common_params.num_channels is {common['num_channels']}; make them equal")
    if common["num_channels"] != 3:
        raise _Invalid(("model_params", "common_params", "num_channels"),
                       f"is {common['num_channels']}, but TPSMM's ResNet-18 keypoint and background networks take "
                       f"RGB images; use 3")
    multi_mask = common.get("multi_mask", _default(_TPS_COMMON, "multi_mask"))
    if not multi_mask and config["train_params"]["loss_weights"]["warp_loss"] != 0:
        raise _Invalid(("train_params", "loss_weights", "warp_loss"),
                       "is not 0, but the warp loss compares encoder levels with their own occlusion maps, which "
                       "need multi_mask: true; set warp_loss: 0 or multi_mask: true")
    if multi_mask:
        # TPSMM's layout: 2 occlusion maps from the hourglass + log2(1 / scale) upsampled ones = 4, one
        # per level of a 3-level inpainting network.
        scale = model["dense_motion_params"].get("scale_factor", _default(_TPS_DENSE_MOTION, "scale_factor"))
        if scale != 0.25:
            raise _Invalid(("model_params", "dense_motion_params", "scale_factor"),
                           f"is {scale!r}, but multi_mask (multi-resolution occlusion maps) works only with "
                           f"0.25 (TPSMM's layout); set it to 0.25 or multi_mask: false")
        if model["generator_params"]["num_down_blocks"] != 3:
            raise _Invalid(("model_params", "generator_params", "num_down_blocks"),
                           f"is {model['generator_params']['num_down_blocks']!r}, but multi_mask (one occlusion "
                           f"map per level) works only with 3 (TPSMM's layout); set it to 3 or multi_mask: false")


def _check_cpab_semantics(config: dict, where: str = "<config>") -> None:
    """CPABMM's rules: TPSMM's, and K given once (num_cpab or num_tps)."""
    common = config["model_params"]["common_params"]
    if ("num_cpab" in common) == ("num_tps" in common):
        raise _Invalid(("model_params", "common_params"),
                       "give the number of partial CPAB transforms once: num_cpab (or num_tps, as CPABMM's vox "
                       "config), not " + ("both" if "num_cpab" in common else "neither"))
    _check_tps_semantics(config)


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------

def _dotted(path: Sequence[Union[str, int]]) -> str:
    """('a', 'b', 2) -> 'a.b[2]'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _error(where: str, problem: _Invalid, lines: Optional[Mapping[Path_, int]]) -> ConfigError:
    """Format `problem` as a one-line ConfigError: '<where>: <key path>: <message> (line N)'."""
    location = _dotted(problem.path)
    text = f"{where}: {location}: {problem.message}" if location else f"{where}: {problem.message}"
    if lines:
        at = problem.at
        while at and at not in lines:
            at = at[:-1]
        if at in lines:
            text += f" (line {lines[at]})"
    return ConfigError(" ".join(text.split("\n")))


def _validate(config: Any, where: str, lines: Optional[Mapping[Path_, int]]) -> dict:
    """Schema check, defaults and cross-section rules; raises ConfigError."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping of sections "
                          f"({', '.join(SCHEMA.keys)}), got {_describe_value(config)}")
    family = motion_model(config.get("model_params"))
    model = config.get("model_params")
    common = model.get("common_params") if isinstance(model, Mapping) else None
    if isinstance(common, Mapping) and model.get("motion_model") in MOTION_MODELS:
        by_keys = [name for name, keys in FAMILY_KEYS.items() if any(key in common for key in keys)]
        if by_keys and family not in by_keys:
            raise _error(where, _Invalid(("model_params", "motion_model"),
                                         f"is {family!r} but the keys of this model_params are those of "
                                         f"{by_keys[0]!r} (common_params.{FAMILY_KEYS[by_keys[0]][0]}); fix the "
                                         f"keys or the family"), lines)
    try:
        result = SCHEMAS[family].check(config, ())
        dataset = result.get("dataset_params")
        if isinstance(dataset, dict) and dataset.get("frame_shape", ...) is None:
            dataset["frame_shape"] = _default(_DATASET, "frame_shape")
            log.info("%s: dataset_params.frame_shape is null: frames are %s (set it for other sizes)", where,
                     dataset["frame_shape"])
        {"fomm": _check_semantics, "tps": _check_tps_semantics, "cpab": _check_cpab_semantics}[family](result, where)
    except _Invalid as problem:
        raise _error(where, problem, lines) from None
    return result


def validate_config(config: Mapping, where: Union[str, Path] = "<config>") -> dict:
    """Check an in-memory config against `SCHEMA` and return a new dict with the defaults filled.

    Args:
        config: the parsed config (nested dicts/lists/scalars, as yaml.safe_load returns it).
        where: the name used at the start of error messages (a file name, or '<config>').

    Returns:
        A new nested dict (the input is not modified); absent keys marked as filled in the schema
        are added with their defaults. model_params is returned exactly as given.

    Raises:
        ConfigError: one line naming `where`, the dotted key path and what to do.
    """
    return _validate(config, str(where), None)


def _expanded_size(root: yaml.Node, limit: int, where: str) -> int:
    """Number of nodes of the tree with every alias expanded (shared subtrees counted each time they
    are used); raises ConfigError past `limit` or for an alias that contains itself. Linear in the
    number of distinct nodes: sizes are memoised, so a "billion laughs" file is measured, not expanded."""
    sizes: dict = {}
    active: set = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{where}: an alias refers to a node that contains it (a recursive structure); "
                              f"configs are plain trees, write the values out")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                total += size(key_node) + size(value_node)
                if total > limit:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > limit:
                    break
        active.discard(key)
        sizes[key] = total
        return total

    total = size(root)
    if total > limit:
        raise ConfigError(f"{where}: expands to more than {limit:,} YAML nodes through its aliases (&anchor / *alias); "
                          f"a config is a few hundred: write the values out, or raise the limit with "
                          f"{MAX_CONFIG_NODES_ENV}=<nodes>")
    return total


def _line_map(root: Optional[yaml.Node], where: str) -> dict:
    """Map key paths to 1-based YAML line numbers; raise ConfigError on a key given twice.

    root: the node tree of `yaml.compose` with the SafeLoader (no Python objects).
    """
    lines: dict = {}

    def walk(node: yaml.Node, path: Path_, seen: frozenset) -> None:
        if id(node) in seen:  # an alias pointing back into itself
            return
        seen = seen | {id(node)}
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                name = key_node.value
                line = key_node.start_mark.line + 1
                if name in first_line:
                    location = f"{_dotted(path)}: " if path else ""
                    raise ConfigError(f"{where}: {location}key '{name}' is given twice (lines "
                                      f"{first_line[name]} and {line}); keep only one")
                first_line[name] = line
                lines.setdefault(path + (name,), line)
                walk(value_node, path + (name,), seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(path + (i,), item.start_mark.line + 1)
                walk(item, path + (i,), seen)

    if root is not None:
        walk(root, (), frozenset())
    return lines


def load_config(path: Union[str, Path]) -> dict:
    """Read a YAML config with `yaml.safe_load`, check it and fill the defaults.

    Args:
        path: the YAML file.

    Returns:
        A plain nested dict, indexed like the original (``config['model_params']['common_params']``).

    Raises:
        ConfigError: the file is missing/unreadable/empty, is not valid YAML, or does not fit
            `SCHEMA`; the one-line message names the file, the key path and the fix.
    """
    where = str(path)
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigError(f"{where}: config file not found; check the path (the official configs are in "
                          f"{CONFIG_DIR})")
    if file.is_dir():
        raise ConfigError(f"{where}: is a folder, not a config file; give the path of a .yaml file")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: is {file.stat().st_size:,} bytes; a config is a few kilobytes (limit "
                          f"{MAX_CONFIG_BYTES:,}): give the YAML config itself")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: is not a UTF-8 text file (byte {e.start}); give a YAML config") from e
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read ({e.strerror or e}); check its permissions") from e
    try:
        # One parse: the node tree is measured (aliases expanded at most max_config_nodes()) before
        # any Python object is built from it, then constructed by the safe loader.
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is not None:
                _expanded_size(root, max_config_nodes(), where)
            lines = _line_map(root, where)  # before construction, which flattens merge keys in place
            config = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        detail = f"{problem} ({context})" if context else str(problem)
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        message = f"{where}: not valid YAML{position}: {detail}; fix the syntax there"
        raise ConfigError(" ".join(message.split())) from e
    if config is None:
        raise ConfigError(f"{where}: the file is empty (or only comments); start from one of the official "
                          f"configs in {CONFIG_DIR}")
    result = _validate(config, where, lines)
    log.debug("loaded config %s", where)
    return result


def find_config_files(directory: Union[str, Path, None] = None) -> list:
    """The YAML configs in `directory` (default: the repository's config/ folder), sorted by name.

    Used to say which official config fits a checkpoint. Returns an empty list when the folder does
    not exist.
    """
    folder = Path(directory) if directory is not None else CONFIG_DIR
    if not folder.is_dir():
        log.debug("config folder %s does not exist", folder)
        return []
    return sorted(p for p in folder.glob("*.yaml") if p.is_file())
