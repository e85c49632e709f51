"""Small generated videos for the tests: a moving square, with the frame index written into each frame.

Row band 0..7 of every frame holds the index in binary (8 blocks of 8 pixels, white = 1), so a decoded
frame tells which frame it is even after lossy coding (`frame_index`). Writers cover every layout that
FramesDataset reads: mp4 (libx264 through imageio's FFMPEG plugin), gif, png strip, frame folder.
"""

import os

import imageio.v3 as iio
import numpy as np

BITS = 8  # frame indices 0..255


def square_frames(num_frames: int, height: int = 64, width: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): a red 16x16 square moving right and down over a dark background."""
    if num_frames > 2 ** BITS or width < 8 * BITS or height < 32:
        raise ValueError('at most 256 frames, at least 64 pixels wide and 32 high')
    frames = np.full((num_frames, height, width, 3), 30, dtype=np.uint8)
    block = width // BITS
    for t in range(num_frames):
        for bit in range(BITS):
            if (t >> bit) & 1:
                frames[t, 0:8, bit * block:(bit + 1) * block] = 255
        y = 12 + (2 * t) % (height - 28)
        x = (3 * t) % (width - 16)
        frames[t, y:y + 16, x:x + 16] = (230, 60, 40)
    return frames


def frame_index(frame: np.ndarray) -> int:
    """Read back the index of a frame of `square_frames` (uint8 or float in [0, 1]; (H, W, 3) or (3, H, W))."""
    frame = np.asarray(frame, dtype=np.float32)
    if frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = frame.transpose(1, 2, 0)
    if frame.max() <= 1.0:
        frame = frame * 255
    block = frame.shape[1] // BITS
    return sum(1 << bit for bit in range(BITS) if frame[4, bit * block + block // 2].mean() > 128)


def write_video(path, frames: np.ndarray, fps: float = 25) -> str:
    """mp4/mov/mkv (libx264), avi (mpeg4) or webm (vp9) through imageio's FFMPEG plugin."""
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    codec = {'.avi': 'mpeg4', '.webm': 'libvpx-vp9'}.get(ext, 'libx264')
    iio.imwrite(path, frames, plugin='FFMPEG', fps=fps, codec=codec, macro_block_size=16)
    return path


def write_gif(path, frames: np.ndarray) -> str:
    iio.imwrite(str(path), frames, extension='.gif', duration=40, loop=0)
    return str(path)


def write_strip(path, frames: np.ndarray) -> str:
    """The frames side by side in one image (T * W wide)."""
    iio.imwrite(str(path), np.concatenate(list(frames), axis=1))
    return str(path)


def write_folder(path, frames: np.ndarray, ext: str = '.png') -> str:
    """One image per frame, named so that sorted order is time order."""
    os.makedirs(path, exist_ok=True)
    for t, frame in enumerate(frames):
        iio.imwrite(os.path.join(path, f'{t:04d}{ext}'), frame)
    return str(path)
