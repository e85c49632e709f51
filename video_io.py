"""Streaming video I/O through the ffmpeg binary bundled with imageio-ffmpeg.

`read_video_meta` probes a file without decoding it, `iter_video_frames` decodes frames one at a
time (memory does not depend on the video's length), and `VideoWriter` encodes frames as they come
into a temporary file that replaces the target only when the video is complete, so an interrupted
run never leaves a broken result. `mux_audio` copies the audio track of another file.
"""
import logging
import os
import subprocess
from pathlib import Path

import numpy as np

from modules.errors import InputError
from modules.fileio import atomic_path, temp_path_for

log = logging.getLogger(__name__)


def ffmpeg_exe():
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def read_video_meta(path):
    """{'fps': float, 'size': (width, height), 'nframes': estimated int, 'audio': bool} without
    decoding the video. Raises InputError for a missing or unreadable file."""
    import imageio_ffmpeg
    path = Path(path)
    if not path.is_file():
        raise InputError(f'video {path} not found: check the path')
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise InputError(f'{path}: cannot read it as a video (no video frames, or a format ffmpeg cannot '
                         f'read: {str(e).strip().splitlines()[-1] if str(e) else e!r}); convert it to mp4') from e
    fps = float(meta.get('fps') or 25.0)
    duration = float(meta.get('duration') or 0.0)
    return {'fps': fps, 'size': tuple(meta['size']), 'nframes': int(round(fps * duration)),
            'audio': bool(meta.get('audio_codec'))}


def iter_video_frames(path, start=0):
    """Yields the frames of a video as uint8 (H, W, 3) arrays, decoding one at a time.

    start: index of the first frame to yield (earlier frames are decoded and dropped).
    Raises InputError if the file cannot be decoded.
    """
    import imageio_ffmpeg
    path = Path(path)
    if not path.is_file():
        raise InputError(f'video {path} not found: check the path')
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt='rgb24')
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as e:
        raise InputError(f'{path}: cannot read it as a video; convert it to mp4') from e
    width, height = meta['size']
    try:
        for index, buffer in enumerate(reader):
            if index >= start:
                yield np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
    except RuntimeError as e:
        raise InputError(f'{path}: decoding failed ({str(e).strip().splitlines()[-1]}); the file may be '
                         f'truncated') from e
    finally:
        reader.close()


class _AtomicFrameWriter:
    """Writes uint8 (H, W, 3) frames to a temporary file; `path` appears only when the block ends
    without an error (subclasses open/write/close the actual encoder)."""

    def __init__(self, path, fps):
        self.path = Path(path)
        self.fps = fps
        self.tmp = temp_path_for(self.path)
        self.frames = 0

    def __enter__(self):
        return self

    def write(self, frame):
        self._write(np.ascontiguousarray(frame, dtype=np.uint8))
        self.frames += 1

    def __exit__(self, exc_type, exc, tb):
        try:
            self._close()
            if exc_type is None:
                if self.frames == 0:
                    raise InputError(f'no frame to write to {self.path}: the driving video is empty')
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return False


class VideoWriter(_AtomicFrameWriter):
    """Encodes uint8 (H, W, 3) frames to an H.264 mp4 (or another container by extension) as they come.

        with VideoWriter('result.mp4', fps=25) as writer:
            for frame in frames:
                writer.write(frame)

    The file appears under its name only when the block ends without an error.
    """

    def __init__(self, path, fps, quality=8):
        super().__init__(path, fps)
        self.quality = quality
        self._writer = None

    def _write(self, frame):
        if self._writer is None:
            import imageio_ffmpeg
            height, width = frame.shape[:2]
            # macro_block_size=1 keeps the exact size; yuv420p (for players) needs even sizes, which
            # every model resolution is.
            self._writer = imageio_ffmpeg.write_frames(str(self.tmp), (width, height), fps=self.fps,
                                                       quality=self.quality, macro_block_size=1,
                                                       ffmpeg_log_level='error')
            self._writer.send(None)
        self._writer.send(frame)

    def _close(self):
        if self._writer is not None:
            self._writer.close()


class GifWriter(_AtomicFrameWriter):
    """Looping GIF at `fps` through imageio's Pillow plugin (which holds the frames until the end)."""

    def __init__(self, path, fps):
        super().__init__(path, fps)
        self._file = None

    def _write(self, frame):
        if self._file is None:
            import imageio.v3 as iio
            self._file = iio.imopen(self.tmp, 'w', extension='.gif')
        self._file.write(frame, duration=1000 / self.fps, loop=0)

    def _close(self):
        if self._file is not None:
            self._file.close()


def open_writer(path, fps):
    """GifWriter for a .gif path, else VideoWriter (H.264 in the container its extension names)."""
    return GifWriter(path, fps) if str(path).lower().endswith('.gif') else VideoWriter(path, fps=fps)


def mux_audio(video_path, audio_source, out_path):
    """Writes out_path = the video stream of video_path + the audio of audio_source (if it has any),
    atomically. Returns True if audio was added."""
    if not read_video_meta(audio_source)['audio']:
        log.warning('%s has no audio track: the result is written without audio', audio_source)
        if Path(video_path) != Path(out_path):
            os.replace(video_path, out_path)
        return False
    with atomic_path(out_path) as tmp:
        command = [ffmpeg_exe(), '-y', '-loglevel', 'error', '-i', str(video_path), '-i', str(audio_source),
                   '-map', '0:v:0', '-map', '1:a:0', '-c:v', 'copy', '-c:a', 'aac', '-shortest', str(tmp)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise InputError(f'adding the audio of {audio_source} failed: {result.stderr.strip()[-300:]}')
    return True
