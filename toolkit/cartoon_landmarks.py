"""Landmarks and identity of cartoon faces (toolkit.cartoon's kind), for the evaluation's AKD, MKR
and AED where dlib finds nothing: a small CNN trained on frames whose ground truth the generator
knows.

    extractor = CartoonFaces()                  # pretrained/cartoon-64/landmarks.pth.tar, on the CPU
    found = extractor(frames)                   # frames: uint8 (N, H, W, 3) RGB
    found['keypoints']                          # float32 (N, 8, 2) pixel (x, y) of cartoon.LANDMARKS
    found['identity']                           # float32 (N, 64), L2-normalised

The extractor interface (what toolkit.evaluation calls): `extractor(frames)` -> {'keypoints': float32
(N, K, 2) pixel (x, y) in the frames' own resolution (pixel centres at integers), NaN where a
keypoint is not found; 'identity': float32 (N, D), a row of NaN where no face is found}, with the
attributes `name` and `keypoint_names` (K names). Identity rows are compared by euclidean distance.

The network (LandmarkNet, 64x64 input, 154,288 parameters): a U-Net of three levels (24, 40 and 56
channels at 32x32, 16x16 and 8x8) whose 32x32 output is one heat map per landmark, resized to 64x64
and read out as its softmax-weighted mean position (sub-pixel); and an identity head on the
encoder's two coarsest levels (global mean and max pooling, two linear layers, 64-d,
L2-normalised). Frames of another size are resized to 64x64 (toolkit.resize) and the
coordinates scaled back.

No face: cartoon frames always hold a face, so the only "no face" rule is for blank frames: a frame
whose values have a standard deviation below BLANK_STD grey levels (per colour channel, the largest
of the three) gets NaN keypoints and a NaN identity, so the missing keypoint rate counts it.

Training (train_extractor; `python cartoon_faces.py --train_extractor OUT.pth.tar`): frames drawn
by toolkit.cartoon with TRAIN_SEED (a seed no other data of this repository uses), TRAIN_IDENTITIES
videos with FRAMES_PER_IDENTITY frames each at random times of a 64-frame motion, so that pose,
blinks, gaze and mouth vary within an identity. Losses: the L1 distance in pixels between predicted
and true landmarks, and a cosine-margin softmax over the training identities (CosFace; its class
weights are not kept). Augmentation: random shifts with edge fill (landmarks shifted alike), and on
some frames a Gaussian blur and pixel noise, as generated frames have. After training it measures
the extractor on MEASURE_SEED's videos (measure) and writes the log beside the weights.
"""
import contextlib
import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.errors import InputError
from modules.fileio import atomic_torch_save, make_folder
from toolkit import cartoon
from toolkit.resize import resize_frame

log = logging.getLogger(__name__)

SIZE = 64                       # the network's input size
EMBEDDING = 64                  # identity dimension
CHANNELS = (24, 40, 56)        # U-Net levels at 32, 16 and 8 pixels
BLANK_STD = 3.0                 # grey levels: a frame whose every channel varies less is blank (no face)
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / 'pretrained' / 'cartoon-64' / 'landmarks.pth.tar'

TRAIN_SEED = 1000               # the training frames' dataset seed
MEASURE_SEED = 1001             # the held-out videos the log and the model card report on
TRAIN_IDENTITIES = 1500
FRAMES_PER_IDENTITY = 12
VIDEO_FRAMES = 64               # length of the motion the training frames are drawn from


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

