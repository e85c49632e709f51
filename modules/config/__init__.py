"""Loading and checking the YAML configs of the First Order Motion Model and its TPSMM and CPABMM
families.

The package is split by job:

    types.py    the small type system (Key, Section, NO_DEFAULT, the value types, the walk of a
                section, the unknown-key hints); imports no other config module and no YAML code
    fomm.py     FOMM's schema (SCHEMA), its cross-section rules (check) and the sections every family
                shares (dataset, reconstruction and animation modes, visualizer)
    tpsmm.py    TPSMM's schema (TPS_SCHEMA, also .SCHEMA) and rules (check)
    cpabmm.py   CPABMM's schema (CPAB_SCHEMA, also .SCHEMA) and rules (check), TPSMM's extended
    loader.py   reading a file (size and node limits, line numbers, yaml.safe_load semantics), telling
                the family (motion_model), family_schema, validate_config, load_config,
                find_config_files, iter_schema, CHECKPOINT_NAMES, CONFIG_DIR
    comments.py the comments of the YAML files in config/, written and checked from the schemas' help

This file imports none of them: every public name is looked up on first use (PEP 562), so
``from modules.config import load_config`` works as it always has, while importing a schema module
(``import modules.config.tpsmm``) does not import the loader, and the loader may in turn consult a
registry that imports the schema modules.
"""

import importlib

#: public name -> the module of this package that defines it
_HOMES = {
    **dict.fromkeys(("Key", "Section", "NO_DEFAULT", "Int", "Float", "Bool", "Str", "Null",
                     "ListOf", "OneOf"), "types"),
    **dict.fromkeys(("SCHEMA", "COMMON_KEYS", "NUM_VGG_LEVELS"), "fomm"),
    **dict.fromkeys(("TPS_SCHEMA", "TPS_COMMON_KEYS"), "tpsmm"),
    **dict.fromkeys(("CPAB_SCHEMA", "CPAB_COMMON_KEYS"), "cpabmm"),
    **dict.fromkeys(("load_config", "validate_config", "iter_schema", "find_config_files", "motion_model",
                     "family_schema", "MOTION_MODELS", "SCHEMAS", "CHECKPOINT_NAMES", "CONFIG_DIR", "FAMILY_KEYS",
                     "MAX_CONFIG_BYTES", "ConfigError"), "loader"),
}
_SUBMODULES = ("types", "fomm", "tpsmm", "cpabmm", "loader", "comments")

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
        globals()[name] = value  # looked up once
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
