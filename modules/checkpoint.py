"""Checkpoint I/O in the original format.

A checkpoint is a dict with the top-level keys `generator`, `discriminator`, `kp_detector` (module
state dicts), `optimizer_generator`, `optimizer_discriminator`, `optimizer_kp_detector` (Adam state
dicts) and `epoch` (int), as the original Logger writes it. Published files (vox-cpk.pth.tar, ...)
hold at least `generator` and `kp_detector`. TPSMM's hold `inpainting_network`, `dense_motion_network`,
`kp_detector` and, depending on how they were trained, `bg_predictor`, `avd_network` and optimizers.

Loading is always `weights_only=True` (an untrusted checkpoint cannot execute code) and strict: a
module whose keys or shapes differ is reported key by key, together with the official config the
checkpoint fits. Saving is atomic (temp file + rename), so a crash never truncates the last good file.
"""
import logging
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from modules.build import all_model_names, build_models
from modules.errors import CheckpointError, ConfigError
from modules.families import REGISTRY
from modules.fileio import atomic_torch_save
from modules.util import unwrap

log = logging.getLogger(__name__)

OPTIMIZER_NAMES = ('optimizer_generator', 'optimizer_discriminator', 'optimizer_kp_detector')
_SHOWN = 3  # keys listed per category in a one-line message


def read_checkpoint(path, map_location='cpu'):
    """Loads a checkpoint file safely -> dict. Raises CheckpointError for a missing, truncated,
    corrupt or unsafe file, or one that is not a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} not found: check the path')
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL (\S+)', str(e))
        if found or 'Unsupported global' in str(e):
            what = found.group(1) if found else 'a Python object'
            raise CheckpointError(f'{path} holds {what}, not only tensors and plain containers; refusing to '
                                  f'unpickle it (that could execute code): re-save it as plain state dicts') from e
        raise CheckpointError(f'{path} is not a readable PyTorch checkpoint (not a pickle torch can read): '
                              f'the file is corrupt or truncated, download or copy it again') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f'{path} is not a readable PyTorch checkpoint ({first}): '
                              f'the file is corrupt or truncated, download or copy it again') from e
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint dict of '
                              f'models ({_families_models()})')
    return checkpoint


def strip_prefix(state_dict, prefix='module.'):
    """Removes a wrapper prefix present on every key (checkpoints saved from a wrapped module)."""
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


def _shape(value):
    return tuple(value.shape) if hasattr(value, 'shape') else None


def state_dict_mismatch(expected, given):
    """Compares two {key: tensor or shape} maps -> (missing, unexpected, misshaped) key lists;
    misshaped holds (key, given shape, expected shape)."""
    expected = {k: tuple(v) if isinstance(v, (tuple, list, torch.Size)) else _shape(v) for k, v in expected.items()}
    given = {k: tuple(v) if isinstance(v, (tuple, list, torch.Size)) else _shape(v) for k, v in given.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    # A checkpoint written by torch < 1.0 stores spectral norm as weight_orig/weight/weight_u; torch's
    # own load hook converts that into weight_v, so this pair is not a mismatch.
    for key in list(missing):
        if key.endswith('.weight_v'):
            legacy = key[:-len('_v')]
            if legacy in unexpected and legacy + '_orig' in given:
                missing.remove(key)
                unexpected.remove(legacy)
    misshaped = [(k, given[k], expected[k]) for k in expected if k in given and given[k] != expected[k]]
    return missing, unexpected, misshaped


def _listing(keys):
    shown = ', '.join(keys[:_SHOWN])
    return shown + (f' and {len(keys) - _SHOWN} more' if len(keys) > _SHOWN else '')


def describe_mismatch(name, missing, unexpected, misshaped):
    """One-line summary of a state-dict mismatch for module `name` ('' when it fits)."""
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing ({_listing(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected ({_listing(unexpected)})')
    if misshaped:
        shown = [f'{k}: checkpoint {list(g)} vs model {list(e)}' for k, g, e in misshaped]
        parts.append(f'{len(misshaped)} mis-shaped ({_listing(shown)})')
    return f'{name}: ' + ', '.join(parts) if parts else ''


def _module_signature(module):
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def fitting_configs(checkpoint, config_paths=None, names=None):
    """Official configs whose models have exactly the checkpoint's keys and shapes.

    checkpoint: a loaded checkpoint dict. names: the modules to compare (default: the models of either
    family present in the checkpoint). Returns (fits, closest):
    the list of fitting config paths, and the config with the fewest mismatching keys (or None).
    Models are built on the meta device: no memory and no initialisation cost.
    """
    from modules.config import find_config_files, load_config  # only this search reads the config files

    names = names or [n for n in all_model_names() if isinstance(checkpoint.get(n), dict)]
    fits, closest, fewest = [], None, None
    for config_path in (config_paths if config_paths is not None else find_config_files()):
        try:
            model_params = load_config(config_path)['model_params']
            models = build_models(model_params, names=names, device='meta')
        except (ConfigError, TypeError, ValueError) as e:
            log.debug('skipping %s: %s', config_path, e)
            continue
        bad = 0
        for name in names:
            missing, unexpected, misshaped = state_dict_mismatch(_module_signature(models[name]),
                                                                 strip_prefix(checkpoint[name]))
            bad += len(missing) + len(unexpected) + len(misshaped)
        if bad == 0:
            fits.append(Path(config_path))
        elif fewest is None or bad < fewest:
            closest, fewest = Path(config_path), bad
    return fits, closest


def display_path(path):
    """A path relative to the working directory when it is below it (config/vox-256.yaml)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _fit_hint(checkpoint, names):
    fits, closest = fitting_configs(checkpoint, names=names)
    if fits:
        return 'it fits ' + ' / '.join(display_path(p) for p in fits) + ': use that config'
    if closest is not None:
        return f'no official config fits it exactly (closest: {display_path(closest)}); use the config it was trained with'
    return 'no official config fits it; use the config it was trained with'


