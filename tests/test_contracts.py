"""Contracts of the originals that their users rely on: the no-jacobian ablation config animates (with
the relative jacobian skipped), TPSMM's demo.relative_kp, float64 TPSMM keeps its dtype, and the
original's Python API (demo.load_checkpoints + demo.make_animation) runs demo.py's optimised models
without changing the models it returns. (Results beside --checkpoint: tests/test_reconstruction_animate.py.)"""
import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from toolkit import demo
from toolkit.animation import Animator, to_tensor
from modules.build import build_models
from modules.config import validate_config
from modules.errors import ConfigError
from modules.inference import NearestUpsampleConv2d, WinogradConv2d, inference_copy
from tests.conftest import FIXTURE_DIR, REPO
from tests.tpsmm_fixture import TPSMM_FIXTURE_DIR, build_checkpoint


# ----------------------------------------------------------------------------------------------
# The no-jacobian ablation
# ----------------------------------------------------------------------------------------------

def ablation_config():
    """The FOMM fixture's vox-like config with the jacobians switched off, nothing else changed:
    use_relative_jacobian stays true, as in a copy of vox-256.yaml."""
    config = yaml.safe_load((FIXTURE_DIR / 'config.yaml').read_text())
    config['model_params']['common_params']['estimate_jacobian'] = False
    assert config['animate_params']['normalization_params']['use_relative_jacobian'] is True
    return config