def _block(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LandmarkNet(nn.Module):
    """(B, 3, 64, 64) float in [0, 1] -> (landmarks (B, L, 2) pixel (x, y) at 64x64, identity (B, D)
    L2-normalised). features(x) also gives the (B, L, 64, 64) heat map logits the landmarks are read
    from."""

    def __init__(self, num_landmarks=len(cartoon.LANDMARKS), embedding=EMBEDDING, channels=CHANNELS):
        super().__init__()
        c2, c3, c4 = channels
        self.enc2 = nn.Sequential(_block(3, c2, 2), _block(c2, c2))        # 32x32
        self.enc3 = nn.Sequential(_block(c2, c3, 2), _block(c3, c3))       # 16x16
        self.enc4 = nn.Sequential(_block(c3, c4, 2), _block(c4, c4))       # 8x8
        self.dec3 = _block(c4 + c3, c3)
        self.dec2 = _block(c3 + c2, c2)
        self.heads = nn.Conv2d(c2, num_landmarks, 1)
        self.identity = nn.Sequential(nn.Linear(2 * c4 + c3, 128), nn.ReLU(inplace=True), nn.Linear(128, embedding))

    @staticmethod
    def _up(x, size):
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False)

    def features(self, x):
        """-> (heat map logits (B, L, H, W) at the input's size, identity (B, D) L2-normalised)."""
        e2 = self.enc2(x * 2 - 1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(torch.cat([self._up(e4, e3.shape[2:]), e3], 1))
        d2 = self.dec2(torch.cat([self._up(d3, e2.shape[2:]), e2], 1))
        pooled = torch.cat([e4.mean((2, 3)), e4.amax((2, 3)), e3.mean((2, 3))], 1)
        return self._up(self.heads(d2), x.shape[2:]), F.normalize(self.identity(pooled), dim=1)

    def forward(self, x):
        heat, identity = self.features(x)
        return soft_argmax(heat), identity


def soft_argmax(heat):
    """(B, L, H, W) logits -> (B, L, 2) float (x, y): the softmax-weighted mean pixel position
    (pixel centres at integers)."""
    b, k, h, w = heat.shape
    prob = torch.softmax(heat.reshape(b, k, h * w).float(), dim=2).reshape(b, k, h, w)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device)
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device)
    return torch.stack([(prob.sum(2) * xs).sum(2), (prob.sum(3) * ys).sum(2)], dim=2)


# ----------------------------------------------------------------------------------------------
# The extractor
# ----------------------------------------------------------------------------------------------

def blank_frames(frames):
    """uint8 (N, H, W, 3) -> bool (N,): frames whose every colour channel has a standard deviation
    below BLANK_STD grey levels (near-constant: no face)."""
    frames = np.asarray(frames, np.float32)
    return frames.reshape(len(frames), -1, frames.shape[-1]).std(axis=1).max(axis=1) < BLANK_STD


def load_weights(path, device='cpu'):
    """The LandmarkNet of a weights file written by train_extractor, in eval mode on `device`.
    Raises InputError (one line) for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        restore = 'restore the bundled file (git checkout) or ' if path == DEFAULT_WEIGHTS else ''
        raise InputError(f'cartoon landmark weights {path} not found: {restore}train them with '
                         f'python cartoon_faces.py --train_extractor {path}')
    try:
        saved = torch.load(path, map_location='cpu', weights_only=True)
        net = LandmarkNet(len(saved['landmark_names']), int(saved['embedding']), tuple(saved['channels']))
        net.load_state_dict(saved['network'])
    except Exception as e:  # a corrupt, truncated or foreign file: one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f'{path} is not a cartoon landmark weights file ({first}): restore it or train it again '
                         f'with python cartoon_faces.py --train_extractor {path}') from e
    return net.to(device).eval()


class CartoonFaces:
    """The extractor for toolkit.cartoon's faces: the 8 LANDMARKS and a 64-d identity per frame
    (interface in the module docstring). The weights are loaded on the first call, once.

    weights: the file (default pretrained/cartoon-64/landmarks.pth.tar); device: where the network
    runs (default the CPU); batch: frames per forward pass."""

    name = 'cartoon-64 landmarks'
    keypoint_names = cartoon.LANDMARKS

    def __init__(self, weights=DEFAULT_WEIGHTS, device='cpu', batch=256):
        self.weights, self.device, self.batch = Path(weights), torch.device(device), batch
        self._net = None

    def network(self):
        if self._net is None:
            self._net = load_weights(self.weights, self.device)
        return self._net

    def __call__(self, frames):
        """uint8 (N, H, W, 3) RGB (float frames are taken to be in [0, 1]) -> {'keypoints': float32
        (N, 8, 2) pixel (x, y) at (H, W), 'identity': float32 (N, 64)}; NaN rows for blank frames."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f'expected frames of shape (N, H, W, 3) RGB, got {frames.shape}')
        if frames.dtype != np.uint8:
            frames = np.rint(np.clip(frames, 0, 1) * 255).astype(np.uint8)
        net = self.network()
        n, h, w = frames.shape[:3]
        keypoints = np.full((n, len(self.keypoint_names), 2), np.nan, np.float32)
        identity = np.full((n, net.identity[-1].out_features), np.nan, np.float32)
        present = np.flatnonzero(~blank_frames(frames)) if n else np.zeros(0, int)
        for start in range(0, len(present), self.batch):
            index = present[start:start + self.batch]
            batch = frames[index].astype(np.float32) / 255
            if (h, w) != (SIZE, SIZE):
                batch = np.stack([resize_frame(frame, (SIZE, SIZE)) for frame in batch])
            x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32)).to(self.device)
            with torch.inference_mode():
                points, vectors = net(x)
            points = points.cpu().numpy()
            scale = np.array([w / SIZE, h / SIZE], np.float32)
            keypoints[index] = (points + 0.5) * scale - 0.5
            identity[index] = vectors.cpu().numpy()
        return {'keypoints': keypoints, 'identity': identity}


