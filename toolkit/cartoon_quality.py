"""Quality of a cartoon-face model (the bundled one by default) on a freshly generated dataset: the
evaluation behind benchmarks/cartoon_quality.py and the bundled model's card (quality.json).

1. Generates a new dataset with cartoon_faces.py (another seed than training: new identities and
   motions).
2. Reconstruction: `run.py --mode reconstruction` on its test split (every video rebuilt from its
   first frame) -> the mean L1, against the no-motion baseline: the L1 between every driving frame
   and the source frame (what a model that does not move the source would score). Both are means
   over all frames of all test videos, pixels in [0, 1]. The same pass gives the paper's AKD, MKR
   and AED with the bundled cartoon extractor (toolkit.evaluation, toolkit.cartoon_landmarks), each
   against the same no-motion baseline.
3. Keypoint tracking: the learned keypoints of every frame, in pixels, are mapped to the ground-truth
   landmarks (cartoon_faces.LANDMARKS) by one least-squares affine map fitted on the train split
   (landmarks = [keypoints, 1] @ W, all frames of all train videos); on the test split the mean
   Euclidean distance between mapped keypoints and landmarks is reported in pixels, against the
   error of always predicting the train split's mean landmarks.
4. Large pose gaps: the test frames whose pose differs most from their video's first frame (the
   quarter with the largest mean ground-truth landmark displacement, in pixels) are animated from
   the first frame with absolute motion (the reconstruction setting) -> their mean L1, against the
   no-motion L1 of the same frames.
5. Part segmentation (when the segmentation checkpoint exists; default: the bundled
   segmentation.pth.tar with the config's segmentation_params): the IoU of each part's predicted
   pixels (argmax) with the true label maps, over every frame of the test split, and the mean over
   the parts (background left out).
"""
import copy
import csv
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from modules.config import CONFIG_DIR, load_config
from modules.families import family_of
from modules.inference import inference_copy, optimize_for_inference
from toolkit import cartoon as cartoon_faces
from toolkit.animation import ImageAnimator, batched, default_batch_size, kp_key
from toolkit.demo import load_checkpoints
from toolkit.evaluation import METRICS, Totals, compare, load_extractor
from toolkit.runner import run

log = logging.getLogger(__name__)
EXTRACTOR = 'cartoon'  # the bundled landmark and identity network (toolkit.cartoon_landmarks)


def video_frames(root, split, name, size):
    """float32 (T, size, size, 3) in [0, 1] of one generated video, read as the datasets read it."""
    from toolkit.datasets import read_video
    return read_video(Path(root) / split / name, frame_shape=(size, size, 3))


@torch.inference_mode()
def keypoints_px(kp_detector, frames, batch_size=64):
    """frames (T, H, W, 3) -> learned keypoints (T, K, 2) in pixel coordinates (x, y), the pixel
    centres at integers (the models' [-1, 1] maps -1 to pixel 0 and 1 to pixel W - 1)."""
    device = next(kp_detector.parameters()).device
    values = []
    for start in range(0, len(frames), batch_size):
        x = torch.from_numpy(frames[start:start + batch_size]).permute(0, 3, 1, 2).to(device)
        kp = kp_detector(x)
        values.append(kp[kp_key(kp)].float().cpu().numpy())
    size = np.array([frames.shape[2], frames.shape[1]], np.float64)
    return (np.concatenate(values) + 1) * (size - 1) / 2


def fit_landmarks(kp, landmarks):
    """Least-squares affine map from keypoints (N, K, 2) to landmarks (N, L, 2) -> W (2K + 1, 2L)."""
    x = np.concatenate([kp.reshape(len(kp), -1), np.ones((len(kp), 1))], axis=1)
    weights, *_ = np.linalg.lstsq(x, landmarks.reshape(len(landmarks), -1), rcond=None)
    return weights


def map_keypoints(weights, kp):
    x = np.concatenate([kp.reshape(len(kp), -1), np.ones((len(kp), 1))], axis=1)
    return (x @ weights).reshape(len(kp), -1, 2)


def mean_distance(a, b):
    return float(np.linalg.norm(a - b, axis=-1).mean())


def tracking_error(kp_detector, root, train_names, test_names, size):
    """-> {'error_px', 'constant_px', 'per_landmark_px'} (see the module docstring)."""
    def collect(split, names):
        kps, lms = [], []
        for name in names:
            kps.append(keypoints_px(kp_detector, video_frames(root, split, name, size)))
            lms.append(cartoon_faces.load_annotations(root, split, name)[0])
        return np.concatenate(kps), np.concatenate(lms)

    kp_train, lm_train = collect('train', train_names)
    kp_test, lm_test = collect('test', test_names)
    weights = fit_landmarks(kp_train, lm_train)
    mapped = map_keypoints(weights, kp_test)
    constant = np.broadcast_to(lm_train.mean(axis=0), lm_test.shape)
    per_landmark = np.linalg.norm(mapped - lm_test, axis=-1).mean(axis=0)
    return {'error_px': mean_distance(mapped, lm_test), 'constant_px': mean_distance(constant, lm_test),
            'per_landmark_px': dict(zip(cartoon_faces.LANDMARKS, map(float, per_landmark)))}


