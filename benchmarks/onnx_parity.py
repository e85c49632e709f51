"""How closely export.py's graphs reproduce the torch path for one trained model, on real frames:
the model is exported (with --int8, calibrated on the same inputs) into a temporary folder, then a
source image is animated by a driving video with the torch networks (as demo.py runs them), the
float32 graphs and the int8 graph, through the same animation core, in every motion mode the
graphs support. Printed per mode: the largest difference of the float frames, the 8-bit frames
(identical ones, the largest level difference, the lowest frame-wise PSNR), the frame-wise PSNR of
the two videos after the demo's H.264 encoding, and the int8 graph's PSNR against the torch path.

    python benchmarks/onnx_parity.py --config config/cartoon-64.yaml \
        --checkpoint pretrained/cartoon-64/cartoon-64.pth.tar [--source_image IMG --driving_video VID]

Without --source_image / --driving_video, the samples export.py --int8 calibrates on by default
(toolkit.onnx_int8.default_calibration).
"""
import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modules.config import load_config  # noqa: E402
from toolkit.animation import ImageAnimator, batched, to_uint8  # noqa: E402
from toolkit.demo import driving_frames, load_networks, read_source_image  # noqa: E402
from toolkit.evaluation import psnr  # noqa: E402
from toolkit.onnx_int8 import default_calibration, export_model  # noqa: E402
from toolkit.onnx_runtime import onnx_networks  # noqa: E402
from toolkit.video_io import VideoWriter, iter_video_frames  # noqa: E402

BATCH = 4  # driving frames per forward pass


def animate(source, frames, networks, motion):
    animator = ImageAnimator(source, *networks, **motion)
    return np.concatenate([animator(np.stack(batch)) for batch in batched(frames, BATCH)])


def encoded(frames, path):
    with VideoWriter(path, fps=25) as writer:
        for frame in frames:
            writer.write(frame)
    return list(iter_video_frames(path))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True)
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--source_image')
    parser.add_argument('--driving_video')
    parser.add_argument('--frames', type=int, default=100, help='driving frames to animate (default 100)')
    opt = parser.parse_args()
    if not (opt.source_image and opt.driving_video):
        source_image, driving_video = default_calibration(opt.config)
        opt.source_image, opt.driving_video = opt.source_image or source_image, opt.driving_video or driving_video
    config = load_config(opt.config)
    size = tuple(config['dataset_params']['frame_shape'][:2])
    source = read_source_image(opt.source_image, size)
    frames = [frame for _, frame in zip(range(opt.frames), driving_frames(opt.driving_video, size))]
    family, models = load_networks(config, opt.config, opt.checkpoint, torch.device('cpu'))
    print(f'{Path(opt.checkpoint).name} ({family.title}), {len(frames)} frames of {Path(opt.driving_video).name} '
          f'animating {Path(opt.source_image).name} at {size[1]}x{size[0]}, {torch.get_num_threads()} threads',
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        export_model(opt.config, opt.checkpoint, tmp, int8=True, calibration_source=opt.source_image,
                     calibration_video=opt.driving_video)
        backends = {'torch': family.animation(models), 'onnxruntime': onnx_networks(tmp, opt.config, opt.checkpoint),
                    'onnxruntime int8': onnx_networks(tmp, opt.config, opt.checkpoint, int8=True)}
        for mode in family.modes:
            if mode == 'avd':  # not exported
                continue
            motion = family.motion(mode, False, False, None)
            out = {name: animate(source, frames, networks, motion) for name, networks in backends.items()}
            exact, ours = out['torch'], out['onnxruntime']
            bits = {name: to_uint8(value) for name, value in out.items()}
            frame_psnr = [psnr(a, b, 255) for a, b in zip(bits['onnxruntime'], bits['torch'])]
            levels = int(np.abs(bits['onnxruntime'].astype(int) - bits['torch']).max())
            videos = {name: encoded(bits[name], Path(tmp) / f'{name}.mp4') for name in ('torch', 'onnxruntime')}
            video_psnr = [psnr(a, b, 255) for a, b in zip(videos['onnxruntime'], videos['torch'])]
            print(f'mode {mode}: float frames max |onnxruntime - torch| {np.abs(ours - exact).max():.2e}; '
                  f'8-bit: {sum(map(math.isinf, frame_psnr))} of {len(frames)} frames identical, at most {levels} '
                  f'level(s) apart, lowest frame-wise PSNR {min(frame_psnr):.1f} dB; after H.264: lowest '
                  f'{min(video_psnr):.1f} dB, mean {np.mean(np.minimum(video_psnr, 99)):.1f} dB (identical = 99); '
                  f'int8 graph against torch: PSNR {psnr(out["onnxruntime int8"], exact):.1f} dB', flush=True)


if __name__ == '__main__':
    main()
