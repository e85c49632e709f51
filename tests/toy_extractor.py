"""A plug-in extractor for the evaluation tests (toolkit.evaluation's interface), simple enough to
compute by hand: one keypoint, the centroid of the red square of tests.video_utils.square_frames
(NaN when no pixel is red), and as identity the frame's mean colour."""
import numpy as np


class SquareCentroid:
    name = 'square'

    def __call__(self, frames):
        frames = np.asarray(frames, np.float64)
        red = (frames[..., 0] > 150) & (frames[..., 1] < 120)  # (N, H, W)
        keypoints = np.full((len(frames), 1, 2), np.nan)
        for i, mask in enumerate(red):
            ys, xs = np.nonzero(mask)
            if len(xs):
                keypoints[i, 0] = xs.mean(), ys.mean()
        return {'keypoints': keypoints, 'identity': frames.mean(axis=(1, 2)) / 255}


class NotAnExtractor:
    """Returns a list instead of the dict."""

    def __call__(self, frames):
        return [0] * len(frames)
