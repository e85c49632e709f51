"""Finds the faces in a video and prints, for each face track, an ffmpeg command that cuts its time
range and crops it to a square around the face (the original crop-video.py's output); with --out it
also writes the crops itself.

    python crop-video.py --inp talk.mp4                       # prints one ffmpeg command per track
    python crop-video.py --inp talk.mp4 --out crops/          # ... and writes crops/talk_0.mp4, ...
    python crop-video.py --inp dance.mp4 --mode motion --min_frames 50

How it works, and where it differs from the original:

* Detection runs offline (the original used face_alignment's S3FD, downloaded at start-up) with
  --detector (toolkit.faces.face_detector, shared with demo.py's faces; docs/faces.md measures
  them): hog, the default, is dlib's HOG detector; cnn is dlib's CNN detector (about 50 times
  slower: too slow for long videos on a CPU); lbp is scikit-image's bundled LBP frontal-face
  cascade (needs no dlib). Each frame is box-averaged down to about --detect_width pixels wide
  (320: an integer factor, so 640 -> 320, 1920 -> 320). dlib's detectors then double it as often
  as it takes (at most twice) for a face of --min_face of the shorter side to reach 80 pixels.
  The LBP cascade works on the gray frame (much narrower frames are upscaled by an integer factor
  first, 176 -> 352), scans windows from --min_face of the shorter side up to the whole frame, with
  scale step 1.1, step ratio 1 and 2 overlapping hits per face, and merges detections that overlap
  by more than half of the smaller one into their mean box. With --detect_every k only every k-th
  frame is searched (k times faster); a track then ends at the last frame where its face was found.
* Tracking follows the original: a track keeps the box it started with, and it goes on while some
  detection overlaps that initial box with IoU > --iou_with_initial; each detection joins the
  overlapping track with the highest IoU or starts a new track; the track's region is the union of
  its boxes. One difference: a detector misses a face now and then, so a track survives up to
  --max_gap frames without a match (--max_gap 0 is the original's rule: the first miss ends it).
* A track is kept if end - start > --min_frames (the original's strict test on frame indices), its
  region is enlarged by --increase on each side and stretched to a square (as far as the frame
  allows), and the printed command is the original's, character for character (paths with spaces
  are quoted): `ffmpeg -i IN -ss START -t DURATION -filter:v "crop=W:H:X:Y, scale=A:B" crop.mp4`
  with START = start / fps and DURATION = end / fps - start / fps. That cut, like the original's,
  stops one frame before the track's last frame; the clips written with --out hold the whole track
  (end - start + 1 frames). --image_shape "A,B" goes to ffmpeg's scale=A:B, i.e. width first.
* --mode motion looks for movement instead of faces: consecutive frames (at detection resolution)
  are differenced, pixels that change by more than --motion_threshold (of the full gray range) are
  kept, one opening removes coding noise, parts closer than 4% of the shorter side are grouped (the
  edges and inner contours of one slowly moving object; a uniform object shows only its edges), and
  the largest moving region of each frame is taken if it covers at least 0.1% of the frame. The
  crop is the bounding box of those regions over the whole clip, from the first to the last frame
  with motion (one track at most).

Frames are decoded one at a time, so memory does not depend on the video's length. Exit status: 0
with at least one track, 1 when no track is long enough (one line on stderr, nothing written), 2 for
an unreadable input or a bad option.
"""
import argparse
import sys
from pathlib import Path

from modules.limits import LIMITS_HELP
from toolkit.cli import run_entry_point
from toolkit.cropping import NoTrackFound, crop_video
from toolkit.faces import DETECTORS, VIDEO_DETECTOR


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def image_shape_type(text):
    """'256,256' -> (256, 256)."""
    try:
        shape = tuple(int(v) for v in text.split(','))
    except ValueError:
        shape = ()
    if len(shape) != 2 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f'{text!r}: expected two positive integers like 256,256')
    return shape


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text}: must be at least 1')
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        description='Find face tracks in a video (offline face detection) and print one ffmpeg '
                    'command per track that cuts and crops it, as the original crop-video.py; --out also '
                    'writes the clips. Exit status 1 if no track is long enough, 2 for a bad input.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=LIMITS_HELP)
    parser.add_argument('--image_shape', default=(256, 256), type=image_shape_type,
                        help='size of the crops, "A,B" as ffmpeg scale=A:B (width, height)')
    parser.add_argument('--increase', default=0.1, type=float,
                        help='enlarge the track region by this fraction of its size on each side')
    parser.add_argument('--iou_with_initial', type=float, default=0.25,
                        help='a detection continues a track if its IoU with the track\'s first box is above this')
    parser.add_argument('--inp', required=True, help='input video (anything ffmpeg reads)')
    parser.add_argument('--min_frames', type=int, default=150,
                        help='keep tracks with end - start > this many frames')
    parser.add_argument('--cpu', dest='cpu', action='store_true',
                        help='unused: accepted for compatibility; detection always runs on the CPU')
    parser.add_argument('--out', type=Path, default=None,
                        help='also write the clips to OUT/<input name>_<k>.mp4 (H.264, with the audio)')
    parser.add_argument('--mode', choices=['face', 'motion'], default='face',
                        help='face: face tracks (found with --detector); motion: the largest moving region over the '
                             'clip')
    parser.add_argument('--detector', choices=DETECTORS, default=VIDEO_DETECTOR,
                        help='--mode face\'s face detector: hog: dlib\'s HOG detector; cnn: dlib\'s CNN detector '
                             '(about 50x slower than hog); lbp: scikit-image\'s LBP cascade (needs no dlib)')
    parser.add_argument('--detect_every', type=positive_int, default=1,
                        help='search faces in every k-th frame only (k times faster)')
    parser.add_argument('--detect_width', type=positive_int, default=320,
                        help='frames are downscaled by an integer factor to about this width for detection')
    parser.add_argument('--min_face', type=float, default=0.125,
                        help='smallest face searched, as a fraction of the shorter side')
    parser.add_argument('--max_gap', type=int, default=5,
                        help='frames a face track survives without a detection (0: the original\'s rule)')
    parser.add_argument('--motion_threshold', type=float, default=0.1,
                        help='--mode motion: gray-level change (0..1) that counts as movement')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv=None) -> int:
    options = vars(build_parser().parse_args(argv))
    return run_entry_point(crop_video, dict(options, report=lambda command: print(command, flush=True)),
                           describe=lambda written: '\n'.join(f'wrote {path}' for path in written), stream=sys.stderr,
                           outcomes=[(NoTrackFound, 1)])


if __name__ == '__main__':
    sys.exit(main())
