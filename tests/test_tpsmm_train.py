"""One TPSMM training iteration (modules/tpsmm/training.py's TpsTraining.step) and one train_avd iteration
(AvdTraining.step) against the original implementation's (tests/data/tpsmm_fixture_small): random
draws, losses, generated tensors, gradients, clipping norms and the BatchNorm buffers after the step.
The steps run are the toolkit's own; the test only records what they do (hooks, a wrapped
clip_grad_norm_ and optimizer.step)."""
import json
import math

import pytest
import torch
import yaml

from modules.build import build_models
from modules.tpsmm.model import dropout_probability
from tests.conftest import assert_close, flat
from tests.test_train_step import record_grads_before_step  # the gradients an optimizer applies (after any clipping)
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


def record_grads_after_backward(models, into):
    """Keeps every parameter's gradient as the backward leaves it (before clipping or the step)."""
    for name, model in models.items():
        for parameter_name, parameter in model.named_parameters():
            parameter.register_post_accumulate_grad_hook(
                lambda p, key=(name, parameter_name): into.setdefault(key[0], {}).__setitem__(key[1], p.grad.clone()))


def recording_clip(models, calls):
    """torch.nn.utils.clip_grad_norm_ wrapped: each call is kept as {'name' (the model whose parameters
    it got), 'max_norm', 'norm_type', 'norm' (what it returned)}."""
    clip = torch.nn.utils.clip_grad_norm_
    owners = {id(p): name for name, model in models.items() for p in model.parameters()}

    def wrapper(parameters, max_norm, norm_type=2.0, *args, **kwargs):
        parameters = list(parameters)
        names = {owners.get(id(p)) for p in parameters}
        assert len(names) == 1 and None not in names, f'clip_grad_norm_ on parameters of {names}'
        name = names.pop()
        assert len(parameters) == len(list(models[name].parameters())), f'clip_grad_norm_ on part of {name}'
        norm = clip(parameters, max_norm, norm_type, *args, **kwargs)
        calls.append({'name': name, 'max_norm': max_norm, 'norm_type': norm_type, 'norm': norm.detach().clone()})
        return norm

    return wrapper


@pytest.fixture(scope='module')
def iteration(tps_config, checkpoint, tps_ref):
    """One iteration of TpsTraining.step (modules/tpsmm/training.py) at epoch 2 (dropout and the bg loss both active),
    seeded as the fixture was, with what it did recorded: the loss tensors and generated dict of its
    forward, get_encode as its warp loss called it, the bg predictor's outputs, the gradients after
    the backward, each clip_grad_norm_ call, and the gradients each optimizer stepped with."""
    from modules.tpsmm.training import TpsTraining
    train_params = tps_config['train_params']
    models = fresh_models(tps_config, checkpoint, ['inpainting_network', 'dense_motion_network', 'kp_detector',
                                                     'bg_predictor'])
    bg_calls, encoded, forward = [], [], []
    models['bg_predictor'].register_forward_hook(lambda module, inputs, output: bg_calls.append(output.detach()))
    get_encode = models['inpainting_network'].get_encode

    def recording_get_encode(*args, **kwargs):
        encoded.append([value.detach().clone() for value in get_encode(*args, **kwargs)])
        return encoded[-1]

    models['inpainting_network'].get_encode = recording_get_encode
    training = TpsTraining(train_params, models)
    assert training.prepare(models, torch.device('cpu'), [], None)
    training.generator_full.register_forward_hook(lambda module, inputs, output: forward.append(output))
    grads, applied, clip_calls = {}, {}, []
    record_grads_after_backward(models, grads)
    record_grads_before_step(training.optimizers['optimizer'], [
        (f'{name}/{n}', p) for name in ('inpainting_network', 'dense_motion_network', 'kp_detector')
        for n, p in models[name].named_parameters()], applied)
    record_grads_before_step(training.optimizers['optimizer_bg_predictor'], [
        (f'bg_predictor/{n}', p) for n, p in models['bg_predictor'].named_parameters()], applied)
    driving = tps_ref['inputs/driving']
    x = {'source': torch.cat([driving[:, :, 0], tps_ref['inputs/source']], dim=0),
         'driving': torch.cat([driving[:, :, 3], driving[:, :, 1]], dim=0)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.utils, 'clip_grad_norm_', recording_clip(models, clip_calls))
        torch.manual_seed(MANIFEST['train_seed'])
        values, generated = training.step(x, MANIFEST['train_epoch'])
    assert len(forward) == 1, 'one forward per step'
    losses = forward[0][0]
    left_grads = [f'{name}/{n}' for name, model in models.items() for n, p in model.named_parameters()
                  if p.grad is not None]
    return dict(models=models, training=training, values=values, losses=losses, generated=generated,
                clip_calls=clip_calls, bg_calls=bg_calls, grads=grads, applied=applied, encoded=encoded,
                left_grads=left_grads)


