"""Streaming video I/O through the ffmpeg binary bundled with imageio-ffmpeg.

`read_video_meta` probes a file's header without decoding it, `iter_video_frames` decodes frames one
at a time (memory does not depend on the video's length; frames over the pixel limit of
modules/limits.py are refused before any is decoded), and `VideoWriter` encodes frames as they
come into a temporary file. The file replaces the target only when ffmpeg exited with status 0 and
the written file holds every frame, so a full disk, a file-size limit, a killed encoder or an
interrupted run never leaves a broken result or replaces a good one. `mux_audio` copies the audio
track of another file.
"""
import contextlib
import logging
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from modules.errors import InputError, OutputError, cannot_write
from modules.fileio import atomic_path, check_written, make_folder, os_error_cause, temp_path_for
from modules.limits import check_frame_pixels

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = ('.mp4', '.mov', '.mkv', '.avi')  # containers the H.264 writer fills
RESULT_SUFFIXES = VIDEO_SUFFIXES + ('.gif',)  # open_writer: a GIF for .gif


def ffmpeg_exe():
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _last_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else 'no message'


def read_video_meta(path):
    """{'fps': float, 'size': (width, height), 'nframes': estimated int, 'audio': bool} from the
    file's header (ffmpeg reads it; nothing is decoded). Raises InputError for a missing or
    unreadable file."""
    from imageio_ffmpeg._parsing import parse_ffmpeg_header
    path = Path(path)
    if not path.is_file():
        raise InputError(f'video {path} not found: check the path')
    result = subprocess.run([ffmpeg_exe(), '-nostdin', '-i', str(path)], capture_output=True, text=True,
                            errors='replace')
    header = result.stderr
    if ' Video: ' not in header:
        reason = 'it has no video stream' if 'Input #0' in header else _last_line(header)
        raise InputError(f'{path}: cannot read it as a video ({reason}); convert it to mp4')
    try:
        meta = parse_ffmpeg_header(header)
    except (IndexError, ValueError, AttributeError) as e:
        raise InputError(f'{path}: cannot read the video header ({e}); convert it to mp4') from e
    width, height = meta['size']
    rotation = re.search(r'rotation of (-?[0-9.]+) degrees', header)
    angle = abs(round(float(rotation.group(1)))) % 180 if rotation else meta.get('rotate', 0) % 180
    if angle == 90:  # ffmpeg turns such videos upright while decoding
        width, height = height, width
    fps = float(meta.get('fps') or 25.0)
    duration = float(meta.get('duration') or 0.0)
    return {'fps': fps, 'size': (width, height), 'nframes': int(round(fps * duration)),
            'audio': bool(meta.get('audio_codec'))}


def decode_frames(path, seek=0.0, count=None):
    """The toolkit's one video decoder: yields the frames of a video as uint8 (H, W, 3) arrays,
    decoded by ffmpeg one at a time, from `seek` seconds on (ffmpeg's input seeking) and at most
    `count` of them. The frame size is checked against modules.limits before the first frame.
    Raises InputError if ffmpeg cannot decode the file, LimitError for frames too large."""
    import imageio_ffmpeg
    input_params = ['-ss', f'{seek:.6f}'] if seek > 0 else []
    output_params = ['-frames:v', str(count)] if count is not None else []
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt='rgb24', input_params=input_params,
                                        output_params=output_params)
    try:
        try:
            meta = next(reader)
        except (RuntimeError, OSError, ValueError, KeyError, StopIteration) as e:
            raise InputError(f'{path}: cannot read it as a video ({_last_line(e)}); convert it to mp4') from e
        width, height = meta['size']
        check_frame_pixels(width, height, f'each frame of {path}')
        try:
            for buffer in reader:
                yield np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
        except (RuntimeError, ValueError, OSError, KeyError) as e:
            raise InputError(f'{path}: decoding failed ({_last_line(e)}); the file may be truncated') from e
    finally:
        reader.close()


def iter_video_frames(path, start=0):
    """Yields the frames of a video as uint8 (H, W, 3) arrays, decoding one at a time (decode_frames).

    start: index of the first frame to yield (earlier frames are decoded and dropped).
    Raises InputError if the file cannot be decoded, LimitError (before decoding) if its frames
    are larger than modules.limits allows.
    """
    path = Path(path)
    check_frame_pixels(*read_video_meta(path)['size'], f'each frame of {path}')
    for index, frame in enumerate(decode_frames(path)):
        if index >= start:
            yield frame


