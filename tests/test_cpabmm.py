"""CPABMM (motion_model: cpab): its configs, the dense motion network with K + 2 CPAB transforms, and
run.py train / train_avd / reconstruction / animate plus demo.py with a CPABMM config."""
import numpy as np
import pytest
import torch
import yaml

from modules.build import build_models, model_names
from modules.config import ConfigError, load_config, motion_model, validate_config
from modules.families import family_of
from modules.tpsmm.training import TpsTraining
from modules.cpabmm import CpabDenseMotionNetwork
from modules.util import make_coordinate_grid
from tests.conftest import REPO
from tests.test_tpsmm_run import log_lines, tps_config
from tests.test_train import error_line, make_dataset, run

CONFIGS = ['vox-256', 'taichi-256', 'ted-384', 'mgif-256', 'cartoon-64']


@pytest.mark.parametrize('name', CONFIGS)
def test_shipped_configs_are_cpabmms(name):
    config = load_config(REPO / 'config' / f'cpabmm-{name}.yaml')
    model = config['model_params']
    assert motion_model(model) == 'cpab' and issubclass(family_of(model).training, TpsTraining)
    assert model['dense_motion_params']['max_iter'] == (200 if name == 'taichi-256' else 100)
    weights = config['train_params']['loss_weights']
    assert weights['structure'] == 0 and weights['sam'] == 0 and not config['train_params']['use_vit_loss']
    dense = build_models(model, names=['dense_motion_network'], device='meta')['dense_motion_network']
    K = model['common_params']['num_cpab']
    assert isinstance(dense, CpabDenseMotionNetwork) and dense.num_transforms == K + 2
    assert dense.maps.out_channels == K + 2
    assert dense.hourglass.encoder.down_blocks[0].conv.in_channels == 3 * (K + 2) + 5 * K + 1
    assert (dense.partial.d, dense.global_cpab.d) == (58, 130)


# CPABMM's released vox-256.yaml: its keys and values (frame_shape null, K named num_tps, max_iter,
# sam_model_path / use_vit_loss, loss weight sam), as a user would pass the file.
CPABMM_VOX = """
dataset_params:
  root_dir: path_to_vox_dataset
  frame_shape: null
  id_sampling: True
  augmentation_params:
    flip_param: {horizontal_flip: True, time_flip: True}
    jitter_param: {brightness: 0.1, contrast: 0.1, saturation: 0.1, hue: 0.1}
model_params:
  common_params: {num_tps: 10, num_channels: 3, bg: True, multi_mask: True}
  generator_params: {block_expansion: 64, max_features: 512, num_down_blocks: 3}
  dense_motion_params: {block_expansion: 64, max_features: 1024, num_blocks: 5, scale_factor: 0.25, max_iter: 100}
  avd_network_params: {id_bottle_size: 128, pose_bottle_size: 128}
train_params:
  num_epochs: 100
  num_repeats: 75
  epoch_milestones: [70, 90]
  lr_generator: 1.0e-4
  batch_size: 8
  sam_model_path: path_to_sam_model
  use_vit_loss: True
  scales: [1, 0.5, 0.25, 0.125]
  dataloader_workers: 12
  checkpoint_freq: 50
  dropout_epoch: 35
  dropout_maxp: 0.3
  dropout_startp: 0.1
  dropout_inc_epoch: 10
  bg_start: 10
  transform_params: {sigma_affine: 0.05, sigma_tps: 0.005, points_tps: 5}
  loss_weights: {perceptual: [10, 10, 10, 10, 10], equivariance_value: 10, warp_loss: 10, bg: 10, sam: 1}
train_avd_params:
  num_epochs: 200
  num_repeats: 300
  batch_size: 256
  dataloader_workers: 24
  checkpoint_freq: 50
  epoch_milestones: [140, 180]
  lr: 1.0e-3
  lambda_shift: 1
  random_scale: 0.25
visualizer_params: {kp_size: 5, draw_border: True, colormap: 'gist_rainbow'}
"""


def test_cpabmms_released_config_is_read_as_cpab(tmp_path):
    path = tmp_path / 'vox-256.yaml'
    path.write_text(CPABMM_VOX)
    config = load_config(path)
    assert motion_model(config['model_params']) == 'cpab'
    assert config['dataset_params']['frame_shape'] == [256, 256, 3]
    assert config['train_params']['loss_weights']['structure'] == 0.1, "CPABMM's lambda_str"
    models = build_models(config['model_params'], device='meta')
    assert models['kp_detector'].num_tps == 10 and models['dense_motion_network'].num_cpab == 10
    assert set(models) == set(model_names(config['model_params']))
    # training it needs the ViT weights it names (none here): one line, no traceback
    make_dataset(tmp_path / 'data', 'folder', num_videos=2)
    path.write_text(CPABMM_VOX.replace('path_to_vox_dataset', str(tmp_path / 'data'))
                    .replace('  use_vit_loss: True', '  use_vit_loss: True\n  vgg19_weights: portable'))
    out = run('--config', path, '--mode', 'train', '--log_dir', tmp_path / 'log', '--cpu')
    assert 'vit_weights' in error_line(out)


