"""VGG19 of the perceptual loss, built without torchvision, loading torchvision-layout weights."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from modules.build import build_models
from modules.errors import InputError
from modules.model import GeneratorFullModel, Vgg19
from modules.vgg import VGG19_FILENAME, default_vgg19_path, load_vgg19_weights
from tests.conftest import FIXTURE_DIR, REPO
from modules.vgg_portable import portable_vgg19_state_dict

TORCHVISION_FEATURE_KEYS = [f'features.{i}.{f}' for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
                            for f in ('weight', 'bias')]


def test_portable_weights_match_reference_fingerprint():
    """Our regeneration of the fixture's VGG19 stand-in weights is the one the original used."""
    fingerprint = json.loads((FIXTURE_DIR / 'vgg19_fingerprint.json').read_text())['tensors']
    state = portable_vgg19_state_dict(seed=0)
    assert list(state) == TORCHVISION_FEATURE_KEYS == list(fingerprint)
    for key, expected in fingerprint.items():
        value = state[key].numpy().astype(np.float64).ravel()
        assert list(state[key].shape) == expected['shape']
        assert value[:4].tolist() == expected['first4'], key
        assert value.sum() == pytest.approx(expected['sum'], rel=1e-9, abs=1e-9), key
        assert np.abs(value).sum() == pytest.approx(expected['abs_sum'], rel=1e-12), key


def test_layout_matches_torchvision_features():
    vgg = Vgg19()
    names = [name for name, _ in vgg.named_parameters()]
    convs = [i for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)]
    slices = {0: 1, 2: 2, 5: 2, 7: 3, 10: 3, 12: 4, 14: 4, 16: 4, 19: 4, 21: 5, 23: 5, 25: 5, 28: 5}
    assert names == [f'slice{slices[i]}.{i}.{f}' for i in convs for f in ('weight', 'bias')]
    assert not any(p.requires_grad for p in vgg.parameters())
    outs = vgg(torch.rand(2, 3, 32, 48))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 32, 48), (2, 128, 16, 24), (2, 256, 8, 12),
                                              (2, 512, 4, 6), (2, 512, 2, 3)]


def full_torchvision_file(path, extra_classifier=True, prefix='features.'):
    state = {k.replace('features.', prefix): v for k, v in portable_vgg19_state_dict(seed=0).items()}
    if extra_classifier:  # the real file also holds the classifier; it must be ignored
        state['classifier.0.weight'] = torch.zeros(4, 8)
    torch.save(state, path)
    return path


@pytest.mark.parametrize('variant', ['full', 'features-only', 'unprefixed'])
def test_weights_load_from_torchvision_style_files(tmp_path, variant):
    path = full_torchvision_file(tmp_path / 'w.pth', extra_classifier=variant == 'full',
                                 prefix='' if variant == 'unprefixed' else 'features.')
    vgg = load_vgg19_weights(Vgg19(), path)
    reference = portable_vgg19_state_dict(seed=0, max_index=28)
    assert torch.equal(getattr(vgg.slice5, '28').weight, reference['features.28.weight'])
    assert torch.equal(getattr(vgg.slice1, '0').bias, reference['features.0.bias'])


def test_weights_come_from_torch_hub_cache(tmp_path, monkeypatch, fixture_config):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    assert default_vgg19_path() == tmp_path / 'hub' / 'checkpoints' / VGG19_FILENAME
    default_vgg19_path().parent.mkdir(parents=True)
    full_torchvision_file(default_vgg19_path())
    models = build_models(fixture_config['model_params'])
    params = copy.deepcopy(fixture_config['train_params'])
    gf = GeneratorFullModel(models['kp_detector'], models['generator'], models['discriminator'], params)
    assert torch.equal(getattr(gf.vgg.slice2, '5').weight, portable_vgg19_state_dict(seed=0)['features.5.weight'])


def test_missing_weights_say_which_file_to_put_where(tmp_path, monkeypatch, fixture_config):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    models = build_models(fixture_config['model_params'])
    params = copy.deepcopy(fixture_config['train_params'])
    with pytest.raises(InputError) as err:
        GeneratorFullModel(models['kp_detector'], models['generator'], models['discriminator'], params)
    message = str(err.value)
    assert '\n' not in message
    assert VGG19_FILENAME in message and str(tmp_path / 'hub' / 'checkpoints') in message
    params['vgg19_weights'] = str(tmp_path / 'elsewhere.pth')
    with pytest.raises(InputError, match=r'train_params.vgg19_weights points at .*elsewhere\.pth'):
        GeneratorFullModel(models['kp_detector'], models['generator'], models['discriminator'], params)


def test_no_weights_needed_without_perceptual_loss(tmp_path, monkeypatch, fixture_config):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    models = build_models(fixture_config['model_params'])
    params = copy.deepcopy(fixture_config['train_params'])
    params['loss_weights']['perceptual'] = [0, 0, 0, 0, 0]
    gf = GeneratorFullModel(models['kp_detector'], models['generator'], models['discriminator'], params)
    assert not hasattr(gf, 'vgg')
    x = {'source': torch.rand(2, 3, 64, 64), 'driving': torch.rand(2, 3, 64, 64)}
    losses, _ = gf(x)
    assert 'perceptual' not in losses and set(losses) == {'gen_gan', 'feature_matching', 'equivariance_value',
                                                          'equivariance_jacobian'}


def test_bad_weight_files_are_clear_errors(tmp_path):
    wrong = tmp_path / 'wrong.pth'
    torch.save({'features.0.weight': torch.zeros(64, 3, 5, 5)}, wrong)
    with pytest.raises(InputError, match=r'wrong\.pth is not a VGG19 weight file \(features\.0\.weight has shape '):
        load_vgg19_weights(Vgg19(), wrong)
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'\x00' * 100)
    with pytest.raises(InputError, match=r'corrupt\.pth: cannot read the VGG19 weights'):
        load_vgg19_weights(Vgg19(), corrupt)


def test_check_cli_reports_missing_vgg(tmp_path):
    import os
    env = dict(os.environ, TORCH_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, '-m', 'modules.check', '--vgg19', str(tmp_path / 'none.pth')], cwd=REPO,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stderr.count('\n') == 1 and VGG19_FILENAME in out.stderr
