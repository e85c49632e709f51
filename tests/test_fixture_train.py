"""One full training iteration (train mode) against the original implementation (fixture-small):
losses, generated tensors, the equivariance Transform, gradients and post-step buffers."""
import json

import pytest
import torch

import modules.model
from modules.build import build_models
from modules.checkpoint import load_state
from modules.model import DiscriminatorFullModel, GeneratorFullModel, Transform
from tests.conftest import FIXTURE_DIR, assert_close, assert_grad_close, flat

MANIFEST = json.loads((FIXTURE_DIR / 'manifest.json').read_text())
TRAIN_SEED = MANIFEST['train_seed']
# Gradients that are zero in exact arithmetic (conv bias before train-mode BatchNorm / InstanceNorm,
# the keypoint head's bias before the spatial softmax): the reference holds rounding noise only.
ZERO_GRAD_SUFFIXES = ('conv.bias', 'conv1.bias', 'kp.bias')


def train_batch(ref):
    driving = ref['inputs/driving']
    return {'source': torch.cat([driving[:, :, 0], ref['inputs/source']], dim=0),
            'driving': torch.cat([driving[:, :, 3], driving[:, :, 1]], dim=0)}


def run_iteration(fixture_config, train_params, ref, draw):
    """One iteration exactly as the original train.py; `draw()` makes the Transform draws happen."""
    models = build_models(fixture_config['model_params'])
    load_state(FIXTURE_DIR / 'checkpoint.pth.tar', models)
    generator, discriminator, kp_detector = models['generator'], models['discriminator'], models['kp_detector']
    gf = GeneratorFullModel(kp_detector, generator, discriminator, train_params)
    df = DiscriminatorFullModel(kp_detector, generator, discriminator, train_params)
    gf.train()
    df.train()
    opt = {name: torch.optim.Adam(m.parameters(), lr=train_params['lr_' + name], betas=(0.5, 0.999))
           for name, m in models.items()}
    x = train_batch(ref)

    draw()
    losses_generator, generated = gf(x)
    sum(v.mean() for v in losses_generator.values()).backward()
    grads_generator = {f'{name}/{p}': t.grad.clone() for name in ('kp_detector', 'generator')
                       for p, t in models[name].named_parameters()}
    opt['generator'].step()
    opt['generator'].zero_grad()
    opt['kp_detector'].step()
    opt['kp_detector'].zero_grad()
    opt['discriminator'].zero_grad()
    losses_discriminator = df(x, generated)
    sum(v.mean() for v in losses_discriminator.values()).backward()
    grads_discriminator = {f'discriminator/{p}': t.grad.clone() for p, t in discriminator.named_parameters()}
    opt['discriminator'].step()
    opt['discriminator'].zero_grad()
    buffers = {f'{name}/{k}': v for name, m in models.items() for k, v in m.state_dict().items()
               if k not in dict(m.named_parameters())}
    return dict(losses={**losses_generator, **losses_discriminator}, generated=generated,
                grads_generator=grads_generator, grads_discriminator=grads_discriminator, buffers=buffers)


@pytest.fixture(scope='module')
def iteration(request):
    fixture_config, ref = request.getfixturevalue('fixture_config'), request.getfixturevalue('ref')
    params = request.getfixturevalue('train_params')
    return run_iteration(fixture_config, params, ref, draw=lambda: torch.manual_seed(TRAIN_SEED))


@pytest.fixture(scope='module')
def train_params(fixture_config, vgg19_weights_file):  # module scope for the shared iteration
    import copy
    params = copy.deepcopy(fixture_config['train_params'])
    params['vgg19_weights'] = str(vgg19_weights_file)
    return params


def test_losses_match_original(iteration, ref):
    expected = {k.split('/', 1)[1]: v for k, v in ref.items() if k.startswith('losses/')}
    assert sorted(iteration['losses']) == sorted(expected)
    for name, value in expected.items():
        assert_close(iteration['losses'][name].detach(), value, 'losses/' + name)


def test_generated_tensors_match_original(iteration, ref):
    actual = flat('generated', iteration['generated'], {})
    expected = {k: v for k, v in ref.items() if k.startswith('generated/')}
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert_close(actual[key].detach(), value, key)


