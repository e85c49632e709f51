"""The motion-family registry: the built-in families' entries agree with what they build and load, and
a fourth family (tests/dummy_family: one package plus one register call) runs `run.py --mode
reconstruction` and `demo.py` without any change to the toolkit. The dummy's outputs are checked
against an independent computation of its motion (a shift of the whole source by the keypoint's
displacement, done here with numpy)."""
import subprocess
import sys
import textwrap

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from modules.build import build_models
from modules.config import CONFIG_DIR, load_config
from modules.families import REGISTRY, family_named, family_of
from tests import dummy_family
from tests.conftest import REPO
from toolkit.video_io import iter_video_frames, read_video_meta

SIZE = 32


@pytest.mark.parametrize('path', sorted(CONFIG_DIR.glob('*.yaml')), ids=lambda p: p.stem)
def test_every_official_config_has_a_family_that_builds_its_networks(path):
    config = load_config(path)
    family = family_of(config['model_params'])
    assert family is family_named(family.name) and family.name in REGISTRY
    names = family.model_names(config['model_params'])
    models = build_models(config['model_params'], device='meta')
    assert list(models) == list(names) and set(names) <= set(family.checkpoint_names)
    assert set(family.demo_models) <= set(family.checkpoint_names) and set(family.optional) <= set(names) | {
        'avd_network', 'bg_predictor'}
    assert set(family.trained_apart) <= set(names)


def test_the_family_is_recognised_from_the_originals_keys():
    fomm = load_config(CONFIG_DIR / 'vox-256.yaml')['model_params']
    tps = load_config(CONFIG_DIR / 'tpsmm-vox-256.yaml')['model_params']
    cpab = load_config(CONFIG_DIR / 'cpabmm-cartoon-64.yaml')['model_params']
    for model_params, title in ((fomm, 'FOMM'), (tps, 'TPSMM'), (cpab, 'CPABMM')):
        without = {k: v for k, v in model_params.items() if k != 'motion_model'}
        assert family_of(without).title == title


def square_video(frames=6):
    """A bright square moving right and down on a dark background, (T, SIZE, SIZE, 3) float in [0, 1]."""
    video = np.full((frames, SIZE, SIZE, 3), 0.1, np.float32)
    for t in range(frames):
        video[t, 8 + t:16 + t, 6 + 2 * t:14 + 2 * t] = (0.9, 0.7, 0.3)
    return video


def shifted(source, kp_source, kp_driving):
    """The dummy's motion computed independently: every output pixel (x, y) takes the source's pixel at
    (x, y) - displacement, bilinear, the border repeated; keypoints in [-1, 1] units."""
    height, width = source.shape[:2]
    dx, dy = (np.asarray(kp_driving) - np.asarray(kp_source)) * (np.array([width, height]) - 1) / 2
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
    x = np.clip(xs - dx, 0, width - 1)
    y = np.clip(ys - dy, 0, height - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = source[y0, x0] * (1 - fx) + source[y0, x1] * fx
    bottom = source[y1, x0] * (1 - fx) + source[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.fixture(scope='module')
def dummy(tmp_path_factory):
    """A config, a checkpoint and a dataset of the dummy family (registered in this process too, for
    this module's tests only)."""
    family = dummy_family.install()
    root = tmp_path_factory.mktemp('dummy')
    video = square_video()
    for split in ('train', 'test'):
        folder = root / 'data' / split / 'square'
        folder.mkdir(parents=True)
        for t, frame in enumerate(video):
            iio.imwrite(folder / f'{t:07d}.png', (frame * 255).round().astype(np.uint8))
    config = {'dataset_params': {'root_dir': str(root / 'data'), 'frame_shape': [SIZE, SIZE, 3]},
              'model_params': {'motion_model': family.name, 'common_params': {'num_channels': 3},
                               'shift_params': {'temperature': 0.05}},
              'reconstruction_params': {'num_videos': None, 'format': '.gif'}}
    config_path = root / 'shift.yaml'
    config_path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    models = build_models(load_config(config_path)['model_params'])
    with torch.no_grad():  # the heat map follows the square's brightness
        models['kp_detector'].heat.weight.copy_(torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1) * 10)
        models['kp_detector'].heat.bias.zero_()
    checkpoint = root / 'shift.pth.tar'
    torch.save({name: model.state_dict() for name, model in models.items()}, checkpoint)
    yield {'root': root, 'config': config_path, 'checkpoint': checkpoint, 'video': video,
           'models': {name: model.eval() for name, model in models.items()}}
    REGISTRY.pop(family.name)


def run_script(script, *args, cwd=REPO):
    """Runs a top-level script as a command in a fresh process that first registers the dummy family."""
    code = textwrap.dedent(f'''
        import runpy, sys
        from tests import dummy_family
        dummy_family.install()
        sys.argv = [{script!r}, *{[str(a) for a in args]!r}]
        runpy.run_path({script!r}, run_name='__main__')
    ''')
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, capture_output=True, text=True, timeout=300)


