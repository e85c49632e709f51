"""Finds the faces in a video and prints, for each face track, an ffmpeg command that cuts its time
range and crops it to a square around the face (the original crop-video.py's output); with --out it
also writes the crops itself.

    python crop-video.py --inp talk.mp4                       # prints one ffmpeg command per track
    python crop-video.py --inp talk.mp4 --out crops/          # ... and writes crops/talk_0.mp4, ...
    python crop-video.py --inp dance.mp4 --mode motion --min_frames 50

How it works, and where it differs from the original:

* Detection runs offline with scikit-image's bundled LBP frontal-face cascade (face_detection.py,
  shared with multi_face.py; the original used face_alignment's S3FD, downloaded at start-up).
  Each frame is converted to gray and box-averaged down to about --detect_width pixels wide (320:
  an integer factor, so 640 -> 320, 1920 -> 320; much narrower frames are upscaled by an integer
  factor instead, 176 -> 352); the cascade scans windows from --min_face of the shorter side up
  to the whole frame, with scale step 1.1, step ratio 1 and 2 overlapping hits per face, and
  detections that overlap by more than half of the smaller one are merged into their mean box.
  With --detect_every k only every k-th frame is searched (k times faster); a track then ends
  at the last frame where its face was found.
* Tracking follows the original: a track keeps the box it started with, and it goes on while some
  detection overlaps that initial box with IoU > --iou_with_initial; each detection joins the
  overlapping track with the highest IoU or starts a new track; the track's region is the union of
  its boxes. One difference: the LBP cascade misses a face now and then, so a track survives up to
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
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from face_detection import (FaceDetector, bb_intersection_over_union, compute_crop, detection_factor, downscale_gray,
                            join)
from modules.errors import InputError, cannot_write, exit_status, stop_on_sigterm
from modules.fileio import atomic_path, check_folder, make_folder
from modules.limits import LIMITS_HELP
from video_io import count_video_frames, ffmpeg_exe, ffmpeg_failure, iter_video_frames, read_video_meta

MIN_MOTION_AREA = 0.001  # moving regions smaller than this fraction of the frame are noise
MOTION_GROUPING = 0.02  # moving parts closer than 2x this fraction of the shorter side are one region


class NoTrackFound(Exception):
    """No face (or motion) track is long enough: reported on stderr with exit status 1."""


# ----------------------------------------------------------------------------------------------
# Tracking (detection and box helpers: face_detection.py)
# ----------------------------------------------------------------------------------------------

@dataclass
class Track:
    """One face over consecutive frames. Matching is against `initial`, as in the original."""
    initial: tuple  # (x1, y1, x2, y2) of the detection that started it
    region: tuple  # union of all its detections
    start: int  # first frame index
    end: int  # last frame index with a matched detection

    @property
    def length(self):
        return self.end - self.start


class FaceTracker:
    """The original's IoU-with-initial-box tracker, plus a tolerance of `max_gap` frames without a
    match (0 reproduces the original). `update` returns the tracks that ended, in ending order."""

    def __init__(self, iou_with_initial, max_gap):
        self.iou_with_initial = iou_with_initial
        self.max_gap = max_gap
        self.tracks = []
        self.longest = 0

    def update(self, index, boxes):
        alive, ended = [], []
        for track in self.tracks:
            best = max((bb_intersection_over_union(track.initial, box) for box in boxes), default=0)
            if best > self.iou_with_initial or index - track.end <= self.max_gap:
                alive.append(track)
            else:
                ended.append(track)
        self.tracks = alive
        for box in map(tuple, boxes):
            best, match = 0, None
            # Tracks started by earlier boxes of this same frame are candidates too (as the original).
            for track in self.tracks:
                iou = bb_intersection_over_union(track.initial, box)
                if iou > best and iou > self.iou_with_initial:
                    best, match = iou, track
            if match is None:
                self.tracks.append(Track(box, box, index, index))
            else:
                match.end = index
                match.region = join(match.region, box)
                self.longest = max(self.longest, match.length)
        return ended

    def finish(self):
        """All tracks still open at the end of the video."""
        ended, self.tracks = self.tracks, []
        return ended


class MotionRegion:
    """The largest moving region of each frame (difference with the previous frame, thresholded,
    opened once, largest connected component), accumulated over the clip into one Track."""

    def __init__(self, frame_shape, detect_width=320, threshold=0.1):
        self.factor = detection_factor(frame_shape[1], detect_width)
        # Frames much narrower than detect_width (176x144 carphone) are upscaled by an integer factor
        # first: the cascade's 24-pixel smallest window is too coarse for their faces.
        self.up = max(1, round(detect_width / frame_shape[1])) if self.factor == 1 else 1
        h, w = frame_shape[0] // self.factor * self.up, frame_shape[1] // self.factor * self.up
        self.min_area = max(4, int(MIN_MOTION_AREA * h * w))
        self.group_distance = max(2, round(MOTION_GROUPING * min(h, w)))
        self.threshold = threshold
        self.previous = None
        self.track = None
        self.longest = 0

    def update(self, index, frame):
        from scipy import ndimage
        gray = downscale_gray(frame, self.factor)
        previous, self.previous = self.previous, gray
        if previous is None:
            return
        moving = ndimage.binary_opening(np.abs(gray - previous) > self.threshold)  # 3x3 cross: drops specks
        # A slowly moving object changes in separate slivers (its edges and inner contours): parts
        # less than 2 * group_distance apart form one region; only its moving pixels are measured.
        labels, count = ndimage.label(ndimage.binary_dilation(moving, iterations=self.group_distance))
        if count == 0:
            return
        labels[~moving] = 0
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        largest = int(np.argmax(areas))
        if areas[largest] < self.min_area:
            return
        rows, cols = ndimage.find_objects(labels)[largest]
        f = self.factor
        box = (cols.start * f, rows.start * f, cols.stop * f, rows.stop * f)
        if self.track is None:
            # The difference shows the movement between frame index - 1 and index: both take part.
            self.track = Track(box, box, index - 1, index)
        else:
            self.track.region = join(self.track.region, box)
            self.track.end = index
        self.longest = self.track.length


def find_tracks(inp, mode='face', iou_with_initial=0.25, min_frames=150, detect_width=320, detect_every=1,
                min_face=0.125, max_gap=5, motion_threshold=0.1, progress=True):
    """Decodes `inp` frame by frame and returns (tracks longer than min_frames in the original's
    order, meta), meta = {'fps', 'frame_shape': (H, W, 3), 'nframes', 'audio', 'longest'}.
    Raises InputError if the video cannot be read."""
    meta = read_video_meta(inp)
    finder = None
    ended = []
    index = -1
    frames = tqdm(iter_video_frames(inp), total=meta['nframes'] or None, desc=f'{mode}s in {Path(inp).name}',
                  unit='frame', file=sys.stderr, disable=not progress or None)
    for index, frame in enumerate(frames):
        if finder is None:
            frame_shape = frame.shape
            if mode == 'motion':
                finder = MotionRegion(frame_shape, detect_width, motion_threshold)
            else:
                finder = FaceTracker(iou_with_initial, max_gap)
                detector = FaceDetector(frame_shape, detect_width, min_face)
        if mode == 'motion':
            finder.update(index, frame)
        elif index % detect_every == 0:
            ended += finder.update(index, detector(frame))
    frames.close()
    if finder is None:
        raise InputError(f'{inp}: the video has no frames')
    if mode == 'motion':
        ended = [finder.track] if finder.track is not None else []
    else:
        ended += finder.finish()
    tracks = [t for t in ended if t.end - t.start > min_frames]  # the original's strict test
    return tracks, {'fps': meta['fps'], 'frame_shape': frame_shape, 'nframes': index + 1,
                    'audio': meta['audio'], 'longest': finder.longest}


# ----------------------------------------------------------------------------------------------
# Output: the original's command, and clips written with the bundled ffmpeg
# ----------------------------------------------------------------------------------------------

def ffmpeg_command(inp, track, fps, crop, image_shape):
    """The original's printed command (cuts frames start .. end - 1, with its float formatting)."""
    width, height, left, top = crop
    start, end = track.start / fps, track.end / fps
    return (f'ffmpeg -i {shlex.quote(str(inp))} -ss {start} -t {end - start} '
            f'-filter:v "crop={width}:{height}:{left}:{top}, scale={image_shape[0]}:{image_shape[1]}" crop.mp4')