# ----------------------------------------------------------------------------------------------
# Data, training and measurement
# ----------------------------------------------------------------------------------------------

def video_frames(seed, index, times, frames=VIDEO_FRAMES, size=SIZE):
    """Frames `times` of video `index` of the cartoon dataset with `seed` (the same pixels as
    cartoon.make_video(seed, index, frames, size)[...][times]) -> (uint8 (T, S, S, 3), float32 (T, L, 2))."""
    rng = np.random.default_rng([seed, index])
    identity = cartoon.random_identity(rng)
    motion = cartoon.random_motion(rng, frames)
    images = [cartoon.render(identity, motion, int(t), size)[0] for t in times]
    points = [cartoon.landmarks(identity, motion, int(t), size) for t in times]
    return np.stack(images), np.stack(points)


def make_training_set(seed=TRAIN_SEED, identities=TRAIN_IDENTITIES, per_identity=FRAMES_PER_IDENTITY,
                      progress=True):
    """-> (uint8 (N, 64, 64, 3) frames, float32 (N, L, 2) landmarks, int64 (N,) identity labels),
    N = identities * per_identity: per video, frames at random distinct times of its motion."""
    from tqdm import tqdm
    pick = np.random.default_rng(seed)
    images, points, labels = [], [], []
    for index in tqdm(range(identities), desc='training frames', unit='video', disable=not progress):
        times = np.sort(pick.choice(VIDEO_FRAMES, per_identity, replace=False))
        frames, marks = video_frames(seed, index, times)
        images.append(frames)
        points.append(marks)
        labels.append(np.full(per_identity, index))
    return np.concatenate(images), np.concatenate(points), np.concatenate(labels).astype(np.int64)


def shift_edge(frame, dx, dy):
    """(H, W, C) -> the frame moved by integer (dx, dy) pixels, the uncovered border filled by
    repeating the edge pixels."""
    h, w = frame.shape[:2]
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return frame
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode='edge')
    return padded[pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def _augment(images, points, rng, max_shift=6):
    """A training batch: uint8 (B, S, S, 3), float32 (B, L, 2) -> (float (B, 3, S, S) in [0, 1],
    float (B, L, 2)): random shifts with edge fill, and on some frames a blur and noise."""
    shifts = rng.integers(-max_shift, max_shift + 1, (len(images), 2))
    moved = np.stack([shift_edge(image, dx, dy) for image, (dx, dy) in zip(images, shifts)])
    x = torch.from_numpy(moved.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    target = torch.from_numpy(points + shifts[:, None, :].astype(np.float32))
    blur = torch.from_numpy(rng.uniform(0.3, 1.2, len(x)) * (rng.random(len(x)) < 0.4)).float()
    if blur.any():
        radius = np.arange(-2, 3, dtype=np.float32)
        sigma = blur.clamp(min=1e-3)[:, None]
        kernel = torch.exp(-torch.from_numpy(radius)[None] ** 2 / (2 * sigma ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        kernel[blur == 0] = torch.tensor([0, 0, 1, 0, 0], dtype=torch.float32)
        b, c, s, _ = x.shape
        flat = F.pad(x.reshape(1, b * c, s, s), (2, 2, 2, 2), mode='replicate')
        k = kernel.repeat_interleave(c, 0)
        flat = F.conv2d(flat, k[:, None, None, :], groups=b * c)
        flat = F.conv2d(flat, k[:, None, :, None], groups=b * c)
        x = flat.reshape(b, c, s, s)
    noise = torch.from_numpy(rng.uniform(0, 0.03, (len(x), 1, 1, 1)) * (rng.random((len(x), 1, 1, 1)) < 0.3)).float()
    x = (x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(2 ** 31))))).clamp(0, 1)
    return x, target


@contextlib.contextmanager
def _log_file(path):
    """Copies this module's log records into the text file `path` while the block runs."""
    handler = logging.FileHandler(path, mode='w')
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
    log.addHandler(handler)
    previous = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)
        handler.close()


