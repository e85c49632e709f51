"""The reconstruction and animate modes (reconstruction.py, animate.py): run.py end to end on generated
videos, the batched animation core against the original's per-frame loop and its outputs, bad input."""
import copy
import csv
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from toolkit.animation import animate, animate_batches, normalize_kp
from toolkit.datasets import FramesDataset
from modules.build import build_models
from modules.checkpoint import load_state
from modules.errors import InputError
from toolkit.reconstruction import reconstruction
from tests.conftest import FIXTURE_DIR, assert_close
from tests.test_train import error_line, run
from tests.video_utils import square_frames, write_folder, write_strip, write_video
from toolkit.video_io import iter_video_frames, read_video_meta

CHECKPOINT = FIXTURE_DIR / 'checkpoint.pth.tar'
SIZE = 64  # the fixture model's frame size
# The test videos, in the dataset's (sorted) order, and their frame counts: different lengths, so
# the frame-weighted reconstruction loss differs from the plain mean of the per-video values.
VIDEOS = {'a#clip.mp4': 9, 'b.png': 5, 'c': 7}
RELATIVE = {'use_relative_movement': True, 'use_relative_jacobian': True, 'adapt_movement_scale': False}


@pytest.fixture(scope='module')
def models(fixture_config):
    models = build_models(fixture_config['model_params'])
    load_state(CHECKPOINT, models)
    return {name: model.eval() for name, model in models.items()}


@pytest.fixture(scope='module')
def dataset_root(tmp_path_factory):
    """test/ with one mp4, one png strip and one frame folder of the moving square."""
    root = tmp_path_factory.mktemp('videos')
    (root / 'test').mkdir()
    write_video(root / 'test' / 'a#clip.mp4', square_frames(VIDEOS['a#clip.mp4'], SIZE, SIZE))
    write_strip(root / 'test' / 'b.png', square_frames(VIDEOS['b.png'], SIZE, SIZE))
    write_folder(root / 'test' / 'c', square_frames(VIDEOS['c'], SIZE, SIZE))
    return root


def write_config(path, fixture_config, root, **sections):
    """The fixture's config pointed at `root`; sections: {name: {key: value}} updates."""
    config = copy.deepcopy(fixture_config)
    config['dataset_params'].update(root_dir=str(root), pairs_list=None, id_sampling=False)
    config['reconstruction_params']['num_videos'] = None
    for name, values in sections.items():
        config[name].update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def per_frame(models, source, driving, normalization_params=None):
    """The original's loop, one driving frame at a time: source (1, C, H, W), driving (1, C, T, H, W)
    -> list of generator outputs (with 'kp_norm' when normalising)."""
    kp_detector, generator = models['kp_detector'], models['generator']
    outs = []
    with torch.no_grad():
        kp_source = kp_detector(source)
        kp_driving_initial = kp_detector(driving[:, :, 0])
        for t in range(driving.shape[2]):
            kp_driving = kp_detector(driving[:, :, t])
            kp_target = kp_driving
            if normalization_params is not None:
                kp_target = normalize_kp(kp_source, kp_driving, kp_driving_initial, **normalization_params)
            out = generator(source, kp_source=kp_source, kp_driving=kp_target)
            out['kp_driving'], out['kp_target'] = kp_driving, kp_target
            outs.append(out)
    return outs


def batched(models, source, driving, normalization_params=None, batch_size=3):
    """animate_batches' outputs concatenated over the batches: {name: (T, ...)}."""
    outs = [out for _, out in animate_batches(models['generator'], models['kp_detector'], source, driving,
                                              normalization_params=normalization_params, batch_size=batch_size)]
    joined = {name: torch.cat([out[name] for out in outs]) for name in ('prediction', 'mask', 'occlusion_map',
                                                                         'deformed')}
    for kp_name in ('kp_source', 'kp_driving', 'kp_norm'):
        if kp_name in outs[0]:
            for key in ('value', 'jacobian'):
                joined[f'{kp_name}/{key}'] = torch.cat([out[kp_name][key] for out in outs])
    return joined


def read_l1_csv(path):
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['video', 'l1']
    return [(name, float(value)) for name, value in rows[1:]]


def count_frames(path):
    return sum(1 for _ in iter_video_frames(path))


