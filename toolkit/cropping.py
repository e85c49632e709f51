"""Face and motion tracks of a video, and their crops: the library behind crop-video.py (its
--help and module docstring tell how it works and where it differs from the original)."""
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from toolkit.faces import (VIDEO_DETECTOR, bb_intersection_over_union, check_detector, compute_crop, detection_factor,
                            downscale_gray, face_detector, join)
from modules.errors import InputError, cannot_write
from modules.fileio import atomic_path, check_folder, make_folder
from toolkit.video_io import count_video_frames, ffmpeg_exe, ffmpeg_failure, iter_video_frames, read_video_meta

log = logging.getLogger(__name__)

MIN_MOTION_AREA = 0.001  # moving regions smaller than this fraction of the frame are noise
MOTION_GROUPING = 0.02  # moving parts closer than 2x this fraction of the shorter side are one region


class NoTrackFound(Exception):
    """No face (or motion) track is long enough: reported on stderr with exit status 1."""


# ----------------------------------------------------------------------------------------------
# Tracking (detection and box helpers: toolkit.faces)
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
                min_face=0.125, max_gap=5, motion_threshold=0.1, progress=True, detector=VIDEO_DETECTOR):
    """Decodes `inp` frame by frame and returns (tracks longer than min_frames in the original's
    order, meta), meta = {'fps', 'frame_shape': (H, W, 3), 'nframes', 'audio', 'longest'}.
    detector: mode face's detector, one of toolkit.faces.DETECTORS. Raises InputError if the video
    cannot be read, for an unknown detector, or when dlib is missing for hog / cnn (before decoding)."""
    if mode == 'face':
        check_detector(detector)
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
                find_faces = face_detector(detector, frame_shape, detect_width, min_face)
        if mode == 'motion':
            finder.update(index, frame)
        elif index % detect_every == 0:
            ended += finder.update(index, find_faces(frame))
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
            log.warning('%s holds %d frames, the track %d', out_path, count, expected)
        return None

    with atomic_path(out_path, verify=verify) as tmp:
        result = subprocess.run(command + [str(tmp)], capture_output=True, text=True, errors='replace')
        if result.returncode != 0:
            raise cannot_write(out_path, ffmpeg_failure(result.returncode, result.stderr))


def crop_video(inp, out=None, image_shape=(256, 256), increase=0.1, iou_with_initial=0.25, min_frames=150,
               mode='face', detect_every=1, detect_width=320, min_face=0.125, max_gap=5, motion_threshold=0.1,
               quiet=False, report=None, cpu=None, detector=VIDEO_DETECTOR):
    """crop-video.py as a function (options named as its flags): finds the tracks, passes each
    track's ffmpeg command to `report` (the command line prints them) and, with `out`, writes the
    clips. Returns the paths written. Raises NoTrackFound or UserError. (`cpu` is accepted and
    unused, as the original's flag.)"""
    if out is not None and any(size % 2 for size in image_shape):
        raise InputError(f'--image_shape {image_shape[0]},{image_shape[1]}: H.264 clips need even '
                         f'sizes; pick e.g. {image_shape[0] // 2 * 2},{image_shape[1] // 2 * 2}')
    if out is not None:  # the toolkit's output rule, checked before the video is decoded
        out = Path(out)
        check_folder(out, f'--out {out}')
    tracks, meta = find_tracks(inp, mode, iou_with_initial, min_frames, detect_width, detect_every, min_face,
                               max_gap, motion_threshold, progress=not quiet, detector=detector)
    if not tracks:
        what = 'face' if mode == 'face' else 'motion'
        hint = 'try a smaller --min_frames' + (' or --mode motion' if mode == 'face' else '')
        raise NoTrackFound(f'no {what} track longer than --min_frames {min_frames} in {inp} '
                           f'({meta["nframes"]} frames, longest track {meta["longest"]}); {hint}')
    crops = [compute_crop(track.region, meta['frame_shape'], increase) for track in tracks]
    for track, crop in zip(tracks, crops):
        command = ffmpeg_command(inp, track, meta['fps'], crop, image_shape)
        log.debug('%s', command)
        if report is not None:
            report(command)
    written = []
    if out is not None:
        make_folder(out, f'--out {out}')
        for k, (track, crop) in enumerate(zip(tracks, crops)):
            path = out / f'{Path(inp).stem}_{k}.mp4'
            write_clip(inp, path, track, crop, image_shape, meta['fps'], meta['audio'])
            written.append(path)
    return written
