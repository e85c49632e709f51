"""Generate a dataset of procedural cartoon talking heads with ground-truth landmarks and part masks
(the FramesDataset layout; toolkit.cartoon draws them and documents the files):

    python cartoon_faces.py --out data/cartoon --videos 200 --frames 64 --size 128 --seed 0
    python cartoon_faces.py --out samples --samples          # a source image and a driving video
    python cartoon_faces.py --train_extractor pretrained/cartoon-64/landmarks.pth.tar
                                        # train the cartoon landmark and identity extractor (evaluation)
"""
import argparse
import sys

from toolkit.cartoon import cartoon_faces
from toolkit.cli import run_entry_point


def build_parser():
    p = argparse.ArgumentParser(description='Generate a dataset of procedural cartoon talking heads with '
                                            'ground-truth landmarks and part masks (FramesDataset layout).')
    p.add_argument('--out', help='output folder (created; existing videos are replaced); required unless '
                                 '--train_extractor')
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
    p.add_argument('--train_extractor', metavar='OUT.pth.tar',
                   help='instead, train the landmark and identity network that evaluates cartoon faces on frames '
                        'it draws itself (its own fixed seeds and recipe; the other options are ignored) and write '
                        'it to OUT.pth.tar, its log beside it (OUT.log)')
    return p


def main(argv=None):
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    weights = args.pop('train_extractor')
    if weights is not None:
        from toolkit.cartoon_landmarks import train_extractor
        return run_entry_point(train_extractor, {'out': weights}, describe=str)
    if args['out'] is None:
        parser.error('the following arguments are required: --out (or --train_extractor)')
    return run_entry_point(cartoon_faces, args, describe=str)


if __name__ == '__main__':
    sys.exit(main())