def no_motion_metrics(root, names, size, extractor=EXTRACTOR):
    """The paper's metrics (toolkit.evaluation) of not moving at all: every frame of every test video
    compared with its video's first frame -> {'l1', 'akd', 'mkr', 'aed'}, pooled over all frames."""
    totals = Totals()
    extractor = load_extractor(extractor)
    for name in names:
        frames = video_frames(root, 'test', name, size)
        totals += compare(np.broadcast_to(frames[:1], frames.shape), frames, extractor)
    return totals.values()


def reconstruction_metrics(config_path, checkpoint, root, work, extractor=EXTRACTOR):
    """Runs `run.py --mode reconstruction` on root's test split with `extractor` -> the paper's
    metrics over all its frames, {'l1', 'akd', 'mkr', 'aed'} (its metrics.csv's mean row; the L1 is
    l1.csv's)."""
    with open(config_path) as f:
        config = yaml.safe_load(f)
    config['dataset_params']['root_dir'] = str(root)
    config['dataset_params']['pairs_list'] = None
    config['reconstruction_params']['num_videos'] = None
    config['reconstruction_params']['extractor'] = extractor
    config_copy = Path(work) / Path(config_path).name
    with open(config_copy, 'w') as f:
        yaml.safe_dump(config, f)
    # run.py writes reconstruction/ beside its --checkpoint (the original's contract): a link to the
    # checkpoint in the work folder keeps the results there
    run_folder = Path(work) / 'run'
    run_folder.mkdir(parents=True, exist_ok=True)
    linked = run_folder / Path(checkpoint).name
    linked.unlink(missing_ok=True)
    linked.symlink_to(Path(checkpoint).resolve())
    run(config=str(config_copy), mode='reconstruction', checkpoint=str(linked), cpu=True)
    with open(run_folder / 'reconstruction' / 'metrics.csv', newline='') as f:
        mean = next(row for row in csv.DictReader(f) if row['video'] == 'mean')
    return {metric: float(mean[metric]) if mean[metric] else math.nan for metric in METRICS}


def animate_absolute(family, models, source, frames):
    """The frames animated from `source` with absolute keypoints (the reconstruction setting), through
    the family's adapters and the demo's animation core, on the inference copies the Python API uses."""
    generator, kp_detector = family.animation({name: inference_copy(model) for name, model in models.items()
                                               if model is not None})
    animator = ImageAnimator(source, generator, kp_detector, **family.motion('standard'))
    return [prediction for batch in batched(frames, default_batch_size(animator.device))
            for prediction in animator(np.stack(batch))]


def large_pose_gap_l1(family, models, root, names, size, quantile=0.75):
    """Step 4: {'pose_gap_l1', 'pose_gap_no_motion_l1', 'pose_gap_px' (threshold), 'pose_gap_frames'}."""
    gaps, predictions, targets, sources = [], [], [], []
    for name in names:
        frames = video_frames(root, 'test', name, size)
        landmarks = cartoon_faces.load_annotations(root, 'test', name)[0]
        gaps.append(np.linalg.norm(landmarks - landmarks[:1], axis=-1).mean(axis=1))
        targets.append(frames)
        sources.append(np.broadcast_to(frames[:1], frames.shape))
    gaps = np.concatenate(gaps)
    threshold = float(np.quantile(gaps, quantile))
    offset = 0
    for name, frames in zip(names, targets):
        chosen = [t for t in range(len(frames)) if gaps[offset + t] >= threshold]
        offset += len(frames)
        if chosen:
            predictions.append(np.stack(animate_absolute(family, models, frames[0], [frames[t] for t in chosen])))
    chosen = gaps >= threshold
    targets, sources = np.concatenate(targets)[chosen], np.concatenate(sources)[chosen]
    return {'pose_gap_l1': float(np.abs(np.concatenate(predictions) - targets).mean()),
            'pose_gap_no_motion_l1': float(np.abs(sources - targets).mean()), 'pose_gap_px': threshold,
            'pose_gap_frames': int(chosen.sum())}


def seconds_per_frame(family, models, frames, rounds=3):
    """demo.py's default path (relative motion, the networks rewritten for inference) on one video:
    median over `rounds` of seconds per frame, after a warm-up; the source's one-time work included."""
    models = {name: optimize_for_inference(copy.deepcopy(model)) if model is not None else None
              for name, model in models.items()}
    generator, kp_detector = family.animation(models)
    motion = family.motion('relative', avd_network=models.get('avd_network'))
    times = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        animator = ImageAnimator(frames[0], generator, kp_detector, **motion)
        for batch in batched(list(frames), default_batch_size(animator.device)):
            animator(np.stack(batch))
        times.append((time.perf_counter() - start) / len(frames))
    return float(np.median(times[1:]))


