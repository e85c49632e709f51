"""Size limits on inputs, checked before anything large is allocated.

A small file can decode into a huge array (a 250 KB PNG of 9000x9000 pixels is 243 MB as uint8 and
four times that as float32; a YAML file of nested aliases expands into billions of nodes). Every
reader of the toolkit checks the size it is about to decode against these limits first and refuses
with one line (`LimitError`) naming the limit and how to raise it:

    FOMM_MAX_PIXELS        pixels of one image or one video frame (default 50,000,000: a 48 MP photo,
                           8K video; every model works at its frame_shape anyway)
    FOMM_MAX_CONFIG_NODES  nodes of a YAML config once its aliases are expanded (default 100,000;
                           the official configs have a few hundred)

Both are read from the environment at each check, so `FOMM_MAX_PIXELS=100000000 python demo.py ...`
raises the limit for one run.
"""
import os

from modules.errors import LimitError

MAX_PIXELS_ENV = 'FOMM_MAX_PIXELS'
MAX_PIXELS = 50_000_000
MAX_CONFIG_NODES_ENV = 'FOMM_MAX_CONFIG_NODES'
MAX_CONFIG_NODES = 100_000


def _limit(name, default):
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.replace('_', '').replace(',', ''))
    except ValueError:
        raise LimitError(f'{name}={text!r} is not a whole number') from None
    if value < 1:
        raise LimitError(f'{name}={text!r} must be at least 1')
    return value


def max_pixels():
    """The current pixel limit of one image or video frame."""
    return _limit(MAX_PIXELS_ENV, MAX_PIXELS)


def max_config_nodes():
    """The current limit on a config's node count with its aliases expanded."""
    return _limit(MAX_CONFIG_NODES_ENV, MAX_CONFIG_NODES)


def check_frame_pixels(width, height, what):
    """Raises LimitError if a width x height image (what: 'image x.png', 'the frames of y.mp4') is
    over max_pixels()."""
    limit = max_pixels()
    if int(width) * int(height) > limit:
        raise LimitError(f'{what} is {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of '
                         f'{limit / 1e6:g} megapixels that guards memory: shrink it first, or raise the limit with '
                         f'{MAX_PIXELS_ENV}=<pixels>')


LIMITS_HELP = (f'Input limits (checked before decoding): images and video frames up to {MAX_PIXELS_ENV} pixels '
               f'(default {MAX_PIXELS:,}), configs up to {MAX_CONFIG_NODES_ENV} YAML nodes with their aliases '
               f'expanded (default {MAX_CONFIG_NODES:,}); raise one for a run with the environment, e.g. '
               f'{MAX_PIXELS_ENV}=100000000.')


def open_image(path, what=None):
    """PIL.Image.open(path) after checking its size (read from the header) against max_pixels():
    LimitError before any pixel is decoded. Use as a context manager, like Image.open. what: the
    image's name in the message (default 'image <path>'). OSError for an unreadable file, as Pillow."""
    from PIL import Image
    what = what or f'image {path}'
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as e:  # Pillow's own, far higher limit
        raise LimitError(f'{what}: {e}; raise {MAX_PIXELS_ENV} only if you mean it') from e
    try:
        check_frame_pixels(*image.size, what)
    except LimitError:
        image.close()
        raise
    return image