@pytest.mark.parametrize('change, message', [
    (lambda c: c['model_params']['common_params'].update(num_tps=10), 'not both'),
    (lambda c: c['model_params']['common_params'].pop('num_cpab'), 'not neither'),
    (lambda c: c['model_params']['dense_motion_params'].update(fit='lbfgs'), "expected one of ['gauss_newton', 'adam']"),
    (lambda c: c['model_params'].update(motion_model='fomm'), "are those of 'cpab'"),
    (lambda c: c['model_params']['dense_motion_params'].update(max_iters=5), "did you mean 'max_iter'"),
])
def test_config_mistakes_are_one_line(change, message):
    config = yaml.safe_load((REPO / 'config' / 'cpabmm-cartoon-64.yaml').read_text())
    change(config)
    with pytest.raises(ConfigError, match=message.replace('[', r'\[').replace(']', r'\]')):
        validate_config(config)


def dense_motion(**kwargs):
    torch.manual_seed(0)
    return CpabDenseMotionNetwork(block_expansion=8, num_blocks=2, max_features=32, num_cpab=2, num_channels=3,
                                  scale_factor=0.5, multi_mask=False, **kwargs).eval()


def test_equal_keypoints_give_identity_transforms():
    net = dense_motion()
    kp = {'fg_kp': torch.rand(2, 10, 2) * 1.6 - 0.8}
    source = torch.rand(2, 3, 32, 32)
    grids = net.create_transformations(net.down(source), kp, kp, None)
    identity = make_coordinate_grid((16, 16)).expand(2, 4, 16, 16, 2)
    assert grids.shape == (2, 4, 16, 16, 2)
    assert torch.allclose(grids, identity, atol=1e-6)


@pytest.mark.parametrize('fit', ['gauss_newton', 'adam'])
def test_the_transforms_carry_driving_keypoints_onto_source_keypoints(fit):
    """Each partial CPAB maps its 5 driving keypoints to the source's (fitted), so the grid of transform
    k, read at a driving keypoint of group k (placed on a grid point), holds the source keypoint."""
    net = dense_motion(fit=fit, max_iter=100)
    g = torch.Generator().manual_seed(1)
    inner = make_coordinate_grid((32, 32))[4:-4, 4:-4].reshape(-1, 2)
    driving = inner[torch.randperm(len(inner), generator=g)[:20]].view(2, 10, 2)
    A = torch.eye(2) + 0.15 * torch.randn(2, 2, 2, generator=g)
    source = driving @ A.transpose(1, 2) + 0.05 * torch.randn(2, 1, 2, generator=g) \
        + 0.02 * torch.randn(2, 10, 2, generator=g)
    image = torch.rand(2, 3, 64, 64)
    out = net(image, {'fg_kp': driving}, {'fg_kp': source})
    grids = net.create_transformations(net.down(image), {'fg_kp': driving}, {'fg_kp': source}, None)
    errors = []
    for k in range(2):
        field = grids[:, 1 + k].permute(0, 3, 1, 2)  # (B, 2, h, w): source position per driving pixel
        at_kp = torch.nn.functional.grid_sample(field, driving[:, 5 * k:5 * k + 5, None], align_corners=True)
        errors.append((at_kp[..., 0].permute(0, 2, 1) - source[:, 5 * k:5 * k + 5]).abs().max())
    # CPABMM's 100 Adam steps do not get as close
    assert max(errors) < (1e-3 if fit == 'gauss_newton' else 0.1), errors
    assert out['contribution_maps'].shape == (2, 4, 32, 32) and out['deformation'].shape == (2, 32, 32, 2)