def keypoints(dummy, frames):
    with torch.no_grad():
        return dummy['models']['kp_detector'](torch.from_numpy(frames).permute(0, 3, 1, 2))['value'][:, 0].numpy()


def test_reconstruction_runs_with_a_registered_dummy_family(dummy):
    out = run_script('run.py', '--config', dummy['config'], '--mode', 'reconstruction', '--checkpoint',
                     dummy['checkpoint'], '--cpu', '--num_workers', '0')
    assert out.returncode == 0, out.stderr[-2000:]
    folder = dummy['root'] / 'reconstruction'
    strip = iio.imread(folder / 'png' / 'square.png').astype(np.float32) / 255  # (SIZE, T * SIZE, 3)
    video = dummy['video']
    # the frames the dataset hands the model: the PNGs as written (uint8)
    frames = np.round(video * 255) / 255
    kp = keypoints(dummy, frames.astype(np.float32))
    assert np.abs(kp[-1] - kp[0]).max() > 0.2  # the keypoint follows the square
    for t in range(len(video)):
        expected = shifted(frames[0], kp[0], kp[t])
        got = strip[:, t * SIZE:(t + 1) * SIZE]
        assert np.abs(got - expected).max() <= 1.5 / 255 + 1e-3, t  # the strip truncates to uint8
    assert (folder / 'l1.csv').is_file() and (folder / 'square.gif').is_file()


def test_demo_runs_with_a_registered_dummy_family(dummy, tmp_path):
    video = dummy['video']
    source_path, driving_path = tmp_path / 'source.png', tmp_path / 'driving.mp4'
    iio.imwrite(source_path, (video[2] * 255).round().astype(np.uint8))
    iio.imwrite(driving_path, (video * 255).round().astype(np.uint8), fps=5, codec='libx264', quality=10,
                macro_block_size=1)
    result = tmp_path / 'result.mp4'
    out = run_script('demo.py', '--config', dummy['config'], '--checkpoint', dummy['checkpoint'], '--source_image',
                     source_path, '--driving_video', driving_path, '--result_video', result, '--cpu',
                     '--face_detector', 'none')
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_video_meta(result)['size'] == (SIZE, SIZE)
    got = np.stack(list(iter_video_frames(result))).astype(np.float32) / 255
    driving = np.stack(list(iter_video_frames(driving_path))).astype(np.float32) / 255
    assert len(got) == len(driving) == len(video)
    source = iio.imread(source_path).astype(np.float32) / 255
    kp_source = keypoints(dummy, source[None])[0]
    kp_driving = keypoints(dummy, driving)
    expected = np.stack([shifted(source, kp_source, kp) for kp in kp_driving])
    psnr = 10 * np.log10(1 / np.mean((got - expected) ** 2))
    assert psnr > 30, psnr  # H.264 at quality 8
    still = np.stack([source] * len(got))
    assert np.mean((got - expected) ** 2) < np.mean((got - still) ** 2) / 4  # it did move


def test_run_py_refuses_to_train_a_family_without_training(dummy):
    out = run_script('run.py', '--config', dummy['config'], '--mode', 'train', '--cpu', '--log_dir',
                     dummy['root'] / 'log')
    assert out.returncode == 2 and 'a family without training' in out.stderr.strip().splitlines()[-1]