def segmentation_iou(config_path, checkpoint, root, size):
    """Step 5: {'segmentation_iou': {part name: IoU}, 'segmentation_mean_iou': float}."""
    from modules.config import load_config
    from modules.segmentation import load_network_segmenter
    from toolkit.segmentation_training import LabelledFrames, mean_part_iou, part_iou
    segmenter = load_network_segmenter(load_config(config_path), checkpoint, 'cpu')
    test = LabelledFrames(root, Path(root) / 'annotations', 'test', (size, size, 3), is_train=False)
    iou = part_iou(segmenter.network, test, 'cpu')
    return {'segmentation_iou': {segmenter.part_names[part]: value for part, value in iou.items()},
            'segmentation_mean_iou': mean_part_iou(iou)}


def evaluate(config, checkpoint, seed=1, videos=60, test_videos=20, frames=64, work=None,
             segmentation_checkpoint=None):
    """The steps of the module docstring -> a dict of the numbers (and the settings)."""
    with open(config) as f:
        size = yaml.safe_load(f)['dataset_params']['frame_shape'][0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work or tmp)
        root = work / 'data'
        cartoon_faces.generate(root, videos=videos, frames=frames, size=size, seed=seed,
                               test_videos=test_videos, progress=False)
        names = {split: sorted(p.name for p in (root / split).iterdir()) for split in ('train', 'test')}
        metrics = reconstruction_metrics(config, checkpoint, root, work)
        baseline = no_motion_metrics(root, names['test'], size)
        family = family_of(load_config(config)['model_params'])
        models = dict(zip(family.demo_models, load_checkpoints(config, checkpoint, cpu=True)))
        tracking = tracking_error(models['kp_detector'], root, names['train'], names['test'], size)
        pose_gap = large_pose_gap_l1(family, models, root, names['test'], size)
        speed = seconds_per_frame(family, models, video_frames(root, 'test', names['test'][0], size))
        segmentation = {} if segmentation_checkpoint is None or not Path(segmentation_checkpoint).is_file() else \
            segmentation_iou(config, segmentation_checkpoint, root, size)
    return {'dataset': {'seed': seed, 'videos': videos, 'test_videos': test_videos, 'frames': frames, 'size': size},
            'reconstruction_l1': metrics['l1'], 'no_motion_l1': baseline['l1'], 'l1_ratio': metrics['l1'] / baseline['l1'],
            'extractor': EXTRACTOR, 'akd_px': metrics['akd'], 'mkr': metrics['mkr'], 'aed': metrics['aed'],
            'no_motion_akd_px': baseline['akd'], 'no_motion_mkr': baseline['mkr'], 'no_motion_aed': baseline['aed'],
            'keypoint_error_px': tracking['error_px'], 'constant_landmarks_error_px': tracking['constant_px'],
            'per_landmark_px': tracking['per_landmark_px'], **pose_gap, 'seconds_per_frame': speed, **segmentation}


# ----------------------------------------------------------------------------------------------
# The families compared at one training budget (benchmarks/compare_families.py)
# ----------------------------------------------------------------------------------------------

FAMILIES = {'FOMM': CONFIG_DIR / 'cartoon-64.yaml', 'FOMM-original': CONFIG_DIR / 'cartoon-64.yaml',
            'TPSMM': CONFIG_DIR / 'tpsmm-cartoon-64.yaml', 'CPABMM': CONFIG_DIR / 'cpabmm-cartoon-64.yaml'}
# FOMM-original: the bundled config without the three options the original FOMM does not have
ORIGINAL_FOMM = {'generator_params': {'skips': False, 'paste_source': False}, 'loss_weights': {'l1': 0}}


def budget_config(config_path, epochs, work, original=False):
    """A copy of `config_path` trained for `epochs` epochs without learning-rate decay; original=True
    turns the generator's skips and paste_source and the pixel L1 loss off (the original FOMM)."""
    config = yaml.safe_load(Path(config_path).read_text())
    if original:
        config['model_params']['generator_params'].update(ORIGINAL_FOMM['generator_params'])
        config['train_params']['loss_weights'].update(ORIGINAL_FOMM['loss_weights'])
    params = config['train_params']
    params.update(num_epochs=epochs, epoch_milestones=[], checkpoint_freq=epochs)
    if 'dropout_epoch' in params:
        params.update(dropout_epoch=max(1, round(epochs * 0.35)), dropout_inc_epoch=1)
    config.pop('segmentation_params', None)
    path = Path(work) / (Path(config_path).stem + ('-original' if original else '') + '.yaml')
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train(config, work, cpu):
    """run.py --mode train of `config` (seed 0) under <work>/log -> (its last checkpoint, minutes)."""
    log_dir = Path(work) / 'log'
    before = set(log_dir.glob('*')) if log_dir.exists() else set()
    started = time.perf_counter()
    run(config=str(config), mode='train', log_dir=str(log_dir), seed=0, cpu=cpu)
    minutes = (time.perf_counter() - started) / 60
    (folder,) = set(log_dir.glob('*')) - before
    return sorted(folder.glob('*-checkpoint.pth.tar'))[-1], minutes