def log_path_for(weights):
    """The training log beside a weights file: landmarks.pth.tar -> landmarks.log."""
    weights = Path(weights)
    stem = weights.name[:-len('.pth.tar')] if weights.name.endswith('.pth.tar') else weights.stem
    return weights.with_name(stem + '.log')


def train_extractor(out, seed=TRAIN_SEED, identities=TRAIN_IDENTITIES, per_identity=FRAMES_PER_IDENTITY,
                    steps=2000, batch=64, lr=2e-3, margin=0.25, scale=20.0, threads=1,
                    measure_seed=MEASURE_SEED, measure_videos=50, progress=True):
    """Trains a LandmarkNet on freshly drawn cartoon frames (module docstring) and writes `out`
    ({'network': state dict, 'landmark_names', 'embedding', 'channels', 'measured', ...}, loadable with
    weights_only=True) and its log (log_path_for(out)). Returns a one-line summary.

    steps x batch: the optimisation (Adam, learning rate `lr` on a cosine schedule); margin, scale:
    CosFace's; threads: torch's CPU threads during training (restored after; one thread is the fastest
on a small CPU shared with other jobs, where two threads wait for each other); measure_*: the held-out
    videos measured at the end (measure)."""
    from tqdm import tqdm
    out = Path(out)
    if not out.name.endswith('.pth.tar'):
        raise InputError(f'--train_extractor {out}: the weights file name must end in .pth.tar')
    if seed == measure_seed:
        raise InputError(f'the training seed and the measurement seed must differ (both {seed})')
    make_folder(out.parent, f'--train_extractor {out}')
    log_path = log_path_for(out)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    started = time.time()
    try:
        with _log_file(log_path):
            log.info('training the cartoon landmark and identity network: %d identities x %d frames (seed %d), '
                     '%d steps x batch %d, Adam %g (cosine), CosFace margin %g scale %g; torch %s, %d threads, %s, '
                     'python %s', identities, per_identity, seed, steps, batch, lr, margin, scale, torch.__version__,
                     torch.get_num_threads(), platform.processor() or platform.machine(), platform.python_version())
            images, points, labels = make_training_set(seed, identities, per_identity, progress)
            log.info('drew %d training frames in %.0f s', len(images), time.time() - started)
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed + 1)
            net = LandmarkNet().to(memory_format=torch.channels_last)  # faster convolutions on a CPU
            log.info('LandmarkNet: %d parameters', sum(p.numel() for p in net.parameters()))
            classes = nn.Parameter(torch.randn(identities, EMBEDDING) * 0.1)
            optimizer = torch.optim.Adam(list(net.parameters()) + [classes], lr=lr)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
            net.train()
            totals, tick = np.zeros(3), time.time()
            for step in tqdm(range(steps), desc='training', unit='step', disable=not progress):
                chosen = rng.integers(0, len(images), batch)
                x, target = _augment(images[chosen], points[chosen], rng)
                x = x.contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(labels[chosen])
                predicted, identity = net(x)
                landmark_loss = (predicted - target).abs().mean()
                cosine = identity @ F.normalize(classes, dim=1).t()
                identity_loss = F.cross_entropy(scale * (cosine - margin * F.one_hot(y, identities)), y)
                loss = landmark_loss + identity_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                accuracy = (cosine.argmax(1) == y).float().mean()
                totals += [landmark_loss.item(), identity_loss.item(), accuracy.item()]
                if (step + 1) % 250 == 0 or step + 1 == steps:
                    count = (step % 250) + 1
                    log.info('step %d: landmark L1 %.3f px, identity loss %.3f, training identity accuracy %.3f '
                             '| %.2f s/step', step + 1, *(totals / count), (time.time() - tick) / count)
                    totals, tick = np.zeros(3), time.time()
            net.eval()
            extractor = CartoonFaces(out)
            extractor._net = net
            measured = measure(extractor, measure_seed, measure_videos, progress=progress)
            log.info('held-out measurement (seed %d): %s', measure_seed, describe_measurement(measured))
            atomic_torch_save({'network': net.state_dict(), 'landmark_names': list(cartoon.LANDMARKS),
                               'embedding': EMBEDDING, 'channels': list(CHANNELS), 'size': SIZE,
                               'train': {'seed': seed, 'identities': identities, 'per_identity': per_identity,
                                         'steps': steps, 'batch': batch, 'lr': lr},
                               'measured': measured}, out)
            log.info('wrote %s (%.0f KB) in %.1f minutes', out, out.stat().st_size / 1024, (time.time() - started) / 60)
    finally:
        torch.set_num_threads(old_threads)
    return (f'wrote {out} and {log_path}: landmarks {measured["landmark_error"]:.2f} px, identity verification '
            f'{measured["verification_accuracy"]:.3f} on held-out seed {measure_seed}')


