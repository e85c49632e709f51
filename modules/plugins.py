"""Plug-ins named on the command line as 'module:attribute' or 'path/to/file.py:attribute'.

Part swap's `--segmenter` and the evaluation's `--extractor` load the user's own networks this way:
the attribute is a callable, or a class, which is instantiated with no arguments.
"""
import importlib
import importlib.util
import sys
from pathlib import Path

from modules.errors import InputError


def load_plugin(spec, flag, example='my_module:MyClass'):
    """'module:callable' or 'path/to/file.py:callable' -> the callable (a class is called with no
    arguments first). flag: the option's name for the messages (e.g. '--segmenter'). Raises
    InputError, one line saying what went wrong."""
    module_name, _, attribute = str(spec).partition(':')
    if not module_name or not attribute:
        raise InputError(f'{flag} {spec}: give module:callable, e.g. {example}')
    try:
        if module_name.endswith('.py'):
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f'{flag} {spec}: {path} not found')
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[path.stem] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f'{flag} {spec}: cannot import {module_name} ({e})') from e
    plugin = getattr(module, attribute, None)
    if plugin is None:
        raise InputError(f'{flag} {spec}: {module_name} has no {attribute!r}')
    if isinstance(plugin, type):
        try:
            plugin = plugin()
        except InputError:
            raise
        except Exception as e:
            raise InputError(f'{flag} {spec}: {attribute}() failed: {type(e).__name__}: {e}') from e
    if not callable(plugin):
        raise InputError(f'{flag} {spec}: {attribute!r} is not callable')
    return plugin