def _skips_hint(name, missing, unexpected, misshaped):
    """A note when the only differences are the decoder's input channels: FOMM generators with and
    without skips (generator_params.skips) have the same keys and differ exactly there."""
    decoder = all(k == 'final.weight' or (k.startswith('up_blocks.') and k.endswith('.weight')) for k, _, _ in misshaped)
    if name != 'generator' or missing or unexpected or not misshaped or not decoder:
        return ''
    if any(len(g) != 4 or g[:1] + g[2:] != e[:1] + e[2:] for _, g, e in misshaped):
        return ''
    return (' (only the decoder\'s input channels differ: the checkpoint and the config disagree on '
            'generator_params.skips)')


def _families_models():
    """'FOMM: generator, ...; TPSMM / CPABMM: inpainting_network, ...' from the registry."""
    groups = {}
    for family in REGISTRY.values():
        groups.setdefault(family.checkpoint_names, []).append(family.title)
    return '; '.join(f'{" / ".join(titles)}: {", ".join(names)}' for names, titles in groups.items())


def _article(word):
    """'a' or 'an' before an abbreviation read letter by letter (an FOMM, a TPSMM)."""
    return 'an' if word[:1].upper() in 'AEFHILMNORSX' else 'a'


def _family_hint(checkpoint):
    """Which families' checkpoint this looks like (their demo's first network is in it), and the
    configs that fit it."""
    titles = [family.title for family in REGISTRY.values() if family.demo_models[0] in checkpoint]
    if not titles:
        return 'it holds the networks of no known motion family (' + _families_models() + ')'
    first = next(f for f in REGISTRY.values() if f.title == titles[0])
    family = (f'{_article(titles[0])} {" / ".join(titles)} checkpoint ({", ".join(first.demo_models[:2])}, ...): use '
              f'{_article(titles[0])} {" or ".join(titles)} config')
    names = [n for n in all_model_names() if isinstance(checkpoint.get(n), dict)]
    fits, _ = fitting_configs(checkpoint, names=names)
    return family + (' such as ' + ' / '.join(display_path(p) for p in fits) if fits else '')