def write_clip(inp, out_path, track, crop, image_shape, fps, audio):
    """Writes frames track.start .. track.end of `inp`, cropped and scaled to image_shape (width,
    height), as H.264 (+ the matching AAC audio, if the input has audio) to out_path, atomically."""
    width, height, left, top = crop
    video_filter = (f'trim=start_frame={track.start}:end_frame={track.end + 1},setpts=PTS-STARTPTS,'
                    f'crop={width}:{height}:{left}:{top},scale={image_shape[0]}:{image_shape[1]}')
    command = [ffmpeg_exe(), '-nostdin', '-y', '-loglevel', 'error', '-i', str(inp), '-map', '0:v:0',
               '-vf', video_filter, '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-crf', '18']
    if audio:
        audio_filter = f'atrim=start={track.start / fps}:end={(track.end + 1) / fps},asetpts=PTS-STARTPTS'
        command += ['-map', '0:a:0', '-af', audio_filter, '-c:a', 'aac']
    expected = track.end - track.start + 1

    def verify(tmp):
        count = count_video_frames(tmp)
        if not count:
            return 'the written clip cannot be read back'
        if count != expected:  # a variable frame rate may change the count; the clip is still good
            logging.getLogger('crop-video').warning('%s holds %d frames, the track %d', out_path, count, expected)
        return None

    with atomic_path(out_path, verify=verify) as tmp:
        result = subprocess.run(command + [str(tmp)], capture_output=True, text=True, errors='replace')
        if result.returncode != 0:
            raise cannot_write(out_path, ffmpeg_failure(result.returncode, result.stderr))


