"""The bundled cartoon model: its training recipe is reproducible, its quality holds, and a bare
`python demo.py` animates the bundled samples with it."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from toolkit import cartoon as cartoon_faces
from toolkit import cartoon_quality
from tests.conftest import REPO

CONFIG = REPO / 'config' / 'cartoon-64.yaml'
BUNDLED = REPO / 'pretrained' / 'cartoon-64'
CHECKPOINT = BUNDLED / 'cartoon-64.pth.tar'


def train_one_epoch(tmp_path, data, log_dir, num_workers):
    """The recorded training command (config/cartoon-64.yaml, --seed 0 --bf16) for one short epoch on `data`."""
    config = yaml.safe_load(CONFIG.read_text())
    config['dataset_params'].update(root_dir=str(data), pairs_list=None)
    config['train_params'].update(num_epochs=1, num_repeats=2)  # 2 steps of batch 12 on 13 videos
    path = tmp_path / 'cartoon-64.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run([sys.executable, 'run.py', '--config', str(path), '--mode', 'train', '--cpu', '--seed', '0',
                          '--bf16', '--log_dir', str(log_dir), '--num_workers', str(num_workers)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = Path(log_dir).iterdir()
    return run_dir


def test_the_training_recipe_is_reproducible(tmp_path):
    data = tmp_path / 'data'
    cartoon_faces.generate(data, videos=14, frames=8, size=64, seed=0, test_videos=1, progress=False)
    first = train_one_epoch(tmp_path, data, tmp_path / 'a', num_workers=1)
    second = train_one_epoch(tmp_path, data, tmp_path / 'b', num_workers=1)
    log_line = (first / 'log.txt').read_text()
    assert log_line.startswith('00000000) perceptual - ') and log_line == (second / 'log.txt').read_text()
    a = torch.load(first / '00000000-checkpoint.pth.tar', weights_only=True)
    b = torch.load(second / '00000000-checkpoint.pth.tar', weights_only=True)
    for name in ('generator', 'kp_detector'):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])


def test_the_bundled_files_are_there_and_small():
    for name in ('cartoon-64.pth.tar', 'source.png', 'source-mask.png', 'driving.mp4', 'README.md', 'preview.gif',
                 'train.log', 'quality.json', 'segmentation.pth.tar', 'segmentation.log'):
        assert (BUNDLED / name).is_file(), name
    assert CHECKPOINT.stat().st_size < 20e6
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    assert sorted(checkpoint) == ['epoch', 'generator', 'kp_detector']  # the original layout, no optimizers
    from modules.check import check
    assert any('loads strictly' in line for line in check(str(CONFIG), str(CHECKPOINT)))


def read_frames(path):
    import imageio.v3 as iio
    return iio.imread(path).astype(np.float32) / 255


def test_bare_demo_animates_the_bundled_samples(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / 'demo.py')], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    from toolkit.video_io import read_video_meta
    result, driving = tmp_path / 'result.mp4', BUNDLED / 'driving.mp4'
    assert read_video_meta(result)['fps'] == read_video_meta(driving)['fps']
    frames, driving_frames = read_frames(result), read_frames(driving)
    assert frames.shape == driving_frames.shape  # same frame count, 64x64
    assert read_frames(tmp_path / 'result-preview.gif').shape[0] == len(frames)
    source = read_frames(BUNDLED / 'source.png')

    # frame 0 is the source (relative motion starts from the identity), up to the model's blur ...
    assert np.abs(frames[0] - source).mean() < 0.05
    # ... and the frames change where the driving head moves, not where nothing moves
    driving_motion = np.abs(driving_frames - driving_frames[:1]).max(axis=-1)  # (T, H, W)
    moving, still = driving_motion > 0.2, driving_motion < 0.01
    assert moving.mean() > 0.02 and still.mean() > 0.3
    from_source = np.abs(frames - source).max(axis=-1)
    from_first = np.abs(frames - frames[:1]).max(axis=-1)
    assert from_source[moving].mean() > 2.5 * from_source[still].mean()
    assert from_first[moving].mean() > 0.05 and from_first[moving].mean() > 4 * from_first[still].mean()


@pytest.fixture(scope='module')
def quality(tmp_path_factory):
    """The model card's evaluation (benchmarks/cartoon_quality.py defaults), recomputed from the
    shipped checkpoint on a freshly generated dataset."""
    return cartoon_quality.evaluate(str(CONFIG), str(CHECKPOINT), work=tmp_path_factory.mktemp('quality'),
                                          segmentation_checkpoint=str(BUNDLED / 'segmentation.pth.tar'))


def test_the_model_card_numbers_are_the_checkpoint_s(quality):
    card = json.loads((BUNDLED / 'quality.json').read_text())
    for key in ('reconstruction_l1', 'no_motion_l1', 'keypoint_error_px', 'constant_landmarks_error_px', 'akd_px',
                'no_motion_akd_px', 'aed', 'no_motion_aed'):
        assert quality[key] == pytest.approx(card[key], rel=0.01), key
    assert quality['mkr'] == card['mkr'] and quality['no_motion_mkr'] == card['no_motion_mkr']
    text = (BUNDLED / 'README.md').read_text()
    for key in ('reconstruction_l1', 'no_motion_l1'):
        assert f'{card[key]:.4f}' in text, key
    for key in ('keypoint_error_px', 'constant_landmarks_error_px'):
        assert f'{card[key]:.2f} px' in text, key
    for key in ('akd_px', 'no_motion_akd_px'):
        assert f'{card[key]:.3f} px' in text, key
    for key in ('aed', 'no_motion_aed', 'mkr'):
        assert f'{card[key]:.3f}' in text, key
    assert quality['segmentation_mean_iou'] == pytest.approx(card['segmentation_mean_iou'], rel=0.01)
    assert f"{card['segmentation_mean_iou']:.3f}" in text


def test_the_bundled_segmenter_meets_the_iou_goal(quality):
    assert quality['segmentation_mean_iou'] >= 0.8, quality['segmentation_iou']
    assert set(quality['segmentation_iou']) == set(cartoon_faces.PARTS)


def test_keypoints_track_the_ground_truth_landmarks(quality):
    assert quality['keypoint_error_px'] <= 0.5 * quality['constant_landmarks_error_px'], quality


def test_large_pose_gap_frames_are_the_quarter_that_moves_most(quality):
    assert quality['pose_gap_frames'] == 20 * 64 // 4
    assert quality['pose_gap_no_motion_l1'] > 1.3 * quality['no_motion_l1'], 'those frames are far from the source'
    assert quality['pose_gap_l1'] > 0 and quality['pose_gap_px'] > 1


def test_the_paper_s_metrics_beat_not_moving(quality):
    """With the cartoon extractor: the generated frames' landmarks and identity are closer to the true
    frames' than the source frame's are."""
    assert quality['akd_px'] <= 0.5 * quality['no_motion_akd_px'], quality
    assert quality['aed'] < quality['no_motion_aed'], quality
    assert quality['mkr'] == 0.0


def test_reconstruction_l1_is_at_most_half_the_no_motion_baseline(quality):
    assert quality['reconstruction_l1'] <= 0.5 * quality['no_motion_l1'], quality
    # and on the frames far from their source pose, where the motion has to do the work
    assert quality['pose_gap_l1'] <= 0.5 * quality['pose_gap_no_motion_l1'], quality


@pytest.mark.parametrize('flags', [[], ['--multi_person']])
def test_cartoon_group_photo_without_detectable_faces_is_a_note_not_a_crash(tmp_path, flags):
    """The LBP cascade is tuned for photographs and finds no face in cartoon_faces' drawings: the demo
    says so and animates the whole image with the bundled model (multi_face on photos:
    tests/test_multi_face.py)."""
    import imageio.v3 as iio
    group = np.concatenate([cartoon_faces.make_video(2029, i, 1, 128)[0][0] for i in (1, 3, 5)], axis=1)
    iio.imwrite(tmp_path / 'group.png', group)
    out = subprocess.run([sys.executable, str(REPO / 'demo.py'), '--source_image', 'group.png', *flags],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'no face found in group.png: animating the whole image instead' in out.stderr + out.stdout
    assert 'Traceback' not in out.stderr
    frames = read_frames(tmp_path / 'result.mp4')
    assert frames.shape == read_frames(BUNDLED / 'driving.mp4').shape
