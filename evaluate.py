"""Evaluate generated videos against their ground truth with the paper's metrics: L1, AKD, MKR, AED.

    python run.py --config config/vox-256.yaml --mode reconstruction --checkpoint vox-cpk.pth.tar
    python evaluate.py reconstruction/png data/vox-png/test --extractor faces

GENERATED and GROUND_TRUTH are two videos, or two folders of videos matched by name (a generated
`id10001.mp4.png` matches the ground truth `id10001.mp4` or `id10001`). A video is a .png/.jpg
strip of frames side by side (as run.py --mode reconstruction writes; cut at the ground truth's frame
width, or at its height), a folder of frames, or a video file (.mp4, .gif, ...). Both sides must
have the same frames; --resize brings generated frames of another size to the ground truth's.

Metrics (per video, then the mean over all frames of all videos):
  L1    mean |generated - ground truth|, pixels in [0, 1]
  AKD   mean distance in pixels between the keypoints found on both frames
  MKR   fraction of the keypoints found on the ground truth but not on the generated frame
  AED   mean euclidean distance between the identity embeddings of the two frames
Extractors (--extractor): faces (dlib's 68 landmarks and 128-d identity of the largest face),
cartoon (the bundled cartoon model's landmark and identity network), none (L1 only), or your own
as MODULE:CLASS or FILE.py:CLASS: an object called with uint8 frames (N, H, W, 3) that returns
{'keypoints': (N, K, 2) pixel (x, y), NaN where not found, 'identity': (N, D), NaN rows where none}.
See docs/evaluation.md.
"""
import argparse
import sys

from modules.limits import LIMITS_HELP
from toolkit.cli import option_defaults, run_entry_point
from toolkit.evaluation import EvaluateOptions, evaluate, extractor_names, format_table


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:] + [LIMITS_HELP]))
    parser.add_argument('generated', help='the generated video, or a folder of them')
    parser.add_argument('ground_truth', help='the ground-truth video, or a folder of them')
    parser.add_argument('--extractor',
                        help=f'keypoint and identity extractor: {", ".join(extractor_names())}, or MODULE:CLASS '
                             f'(default: %(default)s)')
    parser.add_argument('--out', help='the CSV to write: one row per video, then the mean (default: %(default)s)')
    parser.add_argument('--resize', action='store_true',
                        help="bring generated frames of another size to the ground truth's size")
    parser.add_argument('--frame_width', type=int,
                        help='where a ground-truth .png/.jpg strip is cut (default: its height, square frames)')
    parser.set_defaults(**option_defaults(EvaluateOptions))
    return parser


def describe(report):
    return format_table(report) + (f'\nwrote {report.csv}' if report.csv else '')


def main(argv=None):
    return run_entry_point(evaluate, vars(build_parser().parse_args(argv)), describe=describe)


if __name__ == '__main__':
    sys.exit(main())