# ----------------------------------------------------------------------------------------------
# The batched core
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('normalization_params', [RELATIVE, None], ids=['relative', 'absolute'])
def test_batched_core_equals_per_frame_loop(models, ref, normalization_params):
    """4 frames in batches of 3 (one full, one partial) against the original's per-frame loop."""
    source, driving = ref['inputs/source'], ref['inputs/driving']
    expected = per_frame(models, source, driving, normalization_params)
    got = batched(models, source, driving, normalization_params, batch_size=3)
    for name in ('prediction', 'mask', 'occlusion_map'):
        assert_close(got[name], torch.cat([out[name] for out in expected]), name, atol=1e-5, rtol=0)
    # The source warped by the flow: batched convolutions round the flow differently (~1e-6), and the
    # test image's sharp edges amplify that to ~1e-5 here.
    assert_close(got['deformed'], torch.cat([out['deformed'] for out in expected]), 'deformed', atol=1e-4, rtol=0)
    kp_norm = 'kp_norm' if normalization_params is not None else 'kp_driving'
    assert ('kp_norm/value' in got) == (normalization_params is not None)
    for key in ('value', 'jacobian'):
        assert_close(got[f'{kp_norm}/{key}'], torch.cat([out['kp_target'][key] for out in expected]),
                     f'{kp_norm}/{key}', atol=1e-5, rtol=0)
        assert_close(got[f'kp_driving/{key}'], torch.cat([out['kp_driving'][key] for out in expected]),
                     f'kp_driving/{key}', atol=1e-5, rtol=0)
        assert got[f'kp_source/{key}'].shape[0] == driving.shape[2]


@pytest.mark.parametrize('relative', [True, False], ids=['relative1_adapt1', 'relative0_adapt0'])
def test_batched_core_matches_original_make_animation(models, ref, relative):
    """The original's demo make_animation output (T, H, W, 3): relative movement, relative jacobian
    and adapted scale together, or absolute keypoints."""
    params = {'use_relative_movement': relative, 'use_relative_jacobian': relative, 'adapt_movement_scale': relative}
    got = batched(models, ref['inputs/source'], ref['inputs/driving'], params, batch_size=3)
    expected = ref[f'make_animation/relative{int(relative)}_adapt{int(relative)}']
    assert_close(got['prediction'].permute(0, 2, 3, 1), expected, 'make_animation')


def test_batched_core_takes_frame_batches_and_other_devices_dtypes(models, ref):
    """driving as an iterable of (B, C, H, W) batches (of 1 then 3 frames, and 3 then 1), inputs in
    float64: the original's per-frame loop on the float32 inputs (keypoints relative to the first
    frame of the first batch)."""
    source, driving = ref['inputs/source'], ref['inputs/driving']
    expected = per_frame(models, source, driving, RELATIVE)
    for split in (1, 3):
        chunks = [driving[0, :, :split].transpose(0, 1).double(), driving[0, :, split:].transpose(0, 1).double()]
        outs = list(animate_batches(models['generator'], models['kp_detector'], source.double(), iter(chunks),
                                    RELATIVE))
        assert [frames.shape[0] for frames, _ in outs] == [split, 4 - split]
        assert all(frames.dtype == torch.float32 for frames, _ in outs)  # moved to the models' dtype
        for name in ('prediction', 'occlusion_map'):
            got = torch.cat([out[name] for _, out in outs])
            assert got.dtype == torch.float32
            assert_close(got, torch.cat([out[name] for out in expected]), f'{name} ({split} + {4 - split})',
                         atol=1e-5, rtol=0)
        for key in ('value', 'jacobian'):
            assert_close(torch.cat([out['kp_norm'][key] for _, out in outs]),
                         torch.cat([out['kp_target'][key] for out in expected]),
                         f'kp_norm/{key} ({split} + {4 - split})', atol=1e-5, rtol=0)
    assert not torch.is_inference_mode_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_batched_core_on_cuda_matches_cpu(fixture_config, models, ref):
    """Models on the GPU, inputs on the CPU: moved at the boundary, the same predictions as the
    original's per-frame loop on the CPU and as its make_animation output (relative movement and
    jacobian, adapted scale)."""
    cuda_models = build_models(fixture_config['model_params'], device='cuda')
    load_state(CHECKPOINT, cuda_models)
    cuda_models = {name: model.eval() for name, model in cuda_models.items()}
    got = batched(cuda_models, ref['inputs/source'], ref['inputs/driving'], RELATIVE)
    assert got['prediction'].device.type == 'cuda'
    expected = per_frame(models, ref['inputs/source'], ref['inputs/driving'], RELATIVE)
    assert_close(got['prediction'].cpu(), torch.cat([out['prediction'] for out in expected]), 'prediction')
    adapted = {'use_relative_movement': True, 'use_relative_jacobian': True, 'adapt_movement_scale': True}
    got = batched(cuda_models, ref['inputs/source'], ref['inputs/driving'], adapted)
    assert_close(got['prediction'].permute(0, 2, 3, 1).cpu(), ref['make_animation/relative1_adapt1'], 'make_animation')


