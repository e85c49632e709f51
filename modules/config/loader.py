"""Reading and checking the YAML configs of every motion-model family.

`load_config` reads a file with `yaml.safe_load` semantics, tells the family from its model_params
(`motion_model`), checks the config against that family's schema (unknown keys, wrong types, missing
required keys, then the family's cross-section rules) and fills the defaults marked as filled. Every
problem raises a `ConfigError` whose one-line message names the file, the dotted key path and what to
do, e.g.::

    my.yaml: model_params.kp_detector_params: unknown key 'temprature' (did you mean 'temperature'?) (line 24)

A family's schema and rules are looked up in one place, `family_schema`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import yaml

from modules.config.types import (Invalid, Key, KeyPath, Section, describe_value, documented_default,
                                  index_schemas, log, walk_keys)
from modules.errors import ConfigError
from modules.families import REGISTRY, family_named, family_of
from modules.limits import MAX_CONFIG_NODES_ENV, max_config_nodes

__all__ = ["CHECKPOINT_NAMES", "CONFIG_DIR", "FAMILY_KEYS", "MAX_CONFIG_BYTES", "MOTION_MODELS", "SCHEMAS",
           "family_schema", "find_config_files", "iter_schema", "load_config", "motion_model", "validate_config"]

MAX_CONFIG_BYTES = 1 << 20  # the official configs are 2-6 KB

#: Folder of the official configs (the repository's ``config/``).
CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "config"

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

# ----------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------

#: The common_params keys that may identify each family (CPABMM's vox config names its K num_tps, its
#: other configs num_cpab), as registered (modules.families).
FAMILY_KEYS = {family.name: family.identifying_keys for family in REGISTRY.values()}


class FamilySchema(NamedTuple):
    """What the loader needs of a family: its schema and its cross-section rules."""

    schema: Section
    check: Callable[..., None]  # check(validated config, where) raises types.Invalid


def family_schema(family: str) -> FamilySchema:
    """(schema, check) of the family named `family`, from the family registry (modules.families): the
    one place the loader looks a family's schema and rules up."""
    entry = family_named(family)
    return FamilySchema(entry.schema, entry.check)


#: The registered families' names (model_params.motion_model values) and their schemas, as at import
#: (family_schema and motion_model ask the registry itself, so a family registered later works too).
MOTION_MODELS = tuple(REGISTRY)
SCHEMAS = {family: family_schema(family).schema for family in REGISTRY}

index_schemas(SCHEMAS.values())  # "unknown key 'x' (it belongs in ...)" knows every family's sections


def motion_model(model_params: Mapping) -> str:
    """The name of a config's motion family (modules.families.family_of): `motion_model` if it names a
    registered family, else the family its keys identify ('cpab' when common_params has num_cpab or
    dense_motion_params has max_iter, 'tps' when common_params has num_tps, else 'fomm'), so the
    originals' configs of every family work as they are. (An unknown name is reported by validation.)"""
    return family_of(model_params).name


def iter_schema(family: str = "fomm") -> Iterator[Tuple[str, Key]]:
    """Yield (dotted key path, Key) for every key of a family's schema, depth first, in schema order."""
    yield from walk_keys(family_schema(family).schema)


# ----------------------------------------------------------------------------------------------
# Validation
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


def _error(where: str, problem: Invalid, lines: Optional[Mapping[KeyPath, int]]) -> ConfigError:
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


def _validate(config: Any, where: str, lines: Optional[Mapping[KeyPath, int]]) -> dict:
    """Schema check, defaults and cross-section rules; raises ConfigError."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping of sections "
                          f"({', '.join(family_schema('fomm').schema.keys)}), got {describe_value(config)}")
    family = motion_model(config.get("model_params"))
    model = config.get("model_params")
    named = model.get("motion_model") if isinstance(model, Mapping) else None
    if named is not None and named not in REGISTRY:
        raise _error(where, Invalid(("model_params", "motion_model"),
                                    f"expected one of {list(REGISTRY)}, got {describe_value(named)}"), lines)
    common = model.get("common_params") if isinstance(model, Mapping) else None
    if isinstance(common, Mapping) and named is not None:
        by_keys = [entry for entry in REGISTRY.values() if any(key in common for key in entry.identifying_keys)]
        if by_keys and family not in [entry.name for entry in by_keys]:
            raise _error(where, Invalid(("model_params", "motion_model"),
                                        f"is {family!r} but the keys of this model_params are those of "
                                        f"{by_keys[0].name!r} (common_params.{by_keys[0].identifying_keys[0]}); fix "
                                        f"the keys or the family"), lines)
    schema, check = family_schema(family)
    try:
        result = schema.check(config, ())
        dataset = result.get("dataset_params")
        if isinstance(dataset, dict) and dataset.get("frame_shape", ...) is None:
            dataset["frame_shape"] = documented_default(schema.keys["dataset_params"].type, "frame_shape")
            log.info("%s: dataset_params.frame_shape is null: frames are %s (set it for other sizes)", where,
                     dataset["frame_shape"])
        check(result, where)
    except Invalid as problem:
        raise _error(where, problem, lines) from None
    return result


def validate_config(config: Mapping, where: Union[str, Path] = "<config>") -> dict:
    """Check an in-memory config against its family's schema (`SCHEMA` for FOMM) and return a new dict
    with the defaults filled.

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


# ----------------------------------------------------------------------------------------------
# Reading a file
# ----------------------------------------------------------------------------------------------

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

    def walk(node: yaml.Node, path: KeyPath, seen: frozenset) -> None:
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
            its family's schema; the one-line message names the file, the key path and the fix.
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
