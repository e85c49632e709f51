"""Generate a dataset of procedural cartoon talking heads with ground-truth landmarks and part masks
(the FramesDataset layout; toolkit.cartoon draws them and documents the files):

    python cartoon_faces.py --out data/cartoon --videos 200 --frames 64 --size 128 --seed 0
    python cartoon_faces.py --out samples --samples          # a source image and a driving video
"""
import argparse
import logging
import sys

from modules.errors import exit_status, stop_on_sigterm
from toolkit.cartoon import generate, write_samples


def build_parser():
    p = argparse.ArgumentParser(description='Generate a dataset of procedural cartoon talking heads with '
                                            'ground-truth landmarks and part masks (FramesDataset layout).')
    p.add_argument('--out', required=True, help='output folder (created; existing videos are replaced)')
    p.add_argument('--videos', type=int, default=200, help='number of videos, train + test (default 200)')
    p.add_argument('--frames', type=int, default=64, help='frames per video (default 64, at 25 fps)')
    p.add_argument('--size', type=int, default=128, help='frame size in pixels, square (default 128)')
    p.add_argument('--seed', type=int, default=0, help='dataset seed (default 0)')
    p.add_argument('--test_videos', type=int, default=None, help='how many go to test/ (default: a tenth)')
    p.add_argument('--format', default='png', choices=('png', 'mp4'), dest='fmt',
                   help='frame folders of PNGs (lossless, default) or mp4 files')
    p.add_argument('--samples', action='store_true',
                   help='instead of a dataset, write demo inputs OUT/source.png and OUT/driving.mp4 (two identities '
                        'of --seed, the video --frames long)')
    return p


def main(argv=None):
    opt = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    stop_on_sigterm()
    try:
        if opt.samples:
            for path in write_samples(opt.out, opt.frames, opt.size, opt.seed):
                print(f'wrote {path}')
            return 0
        meta = generate(opt.out, opt.videos, opt.frames, opt.size, opt.seed, opt.test_videos, opt.fmt)
    except BaseException as e:  # a user or machine failure: one line (modules.errors); a bug: its traceback
        return exit_status(e)
    print(f"wrote {meta['videos'] - meta['test_videos']} train and {meta['test_videos']} test videos "
          f"of {meta['frames']} frames at {meta['size']}x{meta['size']} to {opt.out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
