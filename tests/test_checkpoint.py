"""Checkpoint I/O: original format, safe and strict loading, clear errors, atomic saving."""
import argparse
import copy
import subprocess
import sys

import pytest
import torch

import modules.checkpoint as checkpoint_io
from modules.build import build_models
from modules.checkpoint import fitting_configs, load_state, read_checkpoint, save_checkpoint
from modules.config import load_config
from modules.errors import CheckpointError, OutputError
from tests.conftest import FIXTURE_DIR, REPO

CHECKPOINT = FIXTURE_DIR / 'checkpoint.pth.tar'
ORIGINAL_KEYS = ['generator', 'discriminator', 'kp_detector', 'optimizer_generator', 'optimizer_discriminator',
                 'optimizer_kp_detector', 'epoch']


@pytest.fixture
def small_models(fixture_config):
    return build_models(fixture_config['model_params'])


def optimizers(models):
    return {f'optimizer_{n}': torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n, m in models.items()}


def test_original_checkpoint_loads_strictly(small_models):
    original = read_checkpoint(CHECKPOINT)
    assert list(original) == ORIGINAL_KEYS
    epoch = load_state(CHECKPOINT, {**small_models, **optimizers(small_models)})
    assert epoch == 0
    for name, module in small_models.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, original[name][key]), f'{name}.{key}'


def test_save_writes_the_original_layout_and_round_trips(small_models, tmp_path):
    load_state(CHECKPOINT, small_models)
    opts = optimizers(small_models)
    loss = sum(p.sum() for p in small_models['kp_detector'].parameters())
    loss.backward()
    opts['optimizer_kp_detector'].step()  # real Adam moment buffers in the state
    path = save_checkpoint(tmp_path / '00000003-checkpoint.pth.tar', {**small_models, **opts}, epoch=3)
    saved = torch.load(path, map_location='cpu', weights_only=True)
    assert list(saved) == ORIGINAL_KEYS
    fresh = build_models(load_config(FIXTURE_DIR / 'config.yaml')['model_params'])
    fresh_opts = optimizers(fresh)
    assert load_state(path, {**fresh, **fresh_opts}) == 3
    for name in small_models:
        for (k, a), b in zip(small_models[name].state_dict().items(), fresh[name].state_dict().values()):
            assert torch.equal(a, b), f'{name}.{k}'
    assert len(opts['optimizer_kp_detector'].state) > 0, 'the kp detector optimizer has state to round-trip'
    for name, optimizer in opts.items():
        assert_optimizer_states_equal(fresh_opts[name].state_dict(), optimizer.state_dict(), name)


def assert_optimizer_states_equal(actual, expected, name=''):
    """Optimizer state dicts equal entry by entry: the param_groups exactly, every state tensor with
    torch.equal (same dtype and shape), every other state value with ==."""
    assert actual['param_groups'] == expected['param_groups'], f'{name} param_groups'
    assert list(actual['state']) == list(expected['state']), f'{name} state indices'
    for index, state in expected['state'].items():
        assert list(actual['state'][index]) == list(state), f'{name} state[{index}] keys'
        for key, value in state.items():
            got = actual['state'][index][key]
            if torch.is_tensor(value):
                assert torch.is_tensor(got) and got.dtype == value.dtype and torch.equal(got, value), \
                    f'{name} state[{index}][{key!r}]'
            else:
                assert got == value, f'{name} state[{index}][{key!r}]'


def test_dataparallel_prefix_is_stripped(small_models, tmp_path):
    load_state(CHECKPOINT, small_models)
    state = {'kp_detector': {'module.' + k: v for k, v in small_models['kp_detector'].state_dict().items()}}
    fresh = build_models(load_config(FIXTURE_DIR / 'config.yaml')['model_params'], names=['kp_detector'])
    load_state(state, fresh)
    assert torch.equal(fresh['kp_detector'].kp.weight, small_models['kp_detector'].kp.weight)


def test_legacy_serialization_loads_with_weights_only(small_models, tmp_path):
    """Published checkpoints were written by torch 1.0 (pre-zip format)."""
    path = tmp_path / 'legacy.pth.tar'
    state = read_checkpoint(CHECKPOINT)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert load_state(path, small_models) == 0


def test_missing_discriminator_is_tolerated_when_optional(small_models, caplog):
    state = {k: v for k, v in read_checkpoint(CHECKPOINT).items() if k != 'discriminator'}
    before = copy.deepcopy(small_models['discriminator'].state_dict())
    load_state(state, small_models, source='vox-cpk.pth.tar', optional=('discriminator',))
    assert 'discriminator' in caplog.text
    assert all(torch.equal(before[k], v) for k, v in small_models['discriminator'].state_dict().items())
    with pytest.raises(CheckpointError, match=r"vox-cpk.pth.tar has no 'discriminator' entry"):
        load_state(state, small_models, source='vox-cpk.pth.tar')


