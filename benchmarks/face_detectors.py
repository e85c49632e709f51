"""Recall, false boxes and time of the face detectors (lbp, hog, cnn) on real photos and video frames
that ship inside installed packages, against face boxes annotated by hand
(toolkit/face_detection_quality.py says which images and how they are scored).

    python benchmarks/face_detectors.py                    # demo.py's photo settings (multi_face.detect_faces)
    python benchmarks/face_detectors.py --video            # crop-video.py's per-frame settings
    python benchmarks/face_detectors.py --detectors lbp hog --details
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit import faces  # noqa: E402
from toolkit.face_detection_quality import IOU_HIT, image_set, measure, table  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--detectors', nargs='+', default=list(faces.DETECTORS), choices=faces.DETECTORS)
    parser.add_argument('--video', action='store_true',
                        help="crop-video.py's per-frame settings instead of demo.py's photo settings")
    parser.add_argument('--details', action='store_true', help='hits, faces and false boxes per image')
    args = parser.parse_args(argv)
    images = image_set()
    print(f'{len(images)} images, {sum(len(t) for _, _, t in images)} annotated faces; '
          f'{"crop-video.py per-frame" if args.video else "demo.py photo"} settings; a hit: IoU >= {IOU_HIT}; '
          f'{os.cpu_count()} CPUs')
    results = {name: measure(name, images, args.video) for name in args.detectors}
    if args.details:
        for name, r in results.items():
            print(name + ': ' + ', '.join(f'{image} {hits}/{total}' + (f' +{false}' if false else '')
                                          for image, hits, total, false in r['per_image']))
    print(table(results))


if __name__ == '__main__':
    main()