# ----------------------------------------------------------------------------------------------
# run.py end to end
# ----------------------------------------------------------------------------------------------

def checkpoint_in_run_folder(tmp_path):
    """The fixture checkpoint copied into a run folder, as run.py --mode train leaves them."""
    folder = tmp_path / 'vox-256 01_01_26_00.00.00'
    folder.mkdir()
    return Path(shutil.copy(CHECKPOINT, folder / '00000009-checkpoint.pth.tar'))


def test_reconstruction_end_to_end(models, fixture_config, dataset_root, tmp_path):
    config = write_config(tmp_path / 'tiny.yaml', fixture_config, dataset_root)
    checkpoint = checkpoint_in_run_folder(tmp_path)
    result = run('--config', config, '--mode', 'reconstruction', '--checkpoint', checkpoint,
                 '--log_dir', tmp_path / 'log', '--cpu')
    assert result.returncode == 0, result.stderr[-3000:]
    # The original's contract: "the reconstruction subfolder will be created in the checkpoint folder"
    out_dir = checkpoint.parent / 'reconstruction'
    assert not (tmp_path / 'log').exists() and result.stdout.strip() == f'done: {checkpoint.parent}'
    assert (checkpoint.parent / 'tiny.yaml').is_file()  # the config copied beside it, as the original
    assert 'Reconstruction loss: ' in result.stderr

    # The same videos through the original's per-frame loop, in this process.
    dataset = FramesDataset(is_train=False, **yaml.safe_load(config.read_text())['dataset_params'])
    assert dataset.videos == list(VIDEOS)
    expected_l1, all_frames = {}, []
    for item in dataset:
        video = torch.from_numpy(item['video'])[None]  # (1, C, T, H, W)
        outs = per_frame(models, video[:, :, 0], video)
        l1 = [torch.abs(out['prediction'] - video[:, :, t]).mean().item() for t, out in enumerate(outs)]
        expected_l1[item['name']] = np.mean(l1)
        all_frames.extend(l1)

        num_frames = VIDEOS[item['name']]
        strip = iio.imread(out_dir / 'png' / f'{item["name"]}.png')
        assert strip.shape == (SIZE, num_frames * SIZE, 3) and strip.dtype == np.uint8
        prediction = torch.cat([out['prediction'] for out in outs]).permute(0, 2, 3, 1).numpy()  # (T, H, W, 3)
        expected_strip = (255 * np.concatenate(list(prediction), axis=1)).astype(np.uint8)
        # Truncation to uint8 may flip a value by 1 where batching changes the last float bits.
        assert np.abs(strip.astype(int) - expected_strip).max() <= 1

        visualisation = out_dir / f'{item["name"]}.mp4'
        meta = read_video_meta(visualisation)
        # source, driving, deformed, prediction, occlusion map (the sparse-deformed columns are dropped)
        assert meta['size'] == (5 * SIZE, SIZE) and meta['fps'] == 10
        assert count_frames(visualisation) == num_frames

    rows = read_l1_csv(out_dir / 'l1.csv')
    assert [name for name, _ in rows] == list(VIDEOS) + ['mean']
    for name, value in rows[:-1]:
        assert value == pytest.approx(expected_l1[name], abs=1e-5)
    assert rows[-1][1] == pytest.approx(np.mean(all_frames), abs=1e-5)  # over all frames, as the original
    assert rows[-1][1] != pytest.approx(np.mean(list(expected_l1.values())), abs=1e-9)
    assert not [p for p in out_dir.rglob('*') if '.tmp' in p.name]