def crop_video(opt):
    """Finds the tracks, prints their commands to stdout and, with opt.out, writes the clips.
    Returns the paths written. Raises NoTrackFound or UserError."""
    if opt.out is not None and any(size % 2 for size in opt.image_shape):
        raise InputError(f'--image_shape {opt.image_shape[0]},{opt.image_shape[1]}: H.264 clips need even '
                         f'sizes; pick e.g. {opt.image_shape[0] // 2 * 2},{opt.image_shape[1] // 2 * 2}')
    if opt.out is not None:  # the toolkit's output rule, checked before the video is decoded
        check_folder(opt.out, f'--out {opt.out}')
    tracks, meta = find_tracks(opt.inp, opt.mode, opt.iou_with_initial, opt.min_frames, opt.detect_width,
                               opt.detect_every, opt.min_face, opt.max_gap, opt.motion_threshold,
                               progress=not opt.quiet)
    if not tracks:
        what = 'face' if opt.mode == 'face' else 'motion'
        hint = 'try a smaller --min_frames' + (' or --mode motion' if opt.mode == 'face' else '')
        raise NoTrackFound(f'no {what} track longer than --min_frames {opt.min_frames} in {opt.inp} '
                           f'({meta["nframes"]} frames, longest track {meta["longest"]}); {hint}')
    crops = [compute_crop(track.region, meta['frame_shape'], opt.increase) for track in tracks]
    for track, crop in zip(tracks, crops):
        print(ffmpeg_command(opt.inp, track, meta['fps'], crop, opt.image_shape), flush=True)
    written = []
    if opt.out is not None:
        make_folder(opt.out, f'--out {opt.out}')
        for k, (track, crop) in enumerate(zip(tracks, crops)):
            path = opt.out / f'{Path(opt.inp).stem}_{k}.mp4'
            write_clip(opt.inp, path, track, crop, opt.image_shape, meta['fps'], meta['audio'])
            written.append(path)
    return written


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
        description='Find face tracks in a video (scikit-image LBP cascade, offline) and print one ffmpeg '
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
                        help='face: LBP face cascade; motion: the largest moving region over the clip')
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
    opt = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stderr)
    stop_on_sigterm()
    try:
        written = crop_video(opt)
    except NoTrackFound as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except BaseException as e:  # a user or machine failure: one line (modules.errors); a bug: its traceback
        return exit_status(e)
    for path in written:
        print(f'wrote {path}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
