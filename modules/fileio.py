"""Atomic file writes: a file the user keeps (checkpoint, video, PNG, CSV) is written under a
temporary name in the same folder and renamed onto its name only when complete, so a crash or a
full disk never leaves a half-written file where the previous good one was."""
import contextlib
import os
from pathlib import Path


def temp_path_for(path):
    """A hidden temporary name beside `path`, with the same extension (ffmpeg and imageio pick the
    format from it): result.mp4 -> .result.<pid>.tmp.mp4"""
    path = Path(path)
    return path.with_name(f'.{path.stem}.{os.getpid()}.tmp{path.suffix}')


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write; it replaces `path` when the block ends without an error,
    and is removed otherwise."""
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