def test_keypoints_that_coincide_but_move_apart_give_finite_grids():
    net = dense_motion()
    driving = torch.zeros(2, 10, 2)  # every keypoint on one spot ...
    source = torch.rand(2, 10, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1  # ... sent everywhere
    out = net(torch.rand(2, 3, 32, 32), {'fg_kp': driving}, {'fg_kp': source}, dropout_flag=True, dropout_p=0.5)
    assert all(torch.isfinite(v).all() for v in (out['deformation'], out['contribution_maps'], *out['occlusion_map']))


def test_no_gradient_reaches_the_keypoints_through_the_transforms():
    net = dense_motion()
    driving = (torch.rand(1, 10, 2) - 0.5).requires_grad_()
    source = (torch.rand(1, 10, 2) - 0.5).requires_grad_()
    grids = net.create_transformations(torch.rand(1, 3, 16, 16), {'fg_kp': driving}, {'fg_kp': source}, None)
    assert not grids.requires_grad, "as CPABMM: theta is fitted on detached keypoints"


@pytest.mark.parametrize('fit', ['gauss_newton', 'adam'])
def test_inference_fits_each_frame_on_its_own(fit):
    """Under inference_mode (demo.py, reconstruction) both fits run, and a frame's transforms do not
    depend on the other frames of its batch."""
    net = dense_motion(fit=fit, max_iter=20)
    g = torch.Generator().manual_seed(2)
    source = {'fg_kp': (torch.rand(1, 10, 2, generator=g) - 0.5).expand(3, -1, -1)}
    driving = {'fg_kp': source['fg_kp'] + 0.05 * torch.randn(3, 10, 2, generator=g)}
    image = torch.rand(3, 3, 16, 16)
    with torch.inference_mode():
        together = net.create_transformations(image, driving, source, None)
        alone = torch.cat([net.create_transformations(image[i:i + 1], {'fg_kp': driving['fg_kp'][i:i + 1]},
                                                      {'fg_kp': source['fg_kp'][i:i + 1]}, None) for i in range(3)])
    assert (together - alone).abs().max() < (2e-3 if fit == 'gauss_newton' else 0.02)  # float32 rounding


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Three epochs of CPABMM training on the TPSMM fixture's tiny architecture."""
    tmp_path = tmp_path_factory.mktemp('cpab-run')
    root = make_dataset(tmp_path / 'data', 'mp4', num_videos=3, num_frames=12)
    path = tps_config(tmp_path, root, epochs=3)
    config = yaml.safe_load(path.read_text())
    config['model_params']['motion_model'] = 'cpab'
    config['model_params']['common_params']['num_cpab'] = config['model_params']['common_params'].pop('num_tps')
    config['model_params']['dense_motion_params']['fit_iterations'] = 5
    path = tmp_path / 'tiny-cpab.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = run('--config', path, '--mode', 'train', '--log_dir', tmp_path / 'log', '--cpu', '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-3000:]
    folder = next(p for p in (tmp_path / 'log').iterdir() if p.is_dir())
    return dict(tmp_path=tmp_path, config=path, folder=folder)


def test_train_learns_and_saves_tpsmms_layout(trained):
    rows = log_lines(trained['folder'])
    assert [epoch for epoch, _ in rows] == [0, 1, 2]
    assert rows[-1][1]['perceptual'] < rows[0][1]['perceptual'], rows
    from modules.checkpoint import read_checkpoint
    checkpoint = read_checkpoint(trained['folder'] / '00000002-checkpoint.pth.tar')
    assert {'inpainting_network', 'dense_motion_network', 'kp_detector', 'optimizer'} <= set(checkpoint)
    assert checkpoint['dense_motion_network']['maps.weight'].shape[0] == 3 + 2


@pytest.mark.parametrize('mode,folder', [('reconstruction', 'reconstruction'), ('animate', 'animation')])
def test_reconstruction_and_animate_modes(trained, tmp_path, mode, folder):
    out = run('--config', trained['config'], '--mode', mode, '--checkpoint',
              trained['folder'] / '00000002-checkpoint.pth.tar', '--log_dir', tmp_path / 'log', '--cpu',
              '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-3000:]
    run_folder = trained['folder']  # the checkpoint's folder, as the original
    assert not (tmp_path / 'log').exists()
    assert len(list((run_folder / folder / 'png').glob('*.png'))) == 2


def test_train_avd_and_the_demo_in_every_mode(trained, tmp_path):
    out = run('--config', trained['config'], '--mode', 'train_avd', '--checkpoint',
              trained['folder'] / '00000002-checkpoint.pth.tar', '--log_dir', tmp_path / 'log', '--cpu',
              '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-3000:]
    folder = next(p for p in (tmp_path / 'log').iterdir() if p.is_dir())
    checkpoint = sorted(folder.glob('*-checkpoint.pth.tar'))[-1]
    from tests.video_utils import write_video
    source = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    import imageio.v3 as iio
    iio.imwrite(tmp_path / 'source.png', source)
    write_video(str(tmp_path / 'driving.mp4'), [np.roll(source, 3 * t, axis=1) for t in range(6)])
    from toolkit.video_io import read_video_meta
    for mode in ('standard', 'relative', 'avd'):
        result = tmp_path / f'{mode}.mp4'
        out = __import__('subprocess').run(
            [__import__('sys').executable, 'demo.py', '--config', str(trained['config']), '--checkpoint',
             str(checkpoint), '--source_image', str(tmp_path / 'source.png'), '--driving_video',
             str(tmp_path / 'driving.mp4'), '--result_video', str(result), '--mode', mode, '--cpu'],
            cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        assert read_video_meta(result)['nframes'] == 6


def test_train_avd_refuses_an_fomm_config(tmp_path):
    out = run('--config', 'config/cartoon-64.yaml', '--mode', 'train_avd', '--checkpoint',
              'pretrained/cartoon-64/cartoon-64.pth.tar', '--log_dir', tmp_path / 'log', '--cpu')
    assert 'TPSMM / CPABMM' in error_line(out)