def test_animate_end_to_end(fixture_config, dataset_root, tmp_path):
    pairs = tmp_path / 'pairs.csv'
    pairs.write_text('source,driving\nb.png,a#clip.mp4\nc,b.png\nnot-there.mp4,c\n')
    config = write_config(tmp_path / 'tiny.yaml', fixture_config, dataset_root,
                          dataset_params={'pairs_list': str(pairs)}, animate_params={'num_pairs': 5})
    checkpoint = checkpoint_in_run_folder(tmp_path)
    result = run('--config', config, '--mode', 'animate', '--checkpoint', checkpoint,
                 '--log_dir', tmp_path / 'log', '--cpu')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'not-there.mp4' in result.stderr  # the unknown pair is skipped with a warning
    out_dir = checkpoint.parent / 'animation'  # in the checkpoint's folder, as the original
    assert not (tmp_path / 'log').exists()
    expected = {'a#clip.mp4-b.png': VIDEOS['a#clip.mp4'], 'b.png-c': VIDEOS['b.png']}  # '<driving>-<source>'
    assert sorted(p.name for p in (out_dir / 'png').iterdir()) == sorted(f'{n}.png' for n in expected)
    assert sorted(p.name for p in out_dir.glob('*.mp4')) == sorted(f'{n}.mp4' for n in expected)
    for name, num_frames in expected.items():
        assert iio.imread(out_dir / 'png' / f'{name}.png').shape == (SIZE, num_frames * SIZE, 3)
        meta = read_video_meta(out_dir / f'{name}.mp4')
        assert meta['size'] == (6 * SIZE, SIZE)  # + the prediction with kp_norm drawn
        assert count_frames(out_dir / f'{name}.mp4') == num_frames


# ----------------------------------------------------------------------------------------------
# In-process calls: checkpoint contract, num_videos, gif, bad input
# ----------------------------------------------------------------------------------------------

def test_reconstruction_loads_checkpoint_and_caps_videos_gif(models, fixture_config, dataset_root, tmp_path):
    """Fresh (untrained) models + the checkpoint path give the trained models' numbers; num_videos
    is honoured exactly; .gif visualisations at 10 fps."""
    config = copy.deepcopy(fixture_config)
    config['dataset_params'].update(root_dir=str(dataset_root), pairs_list=None, id_sampling=False)
    config['reconstruction_params'].update(num_videos=1, format='.gif')
    dataset = FramesDataset(is_train=False, **config['dataset_params'])
    fresh = build_models(config['model_params'])
    loss = reconstruction(config, fresh['generator'], fresh['kp_detector'], str(CHECKPOINT), str(tmp_path), dataset)

    video = torch.from_numpy(dataset[0]['video'])[None]
    outs = per_frame(models, video[:, :, 0], video)
    expected = np.mean([torch.abs(out['prediction'] - video[:, :, t]).mean().item() for t, out in enumerate(outs)])
    assert loss == pytest.approx(expected, abs=1e-5)
    out_dir = tmp_path / 'reconstruction'
    assert [name for name, _ in read_l1_csv(out_dir / 'l1.csv')] == ['a#clip.mp4', 'mean']
    gif = out_dir / 'a#clip.mp4.gif'
    assert iio.imread(gif, index=None).shape == (VIDEOS['a#clip.mp4'], SIZE, 5 * SIZE, 3)
    assert iio.immeta(gif)['duration'] == 100
    assert sorted(p.name for p in out_dir.iterdir()) == ['a#clip.mp4.gif', 'l1.csv', 'png']


def test_animate_pairs_naming_no_video_writes_nothing(models, fixture_config, dataset_root, tmp_path):
    pairs = tmp_path / 'pairs.csv'
    pairs.write_text('source,driving\nx.mp4,y.mp4\n')
    params = dict(fixture_config['dataset_params'], root_dir=str(dataset_root), pairs_list=str(pairs),
                  id_sampling=False)
    dataset = FramesDataset(is_train=False, **params)
    with pytest.raises(InputError, match='none of its 1 pairs'):
        animate(fixture_config, models['generator'], models['kp_detector'], None, str(tmp_path / 'log'), dataset)
    assert not (tmp_path / 'log').exists()


@pytest.mark.parametrize('mode', ['reconstruction', 'animate'])
def test_empty_test_folder_is_one_line_error(fixture_config, tmp_path, mode):
    root = tmp_path / 'empty'
    (root / 'test').mkdir(parents=True)
    config = write_config(tmp_path / 'tiny.yaml', fixture_config, root)
    checkpoint = checkpoint_in_run_folder(tmp_path)
    result = run('--config', config, '--mode', mode, '--checkpoint', checkpoint, '--log_dir', tmp_path / 'log',
                 '--cpu')
    line = error_line(result)
    assert 'no videos found' in line and str(root / 'test') in line
    assert not (tmp_path / 'log').exists()
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [checkpoint.name]  # nothing written