def measure(extractor, seed=MEASURE_SEED, videos=50, frames=VIDEO_FRAMES, identity_every=8, progress=False):
    """The extractor on `videos` cartoon videos of dataset `seed` (frames at 64x64) -> dict:
    landmark_error (mean pixel distance to the generator's landmarks over all frames and landmarks),
    landmark_errors {name: px}; for every `identity_every`-th frame: same_distance / different_distance
    (mean identity distance between frames of one video / of different videos), and the best
    threshold's balanced verification accuracy (the mean of the accuracies on same-video and on
    different-video pairs) with that threshold."""
    from tqdm import tqdm
    errors, vectors, owners = [], [], []
    for index in tqdm(range(videos), desc='measuring', unit='video', disable=not progress):
        images, _, truth = cartoon.make_video(seed, index, frames, SIZE)
        found = extractor(images)
        errors.append(np.linalg.norm(found['keypoints'] - truth, axis=2))
        vectors.append(found['identity'][::identity_every])
        owners.append(np.full(len(vectors[-1]), index))
    errors, vectors, owners = np.concatenate(errors), np.concatenate(vectors), np.concatenate(owners)
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    upper = np.triu(np.ones_like(distance, bool), 1)
    same = distance[upper & (owners[:, None] == owners[None])]
    different = distance[upper & (owners[:, None] != owners[None])]
    thresholds = np.sort(np.concatenate([same, different]))
    same_ok = np.searchsorted(np.sort(same), thresholds, side='right') / len(same)
    different_ok = 1 - np.searchsorted(np.sort(different), thresholds, side='right') / len(different)
    best = int(np.argmax(same_ok + different_ok))
    return {'seed': seed, 'videos': videos, 'frames': frames,
            'landmark_error': float(errors.mean()),
            'landmark_errors': {name: float(e) for name, e in zip(cartoon.LANDMARKS, errors.mean(axis=0))},
            'same_distance': float(same.mean()), 'different_distance': float(different.mean()),
            'verification_accuracy': float((same_ok[best] + different_ok[best]) / 2),
            'threshold': float(thresholds[best])}


def describe_measurement(m):
    """One line of measure()'s numbers."""
    per = ', '.join(f'{name} {e:.2f}' for name, e in m['landmark_errors'].items())
    return (f"{m['videos']} videos x {m['frames']} frames: landmark error {m['landmark_error']:.3f} px ({per}); "
            f"identity distance same video {m['same_distance']:.3f}, different videos {m['different_distance']:.3f}, "
            f"balanced verification accuracy {m['verification_accuracy']:.4f} at threshold {m['threshold']:.3f}")
