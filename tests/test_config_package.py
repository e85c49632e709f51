"""modules/config/ split by job: the type system, one schema module per family, the loader; the
package re-exports the public names lazily, so a schema module can be imported without the loader."""

import ast
import subprocess
import sys

import pytest

from modules.families import REGISTRY

import modules.config as cfg
from modules.config import cpabmm, fomm, loader, tpsmm, types
from tests.conftest import REPO

# every public name of the single-module modules/config.py, which callers may import
PUBLIC = ["CHECKPOINT_NAMES", "COMMON_KEYS", "CONFIG_DIR", "ConfigError", "FAMILY_KEYS", "Key", "MAX_CONFIG_BYTES",
          "MOTION_MODELS", "NO_DEFAULT", "NUM_VGG_LEVELS", "SCHEMA", "SCHEMAS", "Section", "TPS_COMMON_KEYS",
          "TPS_SCHEMA", "CPAB_SCHEMA", "find_config_files", "iter_schema", "load_config",
          "motion_model", "validate_config", "Int", "Float", "Bool", "Str", "Null", "ListOf", "OneOf"]


def modules_after(code):
    """The modules.config* and yaml modules loaded by a fresh interpreter after running `code`."""
    report = "import sys\nprint(' '.join(m for m in sys.modules if m.startswith(('modules.config', 'yaml'))))"
    out = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_type_system_and_the_fomm_schema_load_no_yaml_code():
    loaded = modules_after("import modules.config.types, modules.config.fomm")
    assert loaded == {"modules.config", "modules.config.types", "modules.config.fomm"}


def test_the_schema_modules_do_not_import_the_loader():
    loaded = modules_after("import modules.config.tpsmm, modules.config.cpabmm")
    assert loaded == {"modules.config", "modules.config.types", "modules.config.fomm", "modules.config.tpsmm",
                      "modules.config.cpabmm"}
    assert modules_after("import modules.config") == {"modules.config"}
    assert "modules.config.loader" in modules_after("from modules.config import load_config")


def test_types_imports_no_other_config_module():
    tree = ast.parse((REPO / "modules" / "config" / "types.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name and name.startswith("modules")}, imported
    assert "yaml" not in imported


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_importable_from_the_package(name):
    value = getattr(cfg, name)
    assert name in cfg.__all__ and name in dir(cfg)
    home = next(module for module in (types, fomm, tpsmm, cpabmm, loader) if hasattr(module, name))
    assert value is getattr(home, name)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'load_confg'"):
        cfg.load_confg  # noqa: B018
    with pytest.raises(ImportError):
        from modules.config import load_confg  # noqa: F401


def test_each_family_module_has_the_same_interface():
    """What a family registry needs of each schema module: SCHEMA, check, COMMON_KEYS."""
    for module, schema, common in ((fomm, cfg.SCHEMA, cfg.COMMON_KEYS), (tpsmm, cfg.TPS_SCHEMA, cfg.TPS_COMMON_KEYS),
                                   (cpabmm, cfg.CPAB_SCHEMA, ("num_cpab",) + cfg.TPS_COMMON_KEYS)):
        assert module.SCHEMA is schema and module.COMMON_KEYS == common and callable(module.check)
    assert {name: family.schema for name, family in REGISTRY.items()} == cfg.SCHEMAS
    assert list(cfg.SCHEMAS) == list(cfg.MOTION_MODELS)


def test_the_loader_looks_families_up_in_one_place(monkeypatch):
    """validate_config and iter_schema get a family's schema and rules from family_schema only, so a
    registry can take over there."""
    asked, checked = [], []
    original = loader.family_schema

    def spy(family):
        asked.append(family)
        schema, check = original(family)
        return loader.FamilySchema(schema, lambda config, where: checked.append(where) or check(config, where))

    monkeypatch.setattr(loader, "family_schema", spy)
    cfg.load_config(cfg.CONFIG_DIR / "tpsmm-vox-256.yaml")
    cfg.validate_config({**cfg.load_config(cfg.CONFIG_DIR / "tpsmm-vox-256.yaml"), "model_params": {
        **cfg.load_config(cfg.CONFIG_DIR / "tpsmm-vox-256.yaml")["model_params"], "motion_model": "cpab"}}, "c.yaml")
    assert asked == ["tps", "tps", "tps", "cpab"]
    assert checked == [str(cfg.CONFIG_DIR / "tpsmm-vox-256.yaml")] * 3 + ["c.yaml"]
    dict(cfg.iter_schema("fomm"))
    assert asked[-1] == "fomm"


UNKNOWN_KEYS = """
from modules.config import CONFIG_DIR, ConfigError, load_config, validate_config
for section, key in (('train_params', 'warp_loss'), ('model_params.kp_detector_params', 'num_tps'),
                     ('model_params.generator_params', 'pose_bottle_size')):
    data = load_config(CONFIG_DIR / 'vox-256.yaml')
    node = data
    for name in section.split('.'):
        node = node[name]
    node[key] = 1
    try:
        validate_config(data)
    except ConfigError as e:
        print(e)
"""


def test_unknown_key_hints_know_every_family():
    """A key of another family's section is placed, whichever schema module was imported first."""
    out = subprocess.run([sys.executable, "-c", UNKNOWN_KEYS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == [
        "<config>: train_params: unknown key 'warp_loss' (it belongs in train_params.loss_weights); move it there",
        "<config>: model_params.kp_detector_params: unknown key 'num_tps' (it belongs in model_params.common_params "
        "only, which is passed to every model); move it there",
        "<config>: model_params.generator_params: unknown key 'pose_bottle_size' (it belongs in "
        "model_params.avd_network_params); move it there"], out.stderr
    code = "import modules.config.cpabmm, modules.config.tpsmm\n" + UNKNOWN_KEYS
    first = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.stdout == out.stdout, first.stderr
