"""Tests of the config package (modules/config/) and of the official configs in config/.

The reference model_params come from tests/data/fomm_keys/<name>.json (state-dict key lists of the
original implementation, built from the original configs); the other expected values were read from
the original repository's config/*.yaml (AliaksandrSiarohin/first-order-model).
"""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from modules import config as cfg
from modules.config import (CHECKPOINT_NAMES, CONFIG_DIR, SCHEMA, find_config_files, iter_schema,
                            load_config, validate_config)
from modules.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parent.parent
KEYS_DIR = REPO / "tests" / "data" / "fomm_keys"
FIXTURE_CONFIG = REPO / "tests" / "data" / "fomm_fixture_small" / "config.yaml"

NAMES = ["vox-256", "vox-adv-256", "taichi-256", "taichi-adv-256", "bair-256", "fashion-256", "mgif-256",
         "nemo-256"]
TPS_NAMES = ["vox-256", "taichi-256", "ted-384", "mgif-256"]  # TPSMM's configs, config/tpsmm-<name>.yaml
TPS_KEYS_DIR = REPO / "tests" / "data" / "tpsmm_keys"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def raw(name="vox-256"):
    """The official config as yaml.safe_load reads it (no defaults filled)."""
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())


def write(tmp_path, data, name="my.yaml"):
    """Write `data` (a dict, or YAML text) to tmp_path/name and return the path."""
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def error_of(func, *args):
    """Run func(*args), expect a ConfigError, check it is one line and return its message."""
    with pytest.raises(ConfigError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def invalid(data, where="<config>"):
    """Message of validate_config(data) (which must fail)."""
    return error_of(validate_config, data, where)


def minimal():
    """The smallest valid config: only required keys (taken from vox-256)."""
    full = raw("vox-256")
    model = full["model_params"]
    return {
        "dataset_params": {"root_dir": "data/somewhere"},
        "model_params": {
            "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
            "kp_detector_params": {k: model["kp_detector_params"][k]
                                   for k in ("temperature", "block_expansion", "max_features", "num_blocks")},
            "generator_params": {k: model["generator_params"][k]
                                 for k in ("block_expansion", "max_features", "num_down_blocks",
                                           "num_bottleneck_blocks")},
            "discriminator_params": {},
        },
        "train_params": {k: full["train_params"][k]
                         for k in ("num_epochs", "lr_generator", "lr_discriminator", "lr_kp_detector",
                                   "batch_size", "scales", "transform_params", "loss_weights")},
    }


def strict_equal(a, b):
    """Equal including key order and exact scalar types (1 is not 1.0, True is not 1)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------------------------------------
# the official configs
# ----------------------------------------------------------------------------------------------

def test_find_config_files_lists_the_official_configs_and_the_bundled_one():
    files = find_config_files()
    official = NAMES + ["cartoon-64", "tpsmm-cartoon-64", "cpabmm-cartoon-64"] + [f"tpsmm-{n}" for n in TPS_NAMES] \
        + [f"cpabmm-{n}" for n in TPS_NAMES]
    assert [p.name for p in files] == sorted(f"{n}.yaml" for n in official)
    assert all(p.parent == CONFIG_DIR for p in files)
    assert sorted(CHECKPOINT_NAMES) == sorted(official)


@pytest.mark.parametrize("name", TPS_NAMES + ["cartoon-64"])
def test_tpsmm_config_loads_with_the_reference_model_params(name):
    text = (CONFIG_DIR / f"tpsmm-{name}.yaml").read_text()
    config = load_config(CONFIG_DIR / f"tpsmm-{name}.yaml")
    assert cfg.motion_model(config["model_params"]) == "tps"
    if name in TPS_NAMES:  # TPSMM's own configs: the published architecture, its checkpoint named
        reference = json.loads((TPS_KEYS_DIR / f"{name}.json").read_text())["model_params"]
        model_params = {k: v for k, v in yaml.safe_load(text)["model_params"].items() if k != "motion_model"}
        assert strict_equal(model_params, reference)
        assert CHECKPOINT_NAMES[f"tpsmm-{name}"] in text.split("\n\n")[0]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*\w+:", line):
            assert "#" in line or lines[i - 1].startswith("#"), f"tpsmm-{name}.yaml line {i + 1} has no comment"


def test_family_is_read_from_the_keys_or_given(tmp_path):
    tps = yaml.safe_load((CONFIG_DIR / "tpsmm-vox-256.yaml").read_text())
    del tps["model_params"]["motion_model"]
    assert cfg.motion_model(load_config(write(tmp_path, tps))["model_params"]) == "tps"
    assert cfg.motion_model(load_config(CONFIG_DIR / "vox-256.yaml")["model_params"]) == "fomm"
    tps["model_params"]["motion_model"] = "fomm"
    with pytest.raises(ConfigError, match="motion_model: is 'fomm' but the keys .* are those of 'tps'"):
        load_config(write(tmp_path, tps))
    tps["model_params"]["motion_model"] = "cpab"  # CPABMM's vox file also says num_tps
    assert cfg.motion_model(load_config(write(tmp_path, tps))["model_params"]) == "cpab"
    del tps["model_params"]["motion_model"]
    tps["model_params"]["dense_motion_params"]["max_iter"] = 100  # CPABMM's key: its family
    assert cfg.motion_model(load_config(write(tmp_path, tps))["model_params"]) == "cpab"
    tps["model_params"]["motion_model"] = "lbs"
    with pytest.raises(ConfigError, match="expected one of"):
        load_config(write(tmp_path, tps))


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["model_params"]["dense_motion_params"].update(scale_factor=0.5), "works only with 0.25"),
    (lambda c: c["model_params"]["generator_params"].update(num_down_blocks=4), "works only with 3"),
    (lambda c: c["train_params"]["loss_weights"].update(warp_los=1), "did you mean 'warp_loss'"),
    (lambda c: c["model_params"]["common_params"].update(num_kp=10), "unknown key 'num_kp'"),
    (lambda c: c["train_params"].pop("dropout_epoch") and c["train_params"].update(dropout_maxp=2),
     "dropout_maxp"),
    (lambda c: c["model_params"]["common_params"].update(multi_mask=False), "warp_loss: is not 0"),
    (lambda c: c["model_params"]["common_params"].update(num_channels=1) or
     c["dataset_params"].update(frame_shape=[256, 256, 1]), "ResNet-18"),
])
def test_tpsmm_config_errors_are_one_line(tmp_path, edit, message):
    config = yaml.safe_load((CONFIG_DIR / "tpsmm-vox-256.yaml").read_text())
    edit(config)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(write(tmp_path, config))
    assert "\n" not in str(error.value)


def test_find_config_files_other_folder(tmp_path):
    (tmp_path / "b.yaml").write_text("x: 1\n")
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_config_files(tmp_path)] == ["a.yaml", "b.yaml"]
    assert find_config_files(tmp_path / "missing") == []


@pytest.mark.parametrize("name", NAMES)
def test_official_config_loads(name):
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    assert isinstance(config, dict)
    assert list(config) == ["dataset_params", "model_params", "train_params", "reconstruction_params",
                            "animate_params", "visualizer_params"]
    # nothing is filled into model_params: the models are built exactly as written
    assert strict_equal(config["model_params"], raw(name)["model_params"])


@pytest.mark.parametrize("name", NAMES)
def test_model_params_equal_the_reference_keys_json(name):
    reference = json.loads((KEYS_DIR / f"{name}.json").read_text())["model_params"]
    assert strict_equal(raw(name)["model_params"], reference)


@pytest.mark.parametrize("name", NAMES)
def test_official_config_text(name):
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    header = text.split("\n\n")[0]
    assert CHECKPOINT_NAMES[name] in header
    # every key line carries a comment (inline, or on the line above for a top-level section)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*\w+:", line):
            assert "#" in line or lines[i - 1].startswith("#"), f"{name}.yaml line {i + 1} has no comment"
    # scales are written as the original writes them: the discriminator key depends on str(scale)
    assert "scales: [1]" in text and "scales: [1, 0.5, 0.25, 0.125]" in text


# Values of the original config files (AliaksandrSiarohin/first-order-model, config/<name>.yaml).
ORIGINAL = {
    #                 root_dir, id_sampling, pairs_list, num_epochs, num_repeats, milestones,
    #                 lr_kp_detector, batch_size, checkpoint_freq, generator_gan
    "vox-256": ("data/vox-png", True, "data/vox256.csv", 100, 75, [60, 90], 2.0e-4, 40, 50, 0),
    "vox-adv-256": ("data/vox-png", True, "data/vox256.csv", 150, 75, [], 2.0e-4, 36, 50, 1),
    "taichi-256": ("data/taichi-png", True, "data/taichi256.csv", 100, 150, [60, 90], 2.0e-4, 30, 50, 0),
    "taichi-adv-256": ("data/taichi-png", True, "data/taichi256.csv", 150, 150, [], 0, 27, 50, 1),
    "bair-256": ("data/bair", False, None, 20, 1, [12, 18], 2.0e-4, 36, 10, 1),
    "fashion-256": ("data/fashion-png", False, None, 100, 50, [60, 90], 2.0e-4, 27, 50, 1),
    "mgif-256": ("data/moving-gif", False, None, 100, 25, [60, 90], 2.0e-4, 36, 100, 1),
    "nemo-256": ("data/nemo-png", False, None, 100, 8, [60, 90], 2.0e-4, 36, 50, 1),
}

ORIGINAL_AUGMENTATION = {
    "fashion-256": {"flip_param": {"horizontal_flip": True, "time_flip": True}, "jitter_param": {"hue": 0.1}},
    "mgif-256": {"flip_param": {"horizontal_flip": True, "time_flip": True}, "crop_param": {"size": [256, 256]},
                 "resize_param": {"ratio": [0.9, 1.1]}, "jitter_param": {"hue": 0.5}},
    "nemo-256": {"flip_param": {"horizontal_flip": True, "time_flip": True}},
}
FULL_JITTER = {"flip_param": {"horizontal_flip": True, "time_flip": True},
               "jitter_param": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.1}}


@pytest.mark.parametrize("name", NAMES)
def test_official_values_match_the_original(name):
    data = raw(name)
    (root_dir, id_sampling, pairs_list, num_epochs, num_repeats, milestones, lr_kp, batch_size,
     checkpoint_freq, generator_gan) = ORIGINAL[name]
    dataset, train = data["dataset_params"], data["train_params"]
    assert dataset["root_dir"] == root_dir
    assert dataset["frame_shape"] == [256, 256, 3]
    assert dataset["id_sampling"] is id_sampling
    assert dataset.get("pairs_list") == pairs_list and (("pairs_list" in dataset) == (pairs_list is not None))
    assert dataset["augmentation_params"] == ORIGINAL_AUGMENTATION.get(name, FULL_JITTER)
    assert strict_equal(train, {
        "num_epochs": num_epochs, "num_repeats": num_repeats, "epoch_milestones": milestones,
        "lr_generator": 2.0e-4, "lr_discriminator": 2.0e-4, "lr_kp_detector": lr_kp, "batch_size": batch_size,
        "scales": [1, 0.5, 0.25, 0.125], "checkpoint_freq": checkpoint_freq,
        "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
        "loss_weights": {"generator_gan": generator_gan, "discriminator_gan": 1,
                         "feature_matching": [10, 10, 10, 10], "perceptual": [10, 10, 10, 10, 10],
                         "equivariance_value": 10, "equivariance_jacobian": 10}})
    assert strict_equal({k: data[k] for k in ("reconstruction_params", "animate_params", "visualizer_params")}, {
        "reconstruction_params": {"num_videos": 1000, "format": ".mp4"},
        "animate_params": {"num_pairs": 50, "format": ".mp4",
                           "normalization_params": {"adapt_movement_scale": False, "use_relative_movement": True,
                                                    "use_relative_jacobian": True}},
        "visualizer_params": {"kp_size": 5, "draw_border": True, "colormap": "gist_rainbow"}})


def test_spot_checks():
    assert load_config(CONFIG_DIR / "vox-256.yaml")["train_params"]["batch_size"] == 40
    assert load_config(CONFIG_DIR / "taichi-256.yaml")["train_params"]["num_repeats"] == 150
    assert load_config(CONFIG_DIR / "taichi-adv-256.yaml")["train_params"]["lr_kp_detector"] == 0
    mgif = load_config(CONFIG_DIR / "mgif-256.yaml")["model_params"]
    assert mgif["kp_detector_params"]["single_jacobian_map"] is True
    assert load_config(CONFIG_DIR / "vox-adv-256.yaml")["model_params"]["discriminator_params"]["use_kp"] is True
    disc_scales = load_config(CONFIG_DIR / "vox-256.yaml")["model_params"]["discriminator_params"]["scales"]
    assert [str(s) for s in disc_scales] == ["1"]  # state-dict key discs.1, not discs.1-0


@pytest.mark.skipif(not FIXTURE_CONFIG.exists(), reason="fixture config not present")
def test_fixture_config_loads():
    config = load_config(FIXTURE_CONFIG)
    assert config["train_params"]["scales"] == [1, 0.5, 0.25]


# ----------------------------------------------------------------------------------------------
# defaults, copies
# ----------------------------------------------------------------------------------------------

def test_defaults_are_filled_outside_model_params():
    data = minimal()
    config = validate_config(data)
    assert config["dataset_params"] == {"root_dir": "data/somewhere", "frame_shape": [256, 256, 3],
                                        "id_sampling": False, "pairs_list": None, "augmentation_params": {}}
    train = config["train_params"]
    assert train["num_repeats"] == 1 and train["epoch_milestones"] == [] and train["checkpoint_freq"] == 100
    assert train["vgg19_weights"] is None
    assert "crop" not in train
    assert config["reconstruction_params"] == {"num_videos": None, "format": ".mp4", "extractor": None}
    assert config["animate_params"] == {"num_pairs": 50, "format": ".mp4", "normalization_params": {
        "adapt_movement_scale": False, "use_relative_movement": False, "use_relative_jacobian": False}}
    assert config["visualizer_params"] == {"kp_size": 5, "draw_border": False, "colormap": "gist_rainbow"}
    # optional constructor arguments are not filled in
    assert strict_equal(config["model_params"], data["model_params"])


def test_partial_sections_get_the_missing_defaults():
    data = minimal()
    data["animate_params"] = {"num_pairs": 3, "normalization_params": {"use_relative_movement": True}}
    data["visualizer_params"] = {"draw_border": True}
    config = validate_config(data)
    assert config["animate_params"] == {"num_pairs": 3, "normalization_params": {
        "use_relative_movement": True, "adapt_movement_scale": False, "use_relative_jacobian": False},
        "format": ".mp4"}
    assert config["visualizer_params"] == {"draw_border": True, "kp_size": 5, "colormap": "gist_rainbow"}


def test_vgg19_weights_is_accepted():
    data = minimal()
    data["train_params"]["vgg19_weights"] = "weights/vgg19-dcbb9e9d.pth"
    assert validate_config(data)["train_params"]["vgg19_weights"] == "weights/vgg19-dcbb9e9d.pth"
    data["train_params"]["vgg19_weights"] = 3
    assert "train_params.vgg19_weights: expected a string or null, got integer 3" in invalid(data)


def test_input_is_not_mutated_and_result_is_a_copy():
    data = raw("mgif-256")
    before = copy.deepcopy(data)
    config = validate_config(data)
    assert data == before
    config["model_params"]["common_params"]["num_kp"] = 99
    config["train_params"]["scales"].append(0.0625)
    config["dataset_params"]["augmentation_params"]["crop_param"]["size"][0] = 1
    assert data == before
    defaults_a = validate_config(minimal())
    defaults_a["visualizer_params"]["kp_size"] = 1
    defaults_a["train_params"]["epoch_milestones"].append(3)
    defaults_b = validate_config(minimal())
    assert defaults_b["visualizer_params"]["kp_size"] == 5 and defaults_b["train_params"]["epoch_milestones"] == []


def test_validation_is_idempotent_and_keeps_int_scalars():
    once = validate_config(raw("vox-256"))
    assert strict_equal(validate_config(once), once)
    assert type(once["train_params"]["scales"][0]) is int
    assert type(once["train_params"]["loss_weights"]["generator_gan"]) is int  # int accepted for a number


def test_tuples_are_accepted_in_memory():
    data = minimal()
    data["dataset_params"]["frame_shape"] = (64, 64, 3)
    assert validate_config(data)["dataset_params"]["frame_shape"] == [64, 64, 3]


@pytest.mark.parametrize("family", ["fomm", "tps", "cpab"])
def test_schema_documents_every_key(family):
    entries = dict(iter_schema(family))
    assert {"fomm": "model_params.kp_detector_params.temperature", "tps": "model_params.common_params.num_tps",
            "cpab": "model_params.common_params.num_cpab"}[family] in entries
    assert "train_params.vgg19_weights" in entries
    for dotted, key in entries.items():
        assert key.doc and "\n" not in key.doc, dotted
        if key.fill and not isinstance(key.type, cfg.Section):
            assert key.default is not cfg.NO_DEFAULT, dotted
    # common_params keys live in common_params only
    for name in (cfg.COMMON_KEYS if family == "fomm" else cfg.TPS_COMMON_KEYS):
        assert [d for d in entries if d.rsplit(".", 1)[-1] == name] == [f"model_params.common_params.{name}"]
    # no model_params key is filled in
    assert not [d for d, key in entries.items() if d.startswith("model_params.") and key.fill]
    if family != "fomm":
        return
    assert list(SCHEMA.keys) == ["dataset_params", "model_params", "train_params", "reconstruction_params",
                                 "animate_params", "visualizer_params", "segmentation_params"]
    assert not SCHEMA.keys["segmentation_params"].fill, "an optional section: FOMM configs do without it"


def test_schema_defaults_of_model_keys_match_the_constructors():
    """The documented (not filled) defaults are those of the original constructors."""
    entries = dict(iter_schema())
    kp, gen, dm, disc = ("model_params.kp_detector_params.", "model_params.generator_params.",
                         "model_params.generator_params.dense_motion_params.", "model_params.discriminator_params.")
    expected = {kp + "scale_factor": 1, kp + "single_jacobian_map": False, kp + "pad": 0,
                gen + "estimate_occlusion_map": False, gen + "dense_motion_params": None,
                dm + "scale_factor": 1, dm + "kp_variance": 0.01,
                disc + "scales": [], disc + "block_expansion": 64, disc + "num_blocks": 4, disc + "max_features": 512,
                disc + "sn": False, disc + "use_kp": False, disc + "kp_variance": 0.01,
                "model_params.common_params.estimate_jacobian": False}
    for dotted, default in expected.items():
        assert entries[dotted].default == default, dotted


# ----------------------------------------------------------------------------------------------
# unknown keys
# ----------------------------------------------------------------------------------------------

def test_typo_names_file_key_path_and_suggestion(tmp_path):
    data = raw("vox-256")
    kp = data["model_params"]["kp_detector_params"]
    data["model_params"]["kp_detector_params"] = {("temprature" if k == "temperature" else k): v
                                                  for k, v in kp.items()}
    path = write(tmp_path, data)
    message = error_of(load_config, path)
    assert message.startswith(f"{path}: model_params.kp_detector_params: unknown key 'temprature' "
                              f"(did you mean 'temperature'?)"), message
    line = next(i + 1 for i, text in enumerate(path.read_text().splitlines()) if "temprature" in text)
    assert message.endswith(f"(line {line})")


def test_typo_in_section_name_and_case():
    data = raw("vox-256")
    data["visualiser_params"] = data.pop("visualizer_params")
    assert invalid(data) == "<config>: unknown key 'visualiser_params' (did you mean 'visualizer_params'?)"
    data = raw("vox-256")
    data["model_params"]["discriminator_params"]["SN"] = data["model_params"]["discriminator_params"].pop("sn")
    assert "model_params.discriminator_params: unknown key 'SN' (did you mean 'sn'?)" in invalid(data, "x.yaml")


def test_common_key_outside_common_params():
    data = raw("vox-256")
    data["model_params"]["kp_detector_params"]["num_kp"] = 10
    message = invalid(data, "my.yaml")
    assert message.startswith("my.yaml: model_params.kp_detector_params: unknown key 'num_kp' "
                              "(it belongs in model_params.common_params only"), message
    data = raw("vox-256")
    data["model_params"]["generator_params"]["dense_motion_params"]["estimate_occlusion_map"] = True
    assert ("model_params.generator_params.dense_motion_params: unknown key 'estimate_occlusion_map' "
            "(it belongs in model_params.generator_params)") in invalid(data)


def test_key_in_the_wrong_section_and_unrelated_key():
    data = raw("vox-256")
    data["model_params"]["generator_params"]["sn"] = True
    assert "unknown key 'sn' (it belongs in model_params.discriminator_params)" in invalid(data)
    data = raw("vox-256")
    data["train_params"]["zzz"] = 1
    assert "train_params: unknown key 'zzz' (allowed here: num_epochs, num_repeats" in invalid(data)


def test_original_custom_data_crop_key_is_accepted():
    data = raw("vox-256")
    data["train_params"]["crop"] = True
    assert validate_config(data)["train_params"]["crop"] is True


# ----------------------------------------------------------------------------------------------
# types and required keys
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value, expected", [
    (("train_params",), "batch_size", "40", "train_params.batch_size: expected an integer, got string '40'; "
                                            "remove the quotes"),
    (("train_params",), "lr_generator", "1e-4", "train_params.lr_generator: expected a number, got string "
                                                "'1e-4'; YAML reads 1e-4 as text"),
    (("train_params",), "lr_generator", "fast", "train_params.lr_generator: expected a number, got string 'fast'"),
    (("model_params", "common_params"), "num_kp", True, "model_params.common_params.num_kp: expected an integer, "
                                                        "got boolean true"),
    (("model_params", "common_params"), "num_kp", 10.0, "model_params.common_params.num_kp: expected an integer, "
                                                        "got number 10.0; write it without a decimal point: 10"),
    (("model_params", "common_params"), "num_kp", None, "model_params.common_params.num_kp: expected an integer, "
                                                        "got null"),
    (("model_params", "discriminator_params"), "sn", 1, "model_params.discriminator_params.sn: expected true or "
                                                        "false, got integer 1"),
    (("model_params", "discriminator_params"), "sn", "True", "expected true or false, got string 'True'; write "
                                                             "true or false without quotes"),
    (("dataset_params",), "root_dir", 5, "dataset_params.root_dir: expected a string, got integer 5"),
    (("dataset_params",), "augmentation_params", None, "dataset_params.augmentation_params: expected a mapping"),
    (("dataset_params",), "frame_shape", 256, "dataset_params.frame_shape: expected a list of 3 integers or null, got "
                                              "integer 256"),
    (("dataset_params",), "frame_shape", [256, 256], "dataset_params.frame_shape: must have exactly 3 items"),
    (("train_params",), "scales", [1, "0.5"], "train_params.scales[1]: expected a number, got string '0.5'"),
    (("train_params",), "epoch_milestones", [60, 90.5], "train_params.epoch_milestones[1]: expected an integer, "
                                                        "got number 90.5"),
    (("train_params", "loss_weights"), "feature_matching", [10, None, 10, 10],
     "train_params.loss_weights.feature_matching[1]: expected a number, got null"),
    (("train_params",), "batch_size", 0, "train_params.batch_size: must be >= 1, got 0"),
    (("train_params",), "lr_generator", -1.0e-4, "train_params.lr_generator: must be >= 0, got -0.0001"),
    (("model_params", "kp_detector_params"), "temperature", 0, "temperature: must be > 0, got 0"),
    (("model_params", "generator_params"), "dense_motion_params", [], "dense_motion_params: expected a mapping of "
                                                                      "keys (key: value lines) or null, got a list"),
])
def test_wrong_types(section, key, value, expected):
    data = raw("vox-256")
    target = data
    for name in section:
        target = target[name]
    target[key] = value
    message = invalid(data, "my.yaml")
    assert message.startswith("my.yaml: "), message
    assert expected in message, message


def test_int_is_accepted_where_a_number_is_expected():
    data = raw("vox-256")
    data["model_params"]["kp_detector_params"]["temperature"] = 1
    data["train_params"]["lr_generator"] = 0
    config = validate_config(data)
    assert config["model_params"]["kp_detector_params"]["temperature"] == 1
    assert type(config["train_params"]["lr_generator"]) is int


def test_null_is_allowed_where_documented():
    data = raw("vox-256")
    data["dataset_params"]["pairs_list"] = None
    data["dataset_params"]["augmentation_params"]["jitter_param"] = None
    data["reconstruction_params"]["num_videos"] = None
    config = validate_config(data)
    assert config["dataset_params"]["pairs_list"] is None
    assert config["dataset_params"]["augmentation_params"]["jitter_param"] is None


def test_augmentation_sections():
    data = raw("vox-256")
    aug = data["dataset_params"]["augmentation_params"]
    aug["rotation_param"] = {"degrees": 10}
    aug["crop_param"] = {"size": 200}
    aug["resize_param"] = {"ratio": [0.9, 1.1]}
    validate_config(data)
    aug["rotation_param"] = {"degrees": [-5, 5]}
    validate_config(data)
    aug["jitter_param"]["hue"] = 0.7
    assert "dataset_params.augmentation_params.jitter_param.hue: must be <= 0.5, got 0.7" in invalid(data)
    aug["jitter_param"]["hue"] = 0.1
    aug["crop_param"] = {}
    assert "dataset_params.augmentation_params.crop_param: required key 'size' is missing" in invalid(data)
    aug["crop_param"] = {"size": [1, 2, 3]}
    assert "crop_param.size: must have exactly 2 items ([height, width]), got 3" in invalid(data)


@pytest.mark.parametrize("path", [
    ("dataset_params", "root_dir"),
    ("model_params", "common_params", "num_kp"),
    ("model_params", "kp_detector_params", "temperature"),
    ("model_params", "generator_params", "dense_motion_params", "num_blocks"),
    ("train_params", "loss_weights", "perceptual"),
    ("train_params", "transform_params", "sigma_affine"),
    ("train_params", "batch_size"),
])
def test_missing_required_key(path):
    data = raw("vox-256")
    target = data
    for name in path[:-1]:
        target = target[name]
    del target[path[-1]]
    message = invalid(data, "my.yaml")
    parent = ".".join(path[:-1])
    assert message.startswith(f"my.yaml: {parent}: required key '{path[-1]}' is missing ("), message
    assert message.endswith("; add it")


def test_missing_required_section(tmp_path):
    data = raw("vox-256")
    del data["model_params"]
    path = write(tmp_path, data)
    assert error_of(load_config, path).startswith(f"{path}: required key 'model_params' is missing")


def test_missing_key_reports_line_of_its_section(tmp_path):
    data = raw("vox-256")
    del data["model_params"]["common_params"]["num_kp"]
    path = write(tmp_path, data)
    line = next(i + 1 for i, text in enumerate(path.read_text().splitlines()) if "common_params:" in text)
    assert error_of(load_config, path).endswith(f"(line {line})")


# ----------------------------------------------------------------------------------------------
# files and YAML
# ----------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = error_of(load_config, path)
    assert message.startswith(f"{path}: config file not found"), message
    assert issubclass(ConfigError, UserError)


def test_folder_instead_of_file(tmp_path):
    assert error_of(load_config, tmp_path).startswith(f"{tmp_path}: is a folder")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path, text)
    assert error_of(load_config, path).startswith(f"{path}: the file is empty")


@pytest.mark.parametrize("text, got", [("- a\n- b\n", "a list"), ("42\n", "integer 42"), ("hello\n", "string")])
def test_top_level_not_a_mapping(tmp_path, text, got):
    path = write(tmp_path, text)
    message = error_of(load_config, path)
    assert message.startswith(f"{path}: the top level must be a mapping of sections"), message
    assert got in message


def test_syntax_error_has_line_number(tmp_path):
    text = (CONFIG_DIR / "vox-256.yaml").read_text()
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("  batch_size:"))
    lines[index] = "  batch_size: [40"
    path = write(tmp_path, "\n".join(lines) + "\n")
    message = error_of(load_config, path)
    assert message.startswith(f"{path}: not valid YAML at line "), message
    reported = int(re.search(r"at line (\d+)", message).group(1))
    assert index + 1 <= reported <= index + 2
    assert message.endswith("fix the syntax there")


def test_tab_indentation(tmp_path):
    path = write(tmp_path, "train_params:\n\tbatch_size: 4\n")
    message = error_of(load_config, path)
    assert message.startswith(f"{path}: not valid YAML at line 2, column 1"), message


def test_duplicate_key(tmp_path):
    text = (CONFIG_DIR / "vox-256.yaml").read_text().replace("  batch_size: 40", "  batch_size: 40\n  batch_size: 4")
    path = write(tmp_path, text)
    lines = text.splitlines()
    first = next(i + 1 for i, line in enumerate(lines) if line.startswith("  batch_size:"))
    assert error_of(load_config, path) == (f"{path}: train_params: key 'batch_size' is given twice "
                                           f"(lines {first} and {first + 1}); keep only one")


def test_unsafe_yaml_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    assert error_of(load_config, path).startswith(f"{path}: not valid YAML")
    assert not marker.exists()


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    assert error_of(load_config, path).startswith(f"{path}: is not a UTF-8 text file")


def test_load_accepts_str_paths():
    assert load_config(str(CONFIG_DIR / "bair-256.yaml"))["dataset_params"]["root_dir"] == "data/bair"


def test_validate_config_top_level():
    assert invalid([1, 2]).startswith("<config>: the top level must be a mapping")
    assert invalid(None).startswith("<config>: the top level must be a mapping")
    assert invalid({1: 2}).startswith("<config>: key 1 is not a name")


# ----------------------------------------------------------------------------------------------
# cross-section rules
# ----------------------------------------------------------------------------------------------

def test_perceptual_needs_five_weights():
    data = raw("vox-256")
    data["train_params"]["loss_weights"]["perceptual"] = [10, 10, 10, 10]
    message = invalid(data, "my.yaml")
    assert message.startswith("my.yaml: train_params.loss_weights.perceptual: must have exactly 5 items "
                              "(one weight per VGG19 feature level"), message
    assert message.endswith("got 4")


def test_discriminator_scale_missing_from_train_scales():
    data = raw("vox-256")
    data["model_params"]["discriminator_params"]["scales"] = [1, 0.0625]
    message = invalid(data, "my.yaml")
    assert message.startswith("my.yaml: model_params.discriminator_params.scales[1]: scale 0.0625 is missing "
                              "from train_params.scales [1, 0.5, 0.25, 0.125]"), message
    assert "'prediction_0.0625'" in message


def test_discriminator_scale_written_differently():
    data = raw("vox-256")
    data["model_params"]["discriminator_params"]["scales"] = [1.0]
    message = invalid(data)
    assert "model_params.discriminator_params.scales[0]: scale 1.0 equals 1 of train_params.scales only " \
           "numerically" in message
    assert "'prediction_1.0' vs 'prediction_1'" in message
    data["train_params"]["scales"] = [1.0, 0.5]
    validate_config(data)  # consistent spelling is fine


def test_multi_scale_discriminator_is_fine():
    data = raw("vox-256")
    data["model_params"]["discriminator_params"]["scales"] = [1, 0.5]
    assert validate_config(data)["model_params"]["discriminator_params"]["scales"] == [1, 0.5]


def test_duplicate_scale():
    data = raw("vox-256")
    data["train_params"]["scales"] = [1, 0.5, 0.5]
    assert "train_params.scales[2]: 0.5 is listed twice" in invalid(data)


def test_frame_shape_channels_must_match_num_channels():
    data = raw("vox-256")
    data["dataset_params"]["frame_shape"] = [256, 256, 1]
    message = invalid(data, "my.yaml")
    assert message.startswith("my.yaml: dataset_params.frame_shape: "), message
    assert "model_params.common_params.num_channels is 3" in message
    data["model_params"]["common_params"]["num_channels"] = 1
    validate_config(data)


def test_num_kp_at_least_one():
    data = raw("vox-256")
    data["model_params"]["common_params"]["num_kp"] = 0
    assert invalid(data) == "<config>: model_params.common_params.num_kp: must be >= 1, got 0"


@pytest.mark.parametrize("value, problem", [
    (0.3, "must be 1/n for a whole number n"),
    (0.4, "must be 1/n for a whole number n"),
    (0, "must be in (0, 1], got 0"),
    (1.5, "must be in (0, 1], got 1.5"),
    (-0.25, "must be in (0, 1]"),
])
def test_scale_factor_rule(value, problem):
    for section in (("kp_detector_params",), ("generator_params", "dense_motion_params")):
        data = raw("vox-256")
        target = data["model_params"]
        for name in section:
            target = target[name]
        target["scale_factor"] = value
        message = invalid(data)
        assert f"model_params.{'.'.join(section)}.scale_factor: {problem}" in message, message


@pytest.mark.parametrize("value", [1, 0.5, 0.25, 0.125, 1 / 3, 0.0625])
def test_scale_factor_accepted(value):
    data = raw("vox-256")
    data["model_params"]["kp_detector_params"]["scale_factor"] = value
    validate_config(data)


@pytest.mark.parametrize("scales, problem", [
    ([1, 0.3], "train_params.scales[1]: must be 1/n"),
    ([2, 1], "train_params.scales[0]: must be in (0, 1], got 2"),
    ([], "train_params.scales: must have at least 1 item(s)"),
])
def test_train_scales_rule(scales, problem):
    data = raw("vox-256")
    data["train_params"]["scales"] = scales
    assert problem in invalid(data)


def test_feature_matching_has_one_weight_per_discriminator_block():
    data = raw("vox-256")
    data["train_params"]["loss_weights"]["feature_matching"] = [10, 10, 10]
    message = invalid(data)
    assert message.startswith("<config>: train_params.loss_weights.feature_matching: has 3 weight(s) but the "
                              "discriminator has 4 blocks"), message
    data["model_params"]["discriminator_params"]["num_blocks"] = 3
    validate_config(data)


def test_the_no_jacobian_ablation_loads_with_a_warning(caplog):
    """vox-256.yaml with the jacobians switched off (the paper's ablation) loads in every mode: the
    relative jacobian is skipped with a warning; equivariance_jacobian is refused where it is read,
    by the training model (tests/test_contracts.py)."""
    data = raw("vox-256")
    data["model_params"]["common_params"]["estimate_jacobian"] = False
    with caplog.at_level("WARNING", logger="modules.config"):
        config = validate_config(data, "ablation.yaml")
    assert config["animate_params"]["normalization_params"]["use_relative_jacobian"] is True
    assert any("relative jacobian is skipped" in r.getMessage() for r in caplog.records)
    data["animate_params"]["normalization_params"]["use_relative_jacobian"] = False
    validate_config(data)


def test_tps_parameters_go_together():
    data = raw("vox-256")
    del data["train_params"]["transform_params"]["points_tps"]
    assert ("train_params.transform_params: 'sigma_tps' is set but 'points_tps' is not" in invalid(data))
    del data["train_params"]["transform_params"]["sigma_tps"]
    validate_config(data)  # affine-only warp


def test_format_needs_a_dot():
    data = raw("vox-256")
    data["animate_params"]["format"] = "gif"
    assert "animate_params.format: must be a file extension with its leading dot" in invalid(data)