def load_state(checkpoint, modules, source=None, config_path=None, optional=(), map_location='cpu',
               check_only=False):
    """Loads entries of a checkpoint into modules and optimizers, strictly.

    checkpoint: a path or an already loaded dict. modules: {checkpoint key: nn.Module or
    torch.optim.Optimizer}, e.g. {'generator': g, 'kp_detector': kp}. optional: keys that may be
    absent from the checkpoint (skipped with a log message, as the original Logger tolerates a
    missing discriminator). map_location: where a checkpoint read from a path is loaded (the
    modules' own device is kept either way: values are copied into them). check_only: only check
    that the entries fit (same errors), load nothing. Returns the checkpoint's epoch (or None).
    Raises CheckpointError naming every mismatching key and the official config that fits.
    """
    if not isinstance(checkpoint, dict):
        source = source or str(checkpoint)
        checkpoint = read_checkpoint(checkpoint, map_location=map_location)
    source = source or 'checkpoint'
    against = f' {config_path}' if config_path else ' the model'

    # Check every module before loading any, so a mismatch leaves the models untouched.
    problems, present = [], {}
    for name, target in modules.items():
        if name not in checkpoint or checkpoint[name] is None:
            if name in optional:
                if not check_only:
                    log.warning('%s has no %r entry: %s keeps its current weights/state', source, name, name)
                continue
            held = ', '.join(k for k in checkpoint) or 'nothing'
            raise CheckpointError(f'{source} has no {name!r} entry (it holds: {held}): '
                                  f'it is not a checkpoint for this model; {_family_hint(checkpoint)}')
        state = checkpoint[name]
        if not isinstance(state, dict):
            raise CheckpointError(f'{source}: entry {name!r} is a {type(state).__name__}, not a state dict')
        if isinstance(target, nn.Module):
            state = strip_prefix(state)
            missing, unexpected, misshaped = state_dict_mismatch(unwrap(target).state_dict(), state)
            message = describe_mismatch(name, missing, unexpected, misshaped)
            if message:
                problems.append(message + _skips_hint(name, missing, unexpected, misshaped))
        present[name] = state
    if problems:
        model_names = [n for n in present if isinstance(modules[n], nn.Module) and n in all_model_names()]
        raise CheckpointError(f'{source} does not fit{against}: ' + '; '.join(problems) + '; '
                              + _fit_hint(checkpoint, model_names))

    for name, state in ({} if check_only else present).items():
        target = modules[name]
        try:
            if isinstance(target, nn.Module):
                unwrap(target).load_state_dict(state, strict=True)
            else:
                target.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).splitlines()[0]
            raise CheckpointError(f'{source}: cannot load {name!r} ({first}): the checkpoint does not fit '
                                  f'the model or optimizer built from{against}') from e
    epoch = checkpoint.get('epoch')
    return int(epoch) if isinstance(epoch, (int, float)) or torch.is_tensor(epoch) else None


def save_checkpoint(path, models, epoch, **extra):
    """Writes {name: state_dict() for models} + {'epoch': epoch} + extra, atomically.

    models: {name: nn.Module or Optimizer} (wrappers are unwrapped, so keys carry no 'module.').
    extra: plain data only (numbers, strings, lists, dicts), so the file stays loadable with
    weights_only=True.
    """
    path = Path(path)
    state = {name: unwrap(obj).state_dict() if isinstance(obj, nn.Module) else obj.state_dict()
             for name, obj in models.items()}
    state['epoch'] = epoch
    state.update(extra)
    atomic_torch_save(state, path)
    return path