def test_dropout_schedule(tps_config, tps_ref):
    params = tps_config['train_params']
    assert dropout_probability(params, MANIFEST['train_epoch']) == pytest.approx(float(tps_ref['train/dropout/p']))
    assert dropout_probability(params, 0) == params['dropout_startp']
    assert dropout_probability(params, 30) == params['dropout_maxp']  # capped
    assert dropout_probability(params, params['dropout_epoch']) == 0


def test_losses_and_generated(iteration, tps_ref):
    assert list(iteration['values']) == list(iteration['losses'])
    for name in ('perceptual', 'equivariance_value', 'warp_loss', 'bg'):
        assert_close(iteration['losses'][name], tps_ref[f'train/losses/{name}'], name)
        assert iteration['values'][name] == pytest.approx(float(tps_ref[f'train/losses/{name}']), rel=1e-4, abs=1e-4)
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
    """get_encode as the warp loss called it in the step: the driving frame's occluded encoder maps."""
    assert len(iteration['encoded']) == 1
    assert len(iteration['encoded'][0]) == 4
    for i, encoded in enumerate(iteration['encoded'][0]):
        assert_close(encoded, tps_ref[f'train/get_encode/{i}'], f'get_encode/{i}')


CLIPPED = ('kp_detector', 'dense_motion_network', 'bg_predictor')  # as TPSMM's train.py: not the inpainting network


