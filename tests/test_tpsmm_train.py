"""One TPSMM training iteration (train.py) and one train_avd iteration against the original
implementation's (tests/data/tpsmm_fixture_small): random draws, losses, generated tensors,
gradients, clipping norms and the BatchNorm buffers after the step."""
import json
import math

import pytest
import torch
import yaml

from modules.build import build_models
from modules.tpsmm.model import GeneratorFullModel, avd_losses, dropout_probability
from tests.conftest import assert_close, flat
from tests.tpsmm_fixture import TPSMM_FIXTURE_DIR, build_checkpoint

MANIFEST = json.loads((TPSMM_FIXTURE_DIR / 'manifest.json').read_text())
ZERO_GRADIENTS = MANIFEST['mathematically_zero_gradients']['entries']  # rounding noise only: absolute check


@pytest.fixture(scope='module')
def tps_ref():
    return torch.load(TPSMM_FIXTURE_DIR / 'fixtures.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def tps_config():
    config = yaml.safe_load((TPSMM_FIXTURE_DIR / 'config.yaml').read_text())
    config['train_params']['vgg19_weights'] = 'portable'  # the fixture's VGG19 stand-in (seed 0)
    return config


@pytest.fixture(scope='module')
def checkpoint():
    return build_checkpoint()


def fresh_models(config, checkpoint, names):
    models = build_models(config['model_params'], names=names)
    for name, model in models.items():
        model.load_state_dict(checkpoint[name], strict=True)
        model.train()  # TPSMM's train.py and train_avd.py never call eval()
    return models


def check_gradients(ref, prefix, module):
    """Each parameter's gradient against the reference: 'full' tensors max|diff| <= 5e-2 max|ref| (or an
    absolute 1e-5 for the mathematically-zero ones), 'stats' (sum, sum|g|, sum g^2, max|g|, numel) of
    the large ones within 2e-2 relative (sum: of sum|g|), 'sample' entries as 'full'."""
    checked = 0
    for name, parameter in module.named_parameters():
        grad = parameter.grad
        full = f'{prefix}/full/{name}'
        if full in ref:
            expected = ref[full]
            if full in ZERO_GRADIENTS:
                assert grad.abs().max() < 1e-5, full
            else:
                assert (grad - expected).abs().max() <= 5e-2 * expected.abs().max(), full
            checked += 1
            continue
        stats = ref[f'{prefix}/stats/{name}']
        g = grad.double().flatten()
        ours = torch.stack([g.sum(), g.abs().sum(), (g ** 2).sum(), g.abs().max(), torch.tensor(g.numel()).double()])
        assert ours[4] == stats[4], name
        assert abs(ours[0] - stats[0]) <= 2e-2 * stats[1], f'{full} sum'
        for i in (1, 2, 3):
            assert abs(ours[i] - stats[i]) <= 2e-2 * stats[i], f'{full} stat {i}'
        sample = ref[f'{prefix}/sample/{name}']
        step = g.numel() // 256
        assert (grad.flatten()[::step][:256] - sample).abs().max() <= 5e-2 * sample.abs().max(), f'{full} sample'
        checked += 1
    assert checked == len(list(module.parameters()))


@pytest.fixture(scope='module')
def iteration(tps_config, checkpoint, tps_ref):
    """One iteration exactly as TPSMM's train.py at epoch 2 (dropout and the bg loss both active)."""
    train_params = tps_config['train_params']
    models = fresh_models(tps_config, checkpoint, ['inpainting_network', 'dense_motion_network', 'kp_detector',
                                                     'bg_predictor'])
    bg_calls = []
    models['bg_predictor'].register_forward_hook(lambda module, inputs, output: bg_calls.append(output.detach()))
    generator_full = GeneratorFullModel(models['kp_detector'], models['bg_predictor'], models['dense_motion_network'],
                                        models['inpainting_network'], train_params)
    lr = train_params['lr_generator']
    parameters = [p for name in ('inpainting_network', 'dense_motion_network', 'kp_detector')
                  for p in models[name].parameters()]
    optimizer = torch.optim.Adam([{'params': parameters, 'initial_lr': lr}], lr=lr, betas=(0.5, 0.999),
                                 weight_decay=1e-4)
    optimizer_bg = torch.optim.Adam([{'params': models['bg_predictor'].parameters(), 'initial_lr': lr}], lr=lr,
                                    betas=(0.5, 0.999), weight_decay=1e-4)
    driving = tps_ref['inputs/driving']
    x = {'source': torch.cat([driving[:, :, 0], tps_ref['inputs/source']], dim=0),
         'driving': torch.cat([driving[:, :, 3], driving[:, :, 1]], dim=0)}
    torch.manual_seed(MANIFEST['train_seed'])
    losses, generated = generator_full(x, epoch=MANIFEST['train_epoch'])
    sum(value.mean() for value in losses.values()).backward()
    grads = {name: {n: p.grad.clone() for n, p in models[name].named_parameters()} for name in models}
    norms = {name: torch.nn.utils.clip_grad_norm_(models[name].parameters(), max_norm=10, norm_type=math.inf)
             for name in ('kp_detector', 'dense_motion_network', 'bg_predictor')}  # not the inpainting network
    clipped = {name: {n: p.grad.clone() for n, p in models[name].named_parameters()} for name in models}
    with torch.no_grad():
        encoded = models['inpainting_network'].get_encode(x['driving'], generated['occlusion_map'])
    optimizer.step()
    optimizer_bg.step()
    return dict(models=models, losses=losses, generated=generated, norms=norms, bg_calls=bg_calls, grads=grads,
                clipped=clipped, encoded=encoded)


def test_dropout_schedule(tps_config, tps_ref):
    params = tps_config['train_params']
    assert dropout_probability(params, MANIFEST['train_epoch']) == pytest.approx(float(tps_ref['train/dropout/p']))
    assert dropout_probability(params, 0) == params['dropout_startp']
    assert dropout_probability(params, 30) == params['dropout_maxp']  # capped
    assert dropout_probability(params, params['dropout_epoch']) == 0


def test_losses_and_generated(iteration, tps_ref):
    for name in ('perceptual', 'equivariance_value', 'warp_loss', 'bg'):
        assert_close(iteration['losses'][name], tps_ref[f'train/losses/{name}'], name)
    generated = flat('train/generated', iteration['generated'], {})
    expected = [k for k in tps_ref if k.startswith('train/generated/')]
    assert set(expected) <= set(generated)
    for key in expected:
        assert_close(generated[key], tps_ref[key], key)
    # the dropout mask drawn first: TPS 1 of sample 1 dropped, so its contribution is exactly 0
    assert torch.all(iteration['generated']['contribution_maps'][1, 1] == 0)
    for i, call in enumerate(iteration['bg_calls'][:2]):
        assert_close(call, tps_ref[f'train/bg_predictor_calls/{i}'], f'bg call {i}')


def test_warp_loss_targets(iteration, tps_ref):
    """get_encode as the warp loss calls it (before the step): the driving frame's occluded encoder maps."""
    assert len(iteration['encoded']) == 4
    for i, encoded in enumerate(iteration['encoded']):
        assert_close(encoded, tps_ref[f'train/get_encode/{i}'], f'get_encode/{i}')


def test_gradients_and_clipping(iteration, tps_ref):
    for name, norm in iteration['norms'].items():
        assert_close(norm, tps_ref[f'train/clip_total_norm/{name}'], name, rtol=2e-2, atol=0)
    for name, module in iteration['models'].items():
        for parameter_name, parameter in module.named_parameters():
            parameter.grad = iteration['grads'][name][parameter_name]
        check_gradients(tps_ref, f'train/grads/{name}', module)
    # the infinity-norm clip at 10 rescales only the networks whose largest gradient exceeds it
    for name, grads in iteration['clipped'].items():
        norm = float(iteration['norms'].get(name, 0))
        factor = 10 / (norm + 1e-6) if norm > 10 else 1.0
        for parameter_name, clipped in grads.items():
            assert torch.allclose(clipped, iteration['grads'][name][parameter_name] * factor, rtol=1e-5, atol=1e-12)
    assert float(iteration['norms']['kp_detector']) > 10, 'the fixture exercises a real clip'



def check_buffers(ref, prefix, models, names):
    """Every non-parameter state-dict entry (BatchNorm statistics) of models[names] against ref."""
    for name in names:
        parameters = dict(models[name].named_parameters())
        buffers = {key: value for key, value in models[name].state_dict().items() if key not in parameters}
        assert buffers
        for key, value in buffers.items():
            expected = ref[f'{prefix}/{name}/{key}']
            if value.dtype == torch.int64:
                assert torch.equal(value, expected), key
            else:
                assert_close(value, expected, key)


def test_buffers_after_the_iteration(iteration, tps_ref):
    check_buffers(tps_ref, 'train/post_iteration_buffers', iteration['models'], ('kp_detector', 'bg_predictor'))


def test_train_avd_iteration(tps_config, checkpoint, tps_ref):
    models = fresh_models(tps_config, checkpoint, ['kp_detector', 'avd_network'])
    params = tps_config['train_avd_params']
    optimizer = torch.optim.Adam(models['avd_network'].parameters(), lr=params['lr'], betas=(0.5, 0.999))
    driving, source = tps_ref['inputs/driving'], tps_ref['inputs/source']
    x = {'source': torch.cat([source, driving[:, :, 0], driving[:, :, 1], driving[:, :, 2]]),
         'driving': torch.cat([driving[:, :, 3], driving[:, :, 2], driving[:, :, 0], source])}
    torch.manual_seed(MANIFEST['train_avd_seed'])
    losses, out = avd_losses(models['kp_detector'], models['avd_network'], x, params)
    for name in ('kp_source', 'kp_driving_gt', 'kp_driving_random', 'rec'):
        assert_close(out[name]['fg_kp'], tps_ref[f'train_avd/{name}/fg_kp'], name)
    assert_close(losses['rec_kp'], tps_ref['train_avd/losses/rec_kp'], 'rec_kp')
    losses['rec_kp'].backward()
    check_gradients(tps_ref, 'train_avd/grads/avd_network', models['avd_network'])
    optimizer.step()
    # train_avd leaves the keypoint detector in train mode: its running statistics move too
    check_buffers(tps_ref, 'train_avd/post_iteration_buffers', models, ('avd_network', 'kp_detector'))


def test_avd_learning_rate_drops_one_epoch_after_each_milestone(tps_config):
    """TPSMM's train_avd.py calls scheduler.step(epoch): milestone m lowers the rate from epoch m + 1."""
    from train import AvdTraining
    models = build_models(tps_config['model_params'], names=['avd_network'])
    params = dict(tps_config['train_avd_params'], lr=1.0, epoch_milestones=[2])
    training = AvdTraining(params, models)
    scheduler = training.schedulers(0)['optimizer_avd']
    rates = []
    for _ in range(5):
        rates.append(training.optimizers['optimizer_avd'].param_groups[0]['lr'])
        training.optimizers['optimizer_avd'].step()  # (no gradients: nothing moves; the order torch expects)
        scheduler.step()
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])