def test_the_ablation_animates_with_relative_movement_only():
    """The original's normalize_kp would have crashed on the missing jacobian; ours animates with the
    relative movement alone: the frames equal the generator called directly with keypoints moved by
    hand (value = kp_driving - kp_initial + kp_source, no jacobian)."""
    config = validate_config(ablation_config(), 'ablation.yaml')
    torch.manual_seed(0)
    models = build_models(config['model_params'], names=('generator', 'kp_detector'))
    generator, kp_detector = models['generator'].eval(), models['kp_detector'].eval()
    rng = np.random.default_rng(0)
    source = rng.random((1, 3, 64, 64), dtype=np.float32)
    frames = torch.from_numpy(rng.random((3, 3, 64, 64), dtype=np.float32))
    normalization = config['animate_params']['normalization_params']
    _, out = Animator(generator, kp_detector, torch.from_numpy(source), normalization)(frames)
    with torch.inference_mode():
        kp_source = kp_detector(torch.from_numpy(source))
        assert 'jacobian' not in kp_source
        for t in range(3):
            kp_driving, kp_initial = kp_detector(frames[t:t + 1]), kp_detector(frames[:1])
            moved = {'value': kp_driving['value'] - kp_initial['value'] + kp_source['value']}
            expected = generator(torch.from_numpy(source), kp_source=kp_source, kp_driving=moved)['prediction']
            torch.testing.assert_close(out['prediction'][t:t + 1], expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(out['kp_norm']['value'][t:t + 1], moved['value'], atol=1e-6, rtol=0)


def test_the_ablation_runs_end_to_end_and_training_names_the_jacobian_loss(tmp_path):
    """demo.py with the ablation config and a checkpoint of it: exit 0, the warning; training such a
    config with equivariance_jacobian != 0 is refused by the training model in one line."""
    config = ablation_config()
    config_path = tmp_path / 'ablation.yaml'
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    torch.manual_seed(0)
    models = build_models(validate_config(config)['model_params'], names=('generator', 'kp_detector'))
    torch.save({name: model.state_dict() for name, model in models.items()}, tmp_path / 'ablation.pth.tar')
    out = subprocess.run([sys.executable, 'demo.py', '--config', config_path, '--checkpoint',
                          tmp_path / 'ablation.pth.tar', '--source_image', REPO / 'pretrained/cartoon-64/source.png',
                          '--driving_video', REPO / 'pretrained/cartoon-64/driving.mp4', '--relative', '--cpu',
                          '--result_video', tmp_path / 'r.mp4'], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'relative jacobian is skipped' in out.stderr and (tmp_path / 'r.mp4').is_file()

    from modules.model import GeneratorFullModel
    full = build_models(validate_config(config)['model_params'], device='meta')
    with pytest.raises(ConfigError, match='equivariance_jacobian is non-zero but the keypoint detector estimates no '
                                          'jacobians'):
        GeneratorFullModel(full['kp_detector'], full['generator'], full['discriminator'], config['train_params'])


# ----------------------------------------------------------------------------------------------
# TPSMM's demo API
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tps_ref():
    return torch.load(TPSMM_FIXTURE_DIR / 'fixtures.pt', map_location='cpu', weights_only=True)


def test_relative_kp_is_tpsmms(tps_ref):
    """`from demo import relative_kp` as in TPSMM: the original's outputs for every driving frame."""
    from demo import relative_kp
    kp_source = {'fg_kp': tps_ref['kp_source/fg_kp']}
    initial = {'fg_kp': tps_ref['kp_driving/0/fg_kp']}
    for t in range(4):
        got = relative_kp(kp_source=kp_source, kp_driving={'fg_kp': tps_ref[f'kp_driving/{t}/fg_kp']},
                          kp_driving_initial=initial)
        torch.testing.assert_close(got['fg_kp'], tps_ref[f'relative_kp/{t}/fg_kp'], atol=1e-6, rtol=0)


def test_float64_tpsmm_keeps_its_dtype(tps_ref):
    """create_transformations no longer forces float32: a float64 model computes in float64, and its
    outputs agree with the original's float32 ones to the fixture's float32 rounding."""
    config = validate_config(yaml.safe_load((TPSMM_FIXTURE_DIR / 'config.yaml').read_text()))
    dense_motion = build_models(config['model_params'], names=('dense_motion_network',))['dense_motion_network']
    dense_motion.load_state_dict(build_checkpoint()['dense_motion_network'])
    dense_motion = dense_motion.double().eval()
    source = tps_ref['inputs/source'].double()
    kp_source = {'fg_kp': tps_ref['kp_source/fg_kp'].double()}
    kp_driving = {'fg_kp': tps_ref['kp_driving/1/fg_kp'].double()}
    grids = dense_motion.create_transformations(dense_motion.down(source), kp_driving, kp_source, None)
    assert grids.dtype == torch.float64
    with torch.no_grad():
        out = dense_motion(source_image=source, kp_driving=kp_driving, kp_source=kp_source, bg_param=None,
                           dropout_flag=False)
    assert out['deformation'].dtype == torch.float64
    torch.testing.assert_close(out['deformation'].float(), tps_ref['dense_motion/nobg/1/deformation'],
                               atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------
# The original's Python API gets the inference rewrites
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def api_models():
    return demo.load_checkpoints(FIXTURE_DIR / 'config.yaml', FIXTURE_DIR / 'checkpoint.pth.tar', cpu=True)


def state_copy(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def per_frame_unoptimised(source, frames, generator, kp_detector):
    """The original make_animation's loop on the models as loaded (no rewrite), relative + adapt scale."""
    from toolkit.animation import normalize_kp
    out = []
    with torch.no_grad():
        src = to_tensor(source)
        kp_source, kp_initial = kp_detector(src), kp_detector(to_tensor(frames[0]))
        for frame in frames:
            kp_norm = normalize_kp(kp_source, kp_detector(to_tensor(frame)), kp_initial, adapt_movement_scale=True,
                                   use_relative_movement=True, use_relative_jacobian=True)
            out.append(generator(src, kp_source=kp_source, kp_driving=kp_norm)['prediction'][0].permute(1, 2, 0).numpy())
    return np.stack(out)


def test_make_animation_runs_the_rewritten_models_and_leaves_the_given_ones_alone(api_models):
    generator, kp_detector = api_models
    before = {name: state_copy(model) for name, model in (('generator', generator), ('kp_detector', kp_detector))}
    rng = np.random.default_rng(1)
    source = rng.random((64, 64, 3), dtype=np.float32)
    frames = [np.roll(source, (t, 2 * t), axis=(0, 1)) for t in range(4)]
    got = np.stack(demo.make_animation(source, frames, generator, kp_detector, relative=True,
                                       adapt_movement_scale=True, cpu=True))
    np.testing.assert_allclose(got, per_frame_unoptimised(source, frames, generator, kp_detector), atol=1e-4)
    for name, model in (('generator', generator), ('kp_detector', kp_detector)):
        after = model.state_dict()
        assert list(after) == list(before[name]), f'{name}: the state-dict keys changed'
        assert all(torch.equal(after[k], before[name][k]) for k in after), f'{name}: the weights changed'
    # The rewrite really ran, on a copy made by make_animation: batch norms folded, upsampling
    # convolutions rewritten.
    from modules import inference
    assert generator in inference._INFERENCE_COPIES and kp_detector in inference._INFERENCE_COPIES
    optimized = inference_copy(generator)
    assert optimized is not generator and inference_copy(generator) is optimized  # made once, reused
    assert any(isinstance(m, NearestUpsampleConv2d) for m in optimized.modules())
    assert not any(isinstance(m, (NearestUpsampleConv2d, WinogradConv2d)) for m in generator.modules())
    def batch_norms(model):
        return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert batch_norms(optimized) < batch_norms(generator)  # those after a convolution are folded


def test_make_animation_follows_weight_changes_and_training_mode(api_models):
    """A fine-tuning step between two calls (weights changed in place) is seen: the second call animates
    with the new weights, not a stale optimised copy; a model in training mode is used as it is."""
    generator, kp_detector = copy.deepcopy(api_models[0]), copy.deepcopy(api_models[1])
    rng = np.random.default_rng(2)
    source = rng.random((64, 64, 3), dtype=np.float32)
    frames = [np.roll(source, (2 * t, t), axis=(0, 1)) for t in range(3)]
    first = np.stack(demo.make_animation(source, frames, generator, kp_detector, cpu=True))
    stale = inference_copy(generator)
    with torch.no_grad():
        generator.final.weight.mul_(0.5)  # in place, as an optimizer step
    second = np.stack(demo.make_animation(source, frames, generator, kp_detector, cpu=True))
    assert inference_copy(generator) is not stale
    assert np.abs(second - first).max() > 1e-2
    np.testing.assert_allclose(second, per_frame_unoptimised(source, frames, generator, kp_detector), atol=1e-4)
    generator.train()
    assert inference_copy(generator) is generator