def test_gradients_and_clipping(iteration, tps_ref):
    """The gradients after the backward against the original's; the step clips the three networks'
    to an infinity norm of 10 (clip_grad_norm_ returning the original's norms) and each optimizer
    steps with the gradients rescaled by 10 / (norm + 1e-6) where the norm exceeds 10 (computed here
    from the recorded gradients), the inpainting network's untouched."""
    calls = iteration['clip_calls']
    assert [call['name'] for call in calls] == list(CLIPPED)
    for call in calls:
        assert call['max_norm'] == 10 and call['norm_type'] == math.inf, call
        assert_close(call['norm'], tps_ref[f'train/clip_total_norm/{call["name"]}'], call['name'], rtol=2e-2, atol=0)
    grads = iteration['grads']
    assert sorted(grads) == sorted(iteration['models'])
    for name, module in iteration['models'].items():
        assert sorted(grads[name]) == sorted(n for n, _ in module.named_parameters())
        for parameter_name, parameter in module.named_parameters():
            parameter.grad = grads[name][parameter_name]
        try:
            check_gradients(tps_ref, f'train/grads/{name}', module)
        finally:
            for parameter in module.parameters():
                parameter.grad = None
    norms = {call['name']: float(call['norm']) for call in calls}
    for name in CLIPPED:  # the norm returned is the largest |gradient| the backward left
        largest = max(float(g.abs().max()) for g in grads[name].values())
        assert norms[name] == pytest.approx(largest, rel=1e-6), name
    applied = iteration['applied']
    assert sorted(applied) == sorted(f'{name}/{n}' for name in grads for n in grads[name])
    for name in grads:
        norm = norms.get(name, 0.0)
        factor = 10 / (norm + 1e-6) if norm > 10 else 1.0
        for parameter_name, grad in grads[name].items():
            assert torch.allclose(applied[f'{name}/{parameter_name}'], grad * factor, rtol=1e-5, atol=1e-12), \
                f'{name}/{parameter_name}'
    assert norms['kp_detector'] > 10, 'the fixture exercises a real clip'
    for name, optimizer in iteration['training'].optimizers.items():
        assert all(state['step'] == 1 for state in optimizer.state.values()), f'{name} stepped once'
        assert len(optimizer.state) == sum(len(group['params']) for group in optimizer.param_groups), name
    assert iteration['left_grads'] == [], 'zero_grad after each step'


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
    """One AvdTraining.step (modules/tpsmm/training.py) seeded as the fixture: the keypoints it computed, its loss, the
    gradients the AVD optimizer stepped with and the buffers after the step against the original's."""
    from modules.tpsmm.training import AvdTraining
    models = fresh_models(tps_config, checkpoint, ['kp_detector', 'avd_network'])
    params = tps_config['train_avd_params']
    kp_calls, avd_calls, applied = [], [], {}
    models['kp_detector'].register_forward_hook(lambda module, inputs, output: kp_calls.append(output))
    models['avd_network'].register_forward_hook(lambda module, inputs, output: avd_calls.append((inputs, output)))
    training = AvdTraining(params, models)
    assert training.prepare(models, torch.device('cpu'), [], None)
    record_grads_before_step(training.optimizers['optimizer_avd'], list(models['avd_network'].named_parameters()),
                             applied)
    driving, source = tps_ref['inputs/driving'], tps_ref['inputs/source']
    x = {'source': torch.cat([source, driving[:, :, 0], driving[:, :, 1], driving[:, :, 2]]),
         'driving': torch.cat([driving[:, :, 3], driving[:, :, 2], driving[:, :, 0], source])}
    torch.manual_seed(MANIFEST['train_avd_seed'])
    values, _ = training.step(x, 0)
    assert len(kp_calls) == 2 and len(avd_calls) == 1
    (kp_source, kp_driving_random), rec = avd_calls[0]
    out = {'kp_source': kp_calls[0], 'kp_driving_gt': kp_calls[1], 'kp_driving_random': kp_driving_random,
           'rec': rec}
    assert torch.equal(kp_source['fg_kp'], kp_calls[0]['fg_kp'])
    for name in ('kp_source', 'kp_driving_gt', 'kp_driving_random', 'rec'):
        assert_close(out[name]['fg_kp'], tps_ref[f'train_avd/{name}/fg_kp'], name)
    assert list(values) == ['rec_kp']
    assert values['rec_kp'] == pytest.approx(float(tps_ref['train_avd/losses/rec_kp']), rel=1e-4, abs=1e-4)
    assert sorted(applied) == sorted(n for n, _ in models['avd_network'].named_parameters())
    for parameter_name, parameter in models['avd_network'].named_parameters():
        assert parameter.grad is None, 'zero_grad after the step'
        parameter.grad = applied[parameter_name]
    check_gradients(tps_ref, 'train_avd/grads/avd_network', models['avd_network'])
    assert all(p.grad is None for p in models['kp_detector'].parameters()), 'the keypoint detector does not learn'
    assert all(state['step'] == 1 for state in training.optimizers['optimizer_avd'].state.values())
    # train_avd leaves the keypoint detector in train mode: its running statistics move too
    check_buffers(tps_ref, 'train_avd/post_iteration_buffers', models, ('avd_network', 'kp_detector'))


def test_avd_learning_rate_drops_one_epoch_after_each_milestone(tps_config):
    """TPSMM's train_avd.py calls scheduler.step(epoch): milestone m lowers the rate from epoch m + 1."""
    from modules.tpsmm.training import AvdTraining
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