def test_gradients_match_original(iteration, ref):
    checked = 0
    for group, grads in (('grads_generator_loss', iteration['grads_generator']),
                         ('grads_discriminator_loss', iteration['grads_discriminator'])):
        expected = {k.split('/', 1)[1]: v for k, v in ref.items() if k.startswith(group + '/')}
        assert sorted(grads) == sorted(expected), group
        for key, value in expected.items():
            if key.endswith(ZERO_GRAD_SUFFIXES) and value.abs().max() < 1e-4:
                assert grads[key].abs().max() < 1e-3, f'{key} should be (numerically) zero'
                continue
            assert_grad_close(grads[key], value, f'{group}/{key}')
            checked += 1
    assert checked > 60


def test_post_iteration_buffers_match_original(iteration, ref):
    expected = {k.split('/', 1)[1]: v for k, v in ref.items() if k.startswith('post_iteration_buffers/')}
    assert sorted(iteration['buffers']) == sorted(expected)
    for key, value in expected.items():
        if value.dtype == torch.int64:
            assert torch.equal(iteration['buffers'][key], value), key  # num_batches_tracked stays 0
        else:
            assert_close(iteration['buffers'][key], value, key)


def test_transform_matches_original(ref):
    torch.manual_seed(TRAIN_SEED)
    transform = Transform(2, **{'sigma_affine': 0.05, 'sigma_tps': 0.005, 'points_tps': 5})
    assert torch.equal(transform.theta, ref['transform/theta'])
    assert torch.equal(transform.control_params, ref['transform/control_params'])
    assert torch.equal(transform.control_points, ref['transform/control_points'])
    kp = ref['generated/transformed_kp/value'].clone().requires_grad_(True)
    assert_close(transform.warp_coordinates(kp).detach(), ref['transform/warp_coordinates_of_transformed_kp'])
    assert_close(transform.jacobian(kp).detach(), ref['transform/jacobian_at_transformed_kp'])


def test_injected_transform_gives_the_same_iteration(fixture_config, train_params, ref, monkeypatch):
    """GeneratorFullModel looks up modules.model.Transform at call time, so a test can inject the
    recorded draws instead of relying on the global seed."""

    class Recorded(Transform):
        def __init__(self, bs, **kwargs):
            super().__init__(bs, **kwargs)
            self.theta = ref['transform/theta']
            self.control_params = ref['transform/control_params']
            self.control_points = ref['transform/control_points']

    monkeypatch.setattr(modules.model, 'Transform', Recorded)
    torch.manual_seed(0)  # a different global seed: only the injected draws matter
    out = run_iteration(fixture_config, train_params, ref, draw=lambda: None)
    for name in ('equivariance_value', 'equivariance_jacobian', 'perceptual'):
        assert_close(out['losses'][name].detach(), ref['losses/' + name], name)
    assert_close(out['generated']['transformed_frame'].detach(), ref['generated/transformed_frame'])


def test_l1_loss_weight_adds_the_pixel_l1_and_nothing_else(fixture_config, train_params, ref):
    """loss_weights.l1 (ours, default 0): weight * mean |prediction - driving| joins the losses; the
    original's losses stay as they are."""
    import copy
    from modules.config import ConfigError, load_config, validate_config
    assert load_config(FIXTURE_DIR / 'config.yaml')['train_params']['loss_weights']['l1'] == 0
    losses = {}
    for weight in (0, 7.0):
        params = copy.deepcopy(train_params)
        params['loss_weights']['l1'] = weight
        models = build_models(fixture_config['model_params'])
        load_state(FIXTURE_DIR / 'checkpoint.pth.tar', models)
        model = GeneratorFullModel(models['kp_detector'], models['generator'], models['discriminator'], params).eval()
        torch.manual_seed(TRAIN_SEED)
        x = train_batch(ref)
        losses[weight], generated = model(x)  # with gradients: the equivariance losses need them
    assert 'l1' not in losses[0]
    expected = 7.0 * (generated['prediction'].detach() - x['driving']).abs().mean()
    assert float(expected) > 0 and torch.allclose(losses[7.0]['l1'], expected)
    assert all(torch.equal(losses[0][name], losses[7.0][name]) for name in losses[0])
    config = copy.deepcopy(fixture_config)
    config['train_params']['loss_weights']['l1'] = -1
    with pytest.raises(ConfigError, match='l1'):
        validate_config(config)