def count_video_frames(path):
    """The number of video packets (= frames) of a file, counted by ffmpeg without decoding; None if
    ffmpeg cannot read it."""
    result = subprocess.run([ffmpeg_exe(), '-nostdin', '-v', 'error', '-i', str(path), '-map', '0:v:0', '-c', 'copy',
                             '-f', 'null', '-', '-progress', 'pipe:1'], capture_output=True, text=True,
                            errors='replace')
    counts = re.findall(r'^frame=(\d+)$', result.stdout, flags=re.MULTILINE)
    if result.returncode != 0 or not counts:
        return None
    return int(counts[-1])


def _signal_name(returncode):
    with contextlib.suppress(ValueError):
        return signal.Signals(-returncode).name
    return f'signal {-returncode}'


def ffmpeg_failure(returncode, stderr_text):
    """Why an ffmpeg run failed, in a few words."""
    if returncode is not None and returncode < 0:
        if -returncode == signal.SIGXFSZ:
            return 'the file-size limit was reached (ulimit -f); ffmpeg was stopped'
        return f'ffmpeg was killed by {_signal_name(returncode)}'
    text = stderr_text.lower()
    if 'no space left' in text:
        return 'the disk is full'
    if 'file too large' in text:
        return 'the file-size limit was reached (ulimit -f)'
    if 'permission denied' in text or 'read-only' in text:
        return 'permission denied'
    return f'ffmpeg exited with status {returncode}: {_last_line(stderr_text)}'


class _AtomicFrameWriter:
    """Writes uint8 (H, W, 3) frames to a temporary file; `path` appears only when the block ends
    without an error and the written file checks out (subclasses open/write/close the encoder).

    Used as a context manager, or in two steps by a caller that writes several files together:
    `finish()` (close the encoder, check the file: raises OutputError) for each, then `commit()`
    (rename onto the target) for each, or `abort()` on any error.
    """

    def __init__(self, path, fps):
        self.path = Path(path)
        self.fps = fps
        self.tmp = temp_path_for(self.path)
        self.frames = 0

    def __enter__(self):
        return self

    def write(self, frame):
        if self.frames == 0:
            make_folder(self.path.parent, str(self.path))  # created now, when there is something to write
        try:
            self._write(np.ascontiguousarray(frame, dtype=np.uint8))
        except OSError as e:
            self.abort()
            raise cannot_write(self.path, self._failure(e)) from e
        self.frames += 1

    def _failure(self, error):
        return os_error_cause(error)

    def finish(self):
        """Closes the encoder and checks the temporary file; raises OutputError (and removes it) if
        anything went wrong."""
        try:
            try:
                self._close()
            except OSError as e:
                raise cannot_write(self.path, self._failure(e)) from e
            if self.frames == 0:
                raise InputError(f'no frame to write to {self.path}: the driving video is empty')
            check_written(self.tmp, self.path, self._verify)
        except BaseException:
            self.abort()
            raise

    def commit(self):
        """Renames the finished temporary file onto the target."""
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise cannot_write(self.path, e) from e

    def abort(self):
        """Stops the encoder and removes the temporary file; the target is left as it was."""
        with contextlib.suppress(Exception):
            self._kill()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
            return False
        self.finish()
        self.commit()
        return False

    def _kill(self):
        pass

    def _verify(self, tmp):
        return None


