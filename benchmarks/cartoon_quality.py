"""Quality of a cartoon-face model (the bundled one by default) on a freshly generated dataset.

    python benchmarks/cartoon_quality.py [--checkpoint pretrained/cartoon-64/cartoon-64.pth.tar]
        [--config config/cartoon-64.yaml] [--seed 1] [--videos 60] [--test_videos 20] [--frames 64]
        [--json quality.json]

The steps, and what each number means, are in toolkit/cartoon_quality.py (its docstring).
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.cartoon_quality import evaluate  # noqa: E402
from toolkit.demo import BUNDLED_DEFAULTS  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', default=str(BUNDLED_DEFAULTS['config']))
    p.add_argument('--checkpoint', default=str(BUNDLED_DEFAULTS['checkpoint']))
    p.add_argument('--seed', type=int, default=1, help='dataset seed (the bundled model was trained on seed 0)')
    p.add_argument('--videos', type=int, default=60)
    p.add_argument('--test_videos', type=int, default=20)
    p.add_argument('--frames', type=int, default=64)
    p.add_argument('--work', default=None, help='keep the generated data and run folder here (default: a temp dir)')
    p.add_argument('--segmentation_checkpoint', default=str(BUNDLED_DEFAULTS['checkpoint'].parent / 'segmentation.pth.tar'),
                   help='the part segmenter to measure (skipped when the file does not exist)')
    p.add_argument('--json', default=None, help='also write the numbers to this JSON file')
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    torch.set_grad_enabled(False)
    result = evaluate(opt.config, opt.checkpoint, opt.seed, opt.videos, opt.test_videos, opt.frames, opt.work,
                      opt.segmentation_checkpoint)
    d = result['dataset']
    print(f"fresh dataset: seed {d['seed']}, {d['videos'] - d['test_videos']} train (landmark fit) + "
          f"{d['test_videos']} test videos of {d['frames']} frames, {d['size']}x{d['size']}")
    print(f"reconstruction L1 {result['reconstruction_l1']:.4f} vs no-motion baseline {result['no_motion_l1']:.4f} "
          f"(ratio {result['l1_ratio']:.2f}; goal <= 0.5)")
    print(f"paper's metrics ({result['extractor']} extractor): AKD {result['akd_px']:.3f} px, MKR {result['mkr']:.3f}, "
          f"AED {result['aed']:.3f} vs no-motion AKD {result['no_motion_akd_px']:.3f} px, AED {result['no_motion_aed']:.3f}")
    print(f"keypoint tracking: mean landmark error {result['keypoint_error_px']:.2f} px vs "
          f"{result['constant_landmarks_error_px']:.2f} px for constant landmarks (frame {d['size']} px)")
    print('per landmark: ' + ', '.join(f'{k} {v:.2f}' for k, v in result['per_landmark_px'].items()))
    print(f"speed: {result['seconds_per_frame'] * 1000:.1f} ms per frame (demo.py's default path, one test video)")
    if 'segmentation_iou' in result:
        print(f"part segmentation IoU, mean over parts {result['segmentation_mean_iou']:.3f} (goal >= 0.8): " +
              ', '.join(f'{k} {v:.3f}' for k, v in result['segmentation_iou'].items()))
    if opt.json:
        from modules.fileio import atomic_path
        with atomic_path(opt.json) as tmp, open(tmp, 'w') as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