def test_mismatch_names_keys_and_leaves_models_untouched(fixture_config):
    params = copy.deepcopy(fixture_config['model_params'])
    params['kp_detector_params']['single_jacobian_map'] = True
    params['generator_params']['num_bottleneck_blocks'] = 1
    models = build_models(params, names=['kp_detector', 'generator'])
    before = copy.deepcopy(models['generator'].state_dict())
    with pytest.raises(CheckpointError) as err:
        load_state(CHECKPOINT, models, source='ckpt.pth.tar', config_path='my.yaml')
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith('ckpt.pth.tar does not fit my.yaml: ')
    assert 'kp_detector: ' in message and 'mis-shaped' in message
    assert 'jacobian.weight: checkpoint [40, 11, 7, 7] vs model [4, 11, 7, 7]' in message
    assert 'generator: 14 unexpected (bottleneck.r1.conv1.weight, ' in message
    assert 'no official config fits it exactly (closest: ' in message
    for key, value in models['generator'].state_dict().items():
        assert torch.equal(value, before[key]), 'nothing loaded after a failed check'


def test_mismatch_says_which_official_config_fits(tmp_path):
    """An mgif-256 keypoint detector (single jacobian map) offered to vox-256."""
    mgif = build_models(load_config(REPO / 'config' / 'mgif-256.yaml')['model_params'], names=['kp_detector'])
    path = save_checkpoint(tmp_path / 'mgif-kp.pth.tar', mgif, epoch=0)
    vox = build_models(load_config(REPO / 'config' / 'vox-256.yaml')['model_params'], names=['kp_detector'])
    with pytest.raises(CheckpointError, match=r'jacobian\.weight: checkpoint \[4, 35, 7, 7\] vs model '
                                              r'\[40, 35, 7, 7\].*it fits .*mgif-256\.yaml: use that config'):
        load_state(path, vox, config_path='config/vox-256.yaml')


def test_fitting_configs_compares_keys_and_shapes(fixture_config, tmp_path):
    state = read_checkpoint(CHECKPOINT)
    assert fitting_configs(state)[0] == [], 'the tiny fixture fits no official config'
    fits, _ = fitting_configs(state, config_paths=[FIXTURE_DIR / 'config.yaml', REPO / 'config' / 'vox-256.yaml'])
    assert fits == [FIXTURE_DIR / 'config.yaml']


@pytest.mark.parametrize('corrupt', ['truncated', 'garbage', 'empty'])
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, corrupt):
    data = CHECKPOINT.read_bytes()
    path = tmp_path / 'bad.pth.tar'
    path.write_bytes({'truncated': data[:len(data) // 2], 'garbage': b'not a checkpoint' * 100, 'empty': b''}[corrupt])
    with pytest.raises(CheckpointError, match=r'bad\.pth\.tar is not a readable PyTorch checkpoint') as err:
        read_checkpoint(path)
    assert '\n' not in str(err.value)


def test_unsafe_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'unsafe.pth.tar'
    torch.save({'generator': {}, 'args': argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointError, match=r'unsafe.pth.tar holds argparse.Namespace, .*refusing to unpickle'):
        read_checkpoint(path)


def test_missing_and_non_dict_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        read_checkpoint(tmp_path / 'nope.pth.tar')
    torch.save(torch.zeros(3), tmp_path / 'tensor.pth')
    with pytest.raises(CheckpointError, match='holds a Tensor, not a checkpoint dict'):
        read_checkpoint(tmp_path / 'tensor.pth')


def test_save_is_atomic(small_models, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / 'last.pth.tar', small_models, epoch=1)
    good = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):  # f: the open temporary file
        f.write(b'half a file')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(checkpoint_io.torch, 'save', failing_save)
    with pytest.raises(OutputError, match='last.pth.tar: the disk is full'):
        save_checkpoint(path, small_models, epoch=2)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ['last.pth.tar'], 'no temp file left behind'


def run_check(*args):
    return subprocess.run([sys.executable, '-m', 'modules.check', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)


def test_check_cli_success_and_bad_inputs(tmp_path):
    ok = run_check('--config', FIXTURE_DIR / 'config.yaml', '--checkpoint', CHECKPOINT)
    assert ok.returncode == 0, ok.stderr
    assert 'loads strictly' in ok.stdout

    truncated = tmp_path / 'truncated.pth.tar'
    truncated.write_bytes(CHECKPOINT.read_bytes()[:1000])
    bad = run_check('--config', FIXTURE_DIR / 'config.yaml', '--checkpoint', truncated)
    assert bad.returncode == 2
    assert bad.stderr.count('\n') == 1 and bad.stderr.startswith('error: ') and 'Traceback' not in bad.stderr

    mismatched = run_check('--config', REPO / 'config' / 'vox-256.yaml', '--checkpoint', CHECKPOINT)
    assert mismatched.returncode == 2 and 'does not fit' in mismatched.stderr
    assert mismatched.stderr.count('\n') == 1

    typo = tmp_path / 'typo.yaml'
    typo.write_text((FIXTURE_DIR / 'config.yaml').read_text().replace('temperature:', 'temprature:'))
    bad_config = run_check('--config', typo)
    assert bad_config.returncode == 2 and "temprature" in bad_config.stderr and "'temperature'" in bad_config.stderr
    assert bad_config.stderr.count('\n') == 1


def test_check_only_loads_nothing(small_models, fixture_config):
    before = copy.deepcopy(small_models['kp_detector'].state_dict())
    assert load_state(CHECKPOINT, small_models, check_only=True) == 0
    for key, value in small_models['kp_detector'].state_dict().items():
        assert torch.equal(value, before[key]), key
    params = copy.deepcopy(fixture_config['model_params'])
    params['kp_detector_params']['single_jacobian_map'] = True
    with pytest.raises(CheckpointError, match='mis-shaped'):
        load_state(CHECKPOINT, build_models(params, names=['kp_detector']), check_only=True)
