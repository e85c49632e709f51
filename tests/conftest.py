"""Shared test fixtures: the original implementation's reference numbers (tests/data/) and helpers."""
import copy
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DATA = REPO / 'tests' / 'data'
FIXTURE_DIR = DATA / 'fomm_fixture_small'
KEYS_DIR = DATA / 'fomm_keys'
OFFICIAL_CONFIGS = ['vox-256', 'vox-adv-256', 'taichi-256', 'taichi-adv-256', 'bair-256', 'fashion-256',
                    'mgif-256', 'nemo-256']

# Tolerances suggested by the fixture's authors (float64 vs float32 of the original stays <= ~2e-5).
ATOL = RTOL = 1e-4
GRAD_REL = 1e-2


@pytest.fixture(scope='session')
def ref():
    """The original's tensors: a flat {'group/.../name': Tensor} dict."""
    return torch.load(FIXTURE_DIR / 'fixtures.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='session')
def fixture_config():
    with open(FIXTURE_DIR / 'config.yaml') as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='session')
def vgg19_weights_file(tmp_path_factory):
    """The fixture's deterministic VGG19 stand-in weights, regenerated and saved as a torchvision-style
    file holding only `features.*` (as the perceptual loss needs)."""
    from modules.vgg_portable import portable_vgg19_state_dict
    path = tmp_path_factory.mktemp('vgg') / 'vgg19-portable.pth'
    torch.save(portable_vgg19_state_dict(seed=0, max_index=28), path)
    return path


@pytest.fixture
def train_params(fixture_config, vgg19_weights_file):
    params = copy.deepcopy(fixture_config['train_params'])
    params['vgg19_weights'] = str(vgg19_weights_file)
    return params


def flat(prefix, value, out=None):
    """A nested output (dicts, lists) flattened into {'prefix/key/index': leaf}, the fixtures' key layout."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for key, item in value.items():
            flat(f'{prefix}/{key}', item, out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            flat(f'{prefix}/{i}', item, out)
    else:
        out[prefix] = value
    return out


def assert_close(actual, expected, name='', atol=ATOL, rtol=RTOL):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f'{name}: {m}')


def assert_grad_close(actual, expected, name=''):
    """Gradients: max |diff| <= 1e-2 * max |reference| per tensor (the fixture's suggested check)."""
    assert actual is not None, f'{name}: no gradient'
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert diff <= GRAD_REL * scale + 1e-7, f'{name}: max|diff| {diff:.3g} > 1e-2 * max|ref| ({scale:.3g})'


# ----------------------------------------------------------------------------------------------
# The tests write nothing into the repository (results beside a bundled checkpoint, stray outputs)
# ----------------------------------------------------------------------------------------------

def _repository_changes():
    """`git status --porcelain` entries of the working tree (ignored files excluded), or None without git."""
    import subprocess
    try:
        out = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all'], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.splitlines()) if out.returncode == 0 else None


def pytest_sessionstart(session):
    session.config._repository_before = _repository_changes()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, '_repository_before', None)
    after = _repository_changes()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        print('\nthe tests wrote into the repository: ' + '; '.join(new), file=sys.stderr)
        session.exitstatus = 1
