"""logger.py: the original's log.txt / checkpoint / train-vis layout, atomic writes, strict loading,
and the visualisation grid (columns, keypoint and mask colours, border, uint8 conversion)."""
import copy
import logging
import re

import imageio.v3 as iio
import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from toolkit.logger import Logger, Visualizer
from modules.checkpoint import save_checkpoint
from modules.errors import CheckpointError, ConfigError, OutputError

B, H, W, K = 2, 32, 32, 3
LINE = re.compile(r'^\d{8}\) (\w+ - \d+\.\d{5})(; \w+ - \d+\.\d{5})*$')
ORIGINAL_KEYS = ['generator', 'discriminator', 'kp_detector', 'optimizer_generator', 'optimizer_discriminator',
                 'optimizer_kp_detector', 'epoch']
CMAP = matplotlib.colormaps['gist_rainbow']


def make_models(seed=0, generator_width=3):
    """Small real modules + Adam optimizers (one step taken, so the optimizers hold moment buffers)."""
    torch.manual_seed(seed)
    models = {'generator': nn.Conv2d(3, generator_width, 3), 'discriminator': nn.Conv2d(3, 1, 3),
              'kp_detector': nn.Linear(4, 2 * K)}
    opts = {f'optimizer_{name}': torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    for name, module in models.items():
        sum(p.square().sum() for p in module.parameters()).backward()
        opts[f'optimizer_{name}'].step()
    return {**models, **opts}


def fake_batch(seed=0, num_kp=K):
    """A batch and a generator output with every key the visualiser knows (except kp_norm)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def kp():
        return {'value': rand(B, num_kp, 2) * 2 - 1}

    inp = {'source': rand(B, 3, H, W), 'driving': rand(B, 3, H, W)}
    out = {'kp_source': kp(), 'kp_driving': kp(), 'transformed_frame': rand(B, 3, H, W), 'transformed_kp': kp(),
           'deformed': rand(B, 3, H, W), 'prediction': rand(B, 3, H, W), 'occlusion_map': rand(B, 1, 8, 8),
           'sparse_deformed': rand(B, num_kp + 1, 3, 8, 8),
           'mask': torch.softmax(torch.randn(B, num_kp + 1, 8, 8, generator=g), dim=1)}
    return inp, out


def expected_columns(out):
    """The original's rule: source, driving and prediction always; one column each for
    transformed_frame, deformed, kp_norm, occlusion_map; 2 per sparse_deformed map + their sum."""
    n = 3 + sum(key in out for key in ('transformed_frame', 'deformed', 'kp_norm', 'occlusion_map'))
    if 'sparse_deformed' in out:
        n += 2 * out['sparse_deformed'].shape[1] + 1
    return n


def hidden_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith('.'))


def test_training_run_writes_the_original_layout(tmp_path, caplog):
    log_dir = tmp_path / 'log' / 'run'
    models = make_models()
    inp, out = fake_batch()
    rng = np.random.default_rng(0)
    expected_means = []
    with caplog.at_level(logging.INFO, logger='toolkit.logger'):
        with Logger(log_dir, checkpoint_freq=2, visualizer_params={'kp_size': 2}) as logger:
            assert (log_dir / 'train-vis').is_dir()
            for epoch in range(3):
                raw = rng.uniform(0, 50, size=(4, 3))
                for it, (a, b, c) in enumerate(raw):
                    losses = {'perceptual': float(a), 'equivariance_value': np.float32(b), 'gen_gan': torch.tensor(c)}
                    if it == 2:  # another order: values must follow their names
                        losses = dict(reversed(list(losses.items())))
                    logger.log_iter(losses)
                as_logged = np.stack([raw[:, 0], raw[:, 1].astype(np.float32), raw[:, 2].astype(np.float32)], 1)
                expected_means.append([sum(col) / len(col) for col in as_logged.T.tolist()])
                logger.log_epoch(epoch, models, inp, out, extra=f'speed summary {epoch}')
            # (epoch + 1) % 2 == 0 -> epoch 1 only, until the exit
            assert sorted(p.name for p in log_dir.glob('*.pth.tar')) == ['00000001-checkpoint.pth.tar']
        assert logger.log_file is None  # closed on exit

    # log.txt: the original format only, means over each epoch's iterations
    lines = (log_dir / 'log.txt').read_text().splitlines()
    assert len(lines) == 3
    for epoch, (line, means) in enumerate(zip(lines, expected_means)):
        assert LINE.match(line), line
        assert line.startswith(f'{epoch:08d}) ')
        pairs = [item.split(' - ') for item in line.split(') ', 1)[1].split('; ')]
        assert [name for name, _ in pairs] == ['perceptual', 'equivariance_value', 'gen_gan']
        for (_, value), mean in zip(pairs, means):
            assert abs(float(value) - mean) <= 5e-6 + 1e-9, (line, means)
    assert 'speed summary 1' in caplog.text  # extra goes through logging ...
    assert 'speed' not in (log_dir / 'log.txt').read_text()  # ... never into log.txt

    # checkpoints: epoch 1 by frequency, epoch 2 on exit; original keys; final weights
    names = sorted(p.name for p in log_dir.glob('*.pth.tar'))
    assert names == ['00000001-checkpoint.pth.tar', '00000002-checkpoint.pth.tar']
    for name, epoch in zip(names, (1, 2)):
        saved = torch.load(log_dir / name, map_location='cpu', weights_only=True)
        assert list(saved) == ORIGINAL_KEYS
        assert saved['epoch'] == epoch
        assert torch.equal(saved['generator']['weight'], models['generator'].weight)
    assert hidden_files(log_dir) == [] and hidden_files(log_dir / 'train-vis') == []

    # train-vis: one PNG per epoch, (H * B) x (W * columns), the visualiser's exact pixels
    pngs = sorted(p.name for p in (log_dir / 'train-vis').iterdir())
    assert pngs == [f'{e:08d}-rec.png' for e in range(3)]
    image = iio.imread(log_dir / 'train-vis' / pngs[0])
    assert image.dtype == np.uint8
    assert image.shape == (H * B, W * expected_columns(out), 3) == (64, 480, 3)
    np.testing.assert_array_equal(image, Visualizer(kp_size=2).visualize(inp['driving'], inp['source'], out))


def test_log_file_is_appended_and_epochs_without_losses_write_nothing(tmp_path, caplog):
    inp, out = fake_batch()
    with Logger(tmp_path) as logger:
        logger.log_iter({'loss': 1.0})
        logger.log_epoch(0, make_models(), inp, out)
    with Logger(tmp_path, zfill_num=3) as logger:  # resuming: same folder, same file
        logger.log_epoch(1, make_models(), inp, out)  # no log_iter: warning, no line
        logger.log_iter({'loss': 2.0})
        logger.log_iter({'loss': 3.0})
        logger.log_epoch(2, make_models(), inp, out)
    assert (tmp_path / 'log.txt').read_text().splitlines() == ['00000000) loss - 1.00000', '002) loss - 2.50000']
    assert 'no losses were logged' in caplog.text


def test_log_iter_rejects_non_scalar_losses(tmp_path):
    with Logger(tmp_path) as logger:
        with pytest.raises(ValueError, match="'perceptual'"):
            logger.log_iter({'perceptual': torch.ones(3)})


def test_clean_exit_saves_the_last_epoch_once(tmp_path, monkeypatch):
    from toolkit import logger as logger_module
    writes = []
    real_save = logger_module.save_checkpoint
    monkeypatch.setattr(logger_module, 'save_checkpoint', lambda path, *a, **k: writes.append(path.name)
                        or real_save(path, *a, **k))
    models = make_models()
    inp, out = fake_batch()
    with Logger(tmp_path, checkpoint_freq=2) as logger:
        for epoch in range(3):
            logger.log_iter({'loss': 1.0})
            logger.log_epoch(epoch, models, inp, out)
    # epoch 1 by checkpoint_freq, epoch 2 (the last) on exit; nothing written twice
    assert writes == ['00000001-checkpoint.pth.tar', '00000002-checkpoint.pth.tar']
    writes.clear()
    with Logger(tmp_path / 'b', checkpoint_freq=1) as logger:
        logger.log_iter({'loss': 1.0})
        logger.log_epoch(0, models, inp, out)
    assert writes == ['00000000-checkpoint.pth.tar']
    saved = torch.load(tmp_path / 'b' / '00000000-checkpoint.pth.tar', map_location='cpu', weights_only=True)
    assert torch.equal(saved['generator']['weight'], models['generator'].weight)


def test_exit_on_exception_keeps_the_last_good_checkpoint(tmp_path):
    models = make_models()
    inp, out = fake_batch()
    with pytest.raises(KeyboardInterrupt):
        with Logger(tmp_path, checkpoint_freq=1) as logger:
            logger.log_iter({'loss': 1.0})
            logger.log_epoch(0, models, inp, out)
            good = models['generator'].weight.detach().clone()
            with torch.no_grad():  # part of epoch 1 trained, then Ctrl-C
                models['generator'].weight.add_(1.0)
            raise KeyboardInterrupt
    saved = torch.load(tmp_path / '00000000-checkpoint.pth.tar', map_location='cpu', weights_only=True)
    assert torch.equal(saved['generator']['weight'], good)


def test_exit_on_exception_saves_when_no_checkpoint_exists(tmp_path):
    inp, out = fake_batch()
    with pytest.raises(RuntimeError, match='boom'):
        with Logger(tmp_path, checkpoint_freq=100) as logger:
            logger.log_iter({'loss': 1.0})
            logger.log_epoch(4, make_models(), inp, out)
            raise RuntimeError('boom')
    assert [p.name for p in tmp_path.glob('*.pth.tar')] == ['00000004-checkpoint.pth.tar']


def test_no_exit_checkpoint_before_the_first_epoch(tmp_path):
    with Logger(tmp_path) as logger:
        logger.log_iter({'loss': 1.0})
    assert list(tmp_path.glob('*.pth.tar')) == []


def _failing_writer(target, *args, **kwargs):
    """Simulates a full disk: half a file is written (to a path or an open file), then the write fails."""
    if hasattr(target, 'write'):
        target.write(b'\x89PNG half-written')
    else:
        with open(target, 'wb') as f:
            f.write(b'\x89PNG half-written')
    raise OSError(28, 'No space left on device')


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    models = make_models()
    inp, out = fake_batch()
    logger = Logger(tmp_path, checkpoint_freq=1)
    logger.log_iter({'loss': 1.0})
    logger.log_epoch(0, models, inp, out)
    path = tmp_path / '00000000-checkpoint.pth.tar'
    before = path.read_bytes()
    monkeypatch.setattr(torch, 'save', lambda obj, f, *a, **k: _failing_writer(f))
    with pytest.raises(OutputError, match='00000000-checkpoint.pth.tar: the disk is full'):
        logger.save_cpk()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert hidden_files(tmp_path) == []
    logger.log_file.close()


def test_png_write_is_atomic(tmp_path, monkeypatch):
    inp, out = fake_batch()
    logger = Logger(tmp_path)
    logger.log_iter({'loss': 1.0})
    logger.log_epoch(0, make_models(), inp, out)
    path = tmp_path / 'train-vis' / '00000000-rec.png'
    before = path.read_bytes()
    monkeypatch.setattr(iio, 'imwrite', _failing_writer)
    with pytest.raises(OutputError, match='00000000-rec.png: the disk is full'):
        logger.visualize_rec(*fake_batch(seed=1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert hidden_files(tmp_path / 'train-vis') == []
    logger.log_file.close()


def test_files_written_together_are_renamed_together(tmp_path):
    """atomic_paths (an ONNX export's graphs and model.json): a failed check or write of any file
    leaves every file as it was; only a whole success replaces them all."""
    from modules.fileio import atomic_paths
    paths = {'graph': tmp_path / 'a.onnx', 'meta': tmp_path / 'a.json'}
    for path in paths.values():
        path.write_bytes(b'old ' + path.suffix.encode())
    old = {key: path.read_bytes() for key, path in paths.items()}
    with pytest.raises(OutputError, match=r'a\.onnx: bad graph'):
        with atomic_paths(paths, verify=lambda key, tmp: 'bad graph' if key == 'graph' else None) as tmps:
            for tmp in tmps.values():
                tmp.write_bytes(b'new')
    assert {key: path.read_bytes() for key, path in paths.items()} == old and hidden_files(tmp_path) == []
    with pytest.raises(OutputError, match=r'a\.json: the disk is full'):
        with atomic_paths(paths) as tmps:
            tmps['graph'].write_bytes(b'new')
            _failing_writer(tmps['meta'])
    assert {key: path.read_bytes() for key, path in paths.items()} == old and hidden_files(tmp_path) == []
    with atomic_paths(paths) as tmps:
        for key, tmp in tmps.items():
            tmp.write_bytes(b'new ' + key.encode())
    assert {key: path.read_bytes() for key, path in paths.items()} == {'graph': b'new graph', 'meta': b'new meta'}
    assert hidden_files(tmp_path) == []


def test_disabled_logger_is_a_no_op(tmp_path):
    log_dir = tmp_path / 'rank1'
    inp, out = fake_batch()
    with Logger(log_dir, checkpoint_freq=1, enabled=False) as logger:
        logger.log_iter({'loss': 1.0})
        logger.log_epoch(0, make_models(), inp, out, extra='x')
        assert logger.save_cpk() is None
    assert not log_dir.exists()


def test_load_cpk_round_trip(tmp_path):
    models = make_models(seed=0)
    inp, out = fake_batch()
    with Logger(tmp_path, checkpoint_freq=1) as logger:
        logger.log_iter({'loss': 1.0})
        logger.log_epoch(6, models, inp, out)
    fresh = make_models(seed=1)
    assert not torch.equal(fresh['generator'].weight, models['generator'].weight)
    assert Logger.load_cpk(tmp_path / '00000006-checkpoint.pth.tar', **fresh) == 6
    for name in ('generator', 'discriminator', 'kp_detector'):
        for key, value in models[name].state_dict().items():
            assert torch.equal(fresh[name].state_dict()[key], value), f'{name}.{key}'
    for name in ('optimizer_generator', 'optimizer_discriminator', 'optimizer_kp_detector'):
        for a, b in zip(models[name].state_dict()['state'].values(), fresh[name].state_dict()['state'].values()):
            assert all(torch.equal(a[k], b[k]) for k in a), name


def test_load_cpk_tolerates_a_missing_discriminator(tmp_path, caplog):
    models = make_models(seed=0)
    path = save_checkpoint(tmp_path / 'published.pth.tar',
                           {k: v for k, v in models.items() if 'discriminator' not in k}, epoch=3)
    fresh = make_models(seed=1)
    before = copy.deepcopy(fresh['discriminator'].state_dict())
    assert Logger.load_cpk(path, **fresh) == 3
    assert torch.equal(fresh['generator'].weight, models['generator'].weight)
    assert all(torch.equal(before[k], v) for k, v in fresh['discriminator'].state_dict().items())
    assert 'discriminator' in caplog.text


def test_load_cpk_mismatch_is_one_line_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path / 'other.pth.tar', make_models(generator_width=5), epoch=0)
    fresh = make_models(seed=1)
    before = fresh['kp_detector'].weight.detach().clone()
    with pytest.raises(CheckpointError) as info:
        Logger.load_cpk(path, generator=fresh['generator'], kp_detector=fresh['kp_detector'])
    message = str(info.value)
    assert '\n' not in message and 'generator' in message and 'other.pth.tar' in message
    assert torch.equal(fresh['kp_detector'].weight, before)  # nothing loaded on a mismatch

    partial = save_checkpoint(tmp_path / 'partial.pth.tar', {'generator': make_models()['generator']}, epoch=0)
    with pytest.raises(CheckpointError, match="'kp_detector'") as info:
        Logger.load_cpk(partial, generator=fresh['generator'], kp_detector=fresh['kp_detector'])
    assert '\n' not in str(info.value)


# ---- Visualizer ----

def test_keypoints_are_disks_in_colormap_colours():
    vis = Visualizer(kp_size=3)
    image = np.zeros((32, 40, 3), np.float32)  # not square: x runs along the width, y along the height
    kp = np.array([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]])  # (x, y) in [-1, 1]
    drawn = vis.draw_image_with_kp(image, kp)
    rows, cols = np.mgrid[0:32, 0:40]
    painted = np.zeros((32, 40), bool)
    for k, (x, y) in enumerate(kp):
        cx, cy = 40 * (x + 1) / 2, 32 * (y + 1) / 2  # -1 -> 0, +1 -> size
        inside = (rows - cy) ** 2 + (cols - cx) ** 2 < 3 ** 2
        assert inside.sum() > 20
        np.testing.assert_array_equal(drawn[inside], np.tile(np.float32(CMAP(k / len(kp))[:3]), (inside.sum(), 1)))
        painted |= inside
    assert (drawn[~painted] == 0).all()
    assert (image == 0).all()  # the input is not modified


def test_draw_border_whitens_only_the_first_and_last_pixel_columns():
    images = np.zeros((2, 4, 5, 3), np.float32)
    column = Visualizer(draw_border=True).create_image_column(images)
    assert column.shape == (8, 5, 3)
    assert (column[:, 0] == 1).all() and (column[:, -1] == 1).all()
    assert (column[:, 1:-1] == 0).all()  # top and bottom rows untouched, as the original
    assert (images == 0).all()
    assert (Visualizer().create_image_column(images) == 0).all()


def test_image_grid_stacks_rows_and_places_columns_side_by_side():
    vis = Visualizer(kp_size=1)
    a = np.zeros((2, 4, 6, 3))
    b = np.ones((2, 4, 6, 3)) * 0.5
    b[1] = 0.25
    grid = vis.create_image_grid((a, np.zeros((2, 1, 2))), b)
    assert grid.shape == (8, 12, 3)
    assert (grid[:4, 6:] == 0.5).all() and (grid[4:, 6:] == 0.25).all()
    assert (grid[2, 3] == np.array(CMAP(0.0)[:3])).all()  # the kp column got its keypoint at the centre


@pytest.mark.parametrize('keys, num_kp', [
    (None, K),
    (('kp_source', 'kp_driving', 'prediction'), K),
    (('kp_source', 'kp_driving', 'prediction', 'kp_norm'), K),
    (('kp_source', 'kp_driving', 'prediction', 'sparse_deformed', 'mask'), 1),
])
def test_visualize_column_count(keys, num_kp):
    inp, out = fake_batch(num_kp=num_kp)
    out['kp_norm'] = out['kp_driving']
    if keys is not None:
        out = {k: out[k] for k in keys}
    else:
        del out['kp_norm']
    image = Visualizer().visualize(inp['driving'], inp['source'], out)
    assert image.dtype == np.uint8
    assert image.shape == (H * B, W * expected_columns(out), 3)


def test_visualize_columns_masks_and_conversion():
    inp, out = fake_batch()
    kp = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]])
    out['kp_source'] = {'value': kp.expand(B, K, 2)}
    out['mask'] = torch.zeros(B, K + 1, 8, 8)
    out['mask'][:, 2] = 1.0  # every pixel belongs to keypoint 1 (map 2)
    out['prediction'][0, :, 0, 0] = 0.5019  # 127.98: truncated to 127, not rounded
    out['prediction'][0, :, 0, 1] = 1.5  # out of range: clipped to 255
    out['prediction'][0, :, 0, 2] = -0.5  # clipped to 0
    image = Visualizer(kp_size=2).visualize(inp['driving'], inp['source'], out)
    assert image.shape == (H * B, W * 15, 3)

    def col(i):
        return image[:, W * i:W * (i + 1)]

    def u8(x):  # the original's conversion of a float64 grid
        return (255 * np.asarray(x, np.float64)).astype(np.uint8)

    def hwc(t):
        return np.concatenate(list(t.permute(0, 2, 3, 1).numpy()), axis=0)

    def nearest(t):  # (B, C, 8, 8) -> (B * 32, 32, C), each pixel repeated 4 x 4
        return hwc(t.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))

    # 0 source + kp_source: keypoint k's colour at its centre, raw pixels far from keypoints
    for k, (cx, cy) in enumerate([(8, 8), (24, 8), (16, 24)]):
        for b in range(B):
            np.testing.assert_array_equal(col(0)[b * H + cy, cx], u8(CMAP(k / K)[:3]))
    np.testing.assert_array_equal(col(0)[H - 1, 0], u8(inp['source'][0, :, H - 1, 0]))
    # 4 prediction + kp_norm? absent; 4 is the plain prediction, with truncation and clipping
    expected = u8(np.clip(hwc(out['prediction']), 0, 1))
    np.testing.assert_array_equal(col(4), expected)
    np.testing.assert_array_equal(col(4)[0, :3], [[127] * 3, [255] * 3, [0] * 3])
    np.testing.assert_array_equal(col(3), u8(hwc(out['deformed'])))
    np.testing.assert_array_equal(col(5), u8(nearest(out['occlusion_map'].repeat(1, 3, 1, 1))))
    for i in range(K + 1):
        np.testing.assert_array_equal(col(6 + 2 * i), u8(nearest(out['sparse_deformed'][:, i])))
    assert (col(7) == 0).all() and (col(9) == 0).all() and (col(13) == 0).all()  # masks 0, 1, 3 are empty
    colour = u8(CMAP((2 - 1) / K)[:3])  # map i gets colormap((i - 1) / K), keypoint i - 1's colour
    assert (col(11) == colour).all()
    assert (col(14) == colour).all()  # the sum of the coloured masks


def test_background_mask_is_grey_and_black_in_the_sum():
    inp, out = fake_batch()
    out['mask'] = torch.zeros(B, K + 1, 8, 8)
    out['mask'][:, 0] = 1.0
    image = Visualizer().visualize(inp['driving'], inp['source'], out)
    assert (image[:, W * 7:W * 8] == 255).all()
    assert (image[:, W * 14:] == 0).all()


def test_visualize_accepts_half_precision_and_grad_tensors():
    inp, out = fake_batch()
    out['prediction'] = out['prediction'].half().requires_grad_()
    image = Visualizer().visualize(inp['driving'], inp['source'], out)
    assert image.shape == (H * B, W * 15, 3)


def test_unknown_colormap_is_a_config_error():
    with pytest.raises(ConfigError, match="did you mean 'gist_rainbow'"):
        Visualizer(colormap='gist_rainbw')