class VideoWriter(_AtomicFrameWriter):
    """Encodes uint8 (H, W, 3) frames to H.264 in the container its extension names (mp4, mov,
    mkv, avi) as they come, with ffmpeg reading raw frames from a pipe.

        with VideoWriter('result.mp4', fps=25) as writer:
            for frame in frames:
                writer.write(frame)

    The file appears under its name only when the block ends without an error, ffmpeg exited with
    status 0 and the written file holds every frame written.
    """

    def __init__(self, path, fps, quality=8):
        super().__init__(path, fps)
        self.crf = int((1 - quality / 10) * 51)  # imageio-ffmpeg's quality scale: 8 -> crf 10
        self._process = None
        self._stderr = None
        self._size = None

    def _write(self, frame):
        if self._process is None:
            height, width = frame.shape[:2]
            self._size = (width, height)
            # yuv420p (for players) needs even sizes, which every model resolution is; the exact size
            # is kept (no scaling to a macro-block multiple).
            command = [ffmpeg_exe(), '-y', '-nostdin', '-loglevel', 'error', '-f', 'rawvideo', '-vcodec', 'rawvideo',
                       '-s', f'{width}x{height}', '-pix_fmt', 'rgb24', '-r', self._rate(), '-i', '-', '-an',
                       '-vcodec', 'libx264', '-pix_fmt', 'yuv420p', '-crf', str(self.crf), str(self.tmp)]
            self._stderr = tempfile.TemporaryFile()
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=self._stderr)
        if frame.shape[1::-1] != self._size:
            raise ValueError(f'frame of {frame.shape[1]}x{frame.shape[0]} for a {self._size[0]}x{self._size[1]} '
                             f'video')
        self._process.stdin.write(memoryview(frame).cast('B'))

    def _rate(self):
        # a rational, so that 30000/1001 is not rounded (as imageio-ffmpeg passes it)
        from fractions import Fraction
        return str(Fraction(self.fps).limit_denominator())

    def _stderr_text(self):
        if self._stderr is None:
            return ''
        self._stderr.seek(0)
        return self._stderr.read().decode(errors='replace')

    def _failure(self, error):
        # A broken pipe means ffmpeg ended: its exit status and messages tell why.
        if self._process is not None and isinstance(error, BrokenPipeError):
            return ffmpeg_failure(self._process.wait(), self._stderr_text())
        return os_error_cause(error)

    def _close(self):
        if self._process is None:
            return
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass
        returncode = self._process.wait()
        stderr = self._stderr_text()
        self._stderr.close()
        self._process = None
        if returncode != 0:
            raise cannot_write(self.path, ffmpeg_failure(returncode, stderr))

    def _kill(self):
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _verify(self, tmp):
        count = count_video_frames(tmp)
        if count is None:
            return 'the written video cannot be read back'
        if count != self.frames:
            return f'the written video holds {count} of its {self.frames} frames'
        return None


class GifWriter(_AtomicFrameWriter):
    """Looping GIF at `fps`, encoded by Pillow when the block ends (Pillow writes an animated GIF in
    one call, so the frames are held until then: as the palette images Pillow's encoder would make of
    them, one byte per pixel, so that the file is byte for byte what Pillow writes from RGB frames)."""

    def __init__(self, path, fps):
        super().__init__(path, fps)
        self._frames = []

    def _write(self, frame):
        from PIL import Image
        self._frames.append(Image.fromarray(frame).convert('P', palette=Image.Palette.ADAPTIVE))

    def _close(self):
        if self._frames:
            frames, self._frames = self._frames, []
            frames[0].save(self.tmp, format='GIF', save_all=True, append_images=frames[1:],
                           duration=1000 / self.fps, loop=0)

    def _kill(self):
        self._frames = []

    def _verify(self, tmp):
        from PIL import Image
        try:
            with Image.open(tmp) as image:
                image.seek(image.n_frames - 1)  # reads every frame's header
                image.load()
        except Exception as e:  # Pillow raises many kinds for a broken file
            return f'the written GIF cannot be read back ({e})'
        return None


def open_writer(path, fps):
    """GifWriter for a .gif path, else VideoWriter (H.264 in the container its extension names)."""
    return GifWriter(path, fps) if str(path).lower().endswith('.gif') else VideoWriter(path, fps=fps)


def mux_audio(video_path, audio_source, out_path):
    """Writes out_path = the video stream of video_path + the audio of audio_source (if it has any),
    atomically. Returns True if audio was added."""
    if not read_video_meta(audio_source)['audio']:
        log.warning('%s has no audio track: the result is written without audio', audio_source)
        if Path(video_path) != Path(out_path):
            try:
                os.replace(video_path, out_path)
            except OSError as e:
                raise cannot_write(out_path, e) from e
        return False

    def verify(tmp):  # -shortest may end the video with a shorter audio track: any frame will do
        count = count_video_frames(tmp)
        return None if count else 'the video with audio cannot be read back'

    with atomic_path(out_path, verify=verify) as tmp:
        command = [ffmpeg_exe(), '-y', '-nostdin', '-loglevel', 'error', '-i', str(video_path), '-i', str(audio_source),
                   '-map', '0:v:0', '-map', '1:a:0', '-c:v', 'copy', '-c:a', 'aac', '-shortest', str(tmp)]
        result = subprocess.run(command, capture_output=True, text=True, errors='replace')
        if result.returncode != 0:
            raise OutputError(f'adding the audio of {audio_source} to {out_path} failed: '
                              f'{ffmpeg_failure(result.returncode, result.stderr)}')
    return True
