"""CPABMM as its own package (modules/cpabmm/) beside TPSMM's: its training model is TPSMM's plus its
feature losses, TPSMM's model holds no CPABMM code, the packages import without a cycle and the old
modules.tpsmm names still lead to the same objects.

The networks are built here from the cartoon configs as modules.build does (without it), on CPU."""
import inspect
import re
import subprocess
import sys

import pytest
import torch
import yaml

from modules import cpabmm, tpsmm
from modules.cpabmm.feature_losses import KeypointSemanticLoss, StructureLoss
from modules.cpabmm.model import GeneratorFullModel as CpabGeneratorFullModel
from modules.tpsmm.model import GeneratorFullModel as TpsGeneratorFullModel
from tests.conftest import REPO
from tests.test_cpab_losses import small_sam, small_vit

WEIGHTS = {'structure': 0.1, 'sam': 1.0}


def load(name, **train):
    config = yaml.safe_load((REPO / 'config' / f'{name}.yaml').read_text())
    config['train_params'].update(train)
    return config


def networks(config):
    """The inpainting, dense motion and keypoint networks of a TPSMM / CPABMM config, seeded."""
    model = config['model_params']
    common = {k: v for k, v in model['common_params'].items() if k not in ('num_tps', 'num_cpab')}
    torch.manual_seed(0)
    if model.get('motion_model') == 'cpab':
        k = model['common_params']['num_cpab']
        dense = cpabmm.CpabDenseMotionNetwork(num_cpab=k, **common, **model['dense_motion_params'])
    else:
        k = model['common_params']['num_tps']
        dense = tpsmm.DenseMotionNetwork(num_tps=k, **common, **model['dense_motion_params'])
    return dict(kp_detector=tpsmm.KPDetector(num_tps=k, **common), dense_motion_network=dense,
                inpainting_network=tpsmm.InpaintingNetwork(**model['generator_params'], **common))


def full_model(cls, nets, train_params, **extractors):
    return cls(nets['kp_detector'], None, nets['dense_motion_network'], nets['inpainting_network'], train_params,
               **extractors).train()


def inputs():
    g = torch.Generator().manual_seed(1)
    return {'source': torch.rand(2, 3, 64, 64, generator=g), 'driving': torch.rand(2, 3, 64, 64, generator=g)}


def step(full, nets, x, epoch, objective=lambda losses, generated: sum(losses.values())):
    """One seeded forward, backward of objective(losses, generated) -> (losses, generated, {parameter: grad})."""
    for net in nets.values():
        net.zero_grad(set_to_none=True)
    torch.manual_seed(2)
    losses, generated = full(x, epoch)
    objective(losses, generated).backward()
    grads = {f'{name}.{p_name}': p.grad.clone() for name, net in nets.items()
             for p_name, p in net.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, generated, grads


@pytest.mark.parametrize('epoch', [1, 5])  # with transform dropout (random draws) and without
def test_cpabmm_model_is_tpsmms_plus_its_feature_losses(epoch):
    """CPABMM's model minus TPSMM's (same networks, inputs and seed) = the structure and keypoint
    semantic losses computed directly by the loss modules: values and gradients."""
    config = load('cpabmm-cartoon-64', use_vit_loss=True)
    config['train_params']['loss_weights'].update(WEIGHTS)
    nets, x = networks(config), inputs()

    cpab = full_model(CpabGeneratorFullModel, nets, config['train_params'], structure_extractor=small_vit(),
                      semantic_extractor=small_sam())
    cpab.structure.layer, cpab.structure.size = 1, 32
    cpab_losses, cpab_generated, cpab_grads = step(cpab, nets, x, epoch)

    structure = StructureLoss(small_vit(), layer=1, size=32)  # the same extractor weights, built apart
    semantic = KeypointSemanticLoss(small_sam())

    def extras(generated):
        return {'structure_loss': WEIGHTS['structure'] * structure(generated['prediction'], x['driving']),
                'sam': WEIGHTS['sam'] * semantic(x['source'], x['driving'], generated['kp_source']['fg_kp'],
                                                 generated['kp_driving']['fg_kp'])}

    tps = full_model(TpsGeneratorFullModel, nets, config['train_params'])
    tps_losses, tps_generated, tps_grads = step(tps, nets, x, epoch)
    _, _, extra_grads = step(tps, nets, x, epoch, lambda losses, generated: sum(extras(generated).values()))
    _, _, both_grads = step(tps, nets, x, epoch,
                            lambda losses, generated: sum(losses.values()) + sum(extras(generated).values()))

    # losses: TPSMM's, unchanged and in its order, then the extras as the loss modules give them
    assert list(cpab_losses) == list(tps_losses) + ['structure_loss', 'sam']
    for name, value in tps_losses.items():
        assert torch.equal(cpab_losses[name], value), name
    for name, value in extras(tps_generated).items():
        assert value > 0 and torch.equal(cpab_losses[name], value.detach()), name
    assert torch.equal(cpab_generated['prediction'], tps_generated['prediction'])
    # gradients: CPABMM's = those of TPSMM's losses + the directly computed extras (one backward: equal
    # bit for bit in practice), and CPABMM's - TPSMM's = the extras' alone (two backward passes: float32
    # rounding of the accumulation order, ~2e-5 on gradients of size ~7, against extras' gradients of
    # 7e-3 ... 0.25, which reach the keypoint detector too)
    assert cpab_grads.keys() == tps_grads.keys() == both_grads.keys() and extra_grads.keys() <= tps_grads.keys()
    assert extra_grads['kp_detector.fg_encoder.fc.weight'].abs().sum() > 0
    zero = torch.zeros(())
    for name, grad in cpab_grads.items():
        torch.testing.assert_close(grad, both_grads[name], rtol=0, atol=1e-6, msg=name)
        scale = 10 * max(1.0, tps_grads[name].abs().max().item())
        torch.testing.assert_close(grad - tps_grads[name], extra_grads.get(name, zero).expand_as(grad),
                                   rtol=0, atol=1e-6 * scale, msg=name)


@pytest.mark.parametrize('name', ['cpabmm-cartoon-64', 'tpsmm-cartoon-64'])
def test_without_feature_losses_cpabmms_model_trains_as_tpsmms(name):
    """A config that asks for no feature loss (the shipped CPABMM configs; any TPSMM config) loads no
    extractor (no weight files named) and gives TPSMM's losses and gradients, bit for bit."""
    config = load(name)
    nets, x = networks(config), inputs()
    cpab = full_model(CpabGeneratorFullModel, nets, config['train_params'])
    assert cpab.structure is None and cpab.semantic is None
    cpab_losses, _, cpab_grads = step(cpab, nets, x, epoch=1)
    tps_losses, _, tps_grads = step(full_model(TpsGeneratorFullModel, nets, config['train_params']), nets, x, epoch=1)
    assert list(cpab_losses) == list(tps_losses) == ['perceptual', 'equivariance_value', 'warp_loss']
    assert all(torch.equal(cpab_losses[k], tps_losses[k]) for k in tps_losses)
    assert cpab_grads.keys() == tps_grads.keys() and all(torch.equal(cpab_grads[k], tps_grads[k]) for k in tps_grads)


def test_tpsmms_model_holds_no_cpabmm_code():
    source = inspect.getsource(TpsGeneratorFullModel).lower()
    for pattern in (r'\bcpab', r'\bstructure', r'\bsam(?![a-z])', r'\bsemantic', r'\bvit(?![a-z])', r'\bextractor'):
        assert not re.search(pattern, source), pattern  # (sam: not grid_sample or sample)
    assert 'structure_extractor' not in inspect.signature(TpsGeneratorFullModel).parameters
    assert TpsGeneratorFullModel.extra_losses(None, {}, {}, 0) == {}
    assert CpabGeneratorFullModel.__mro__[1] is TpsGeneratorFullModel
    assert list(inspect.signature(CpabGeneratorFullModel).parameters)[:5] == \
        list(inspect.signature(TpsGeneratorFullModel).parameters)[:5]


def test_cpabmm_exports_and_tpsmm_knows_nothing_of_it():
    from modules.cpabmm import cpab, dense_motion, feature_losses, model
    assert set(cpabmm.__all__) == {'CPAB', 'CpabDenseMotionNetwork', 'GeneratorFullModel', 'KeypointSemanticLoss',
                                   'StructureLoss'}
    assert (cpabmm.CPAB, cpabmm.CpabDenseMotionNetwork, cpabmm.GeneratorFullModel) == \
        (cpab.CPAB, dense_motion.CpabDenseMotionNetwork, model.GeneratorFullModel)
    assert (cpabmm.StructureLoss, cpabmm.KeypointSemanticLoss) == \
        (feature_losses.StructureLoss, feature_losses.KeypointSemanticLoss)
    assert issubclass(cpabmm.CpabDenseMotionNetwork, tpsmm.DenseMotionNetwork)
    assert 'CPABMM' in cpabmm.__doc__ and 'motion_model: cpab' in cpabmm.__doc__
    assert not {'CPAB', 'CpabDenseMotionNetwork'} & set(tpsmm.__all__)
    with pytest.raises(AttributeError):
        tpsmm.CPAB


@pytest.mark.parametrize('code', [
    # TPSMM alone does not load CPABMM
    "import sys, modules.tpsmm, modules.tpsmm.model; assert 'modules.cpabmm' not in sys.modules",
    # either package first (CPABMM imports TPSMM)
    "import modules.cpabmm, modules.tpsmm",
    "import modules.tpsmm, modules.cpabmm",
    "from modules.cpabmm.model import GeneratorFullModel; import modules.tpsmm",
])
def test_the_packages_import_in_any_order(code):
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_cpabmms_dense_motion_has_tpsmms_state_dict_keys():
    """Checkpoints keep TPSMM's layout: the same key names, in the same order (shapes for K + 2
    transforms); the CPAB bases are not saved."""
    config = load('cpabmm-cartoon-64')
    model = config['model_params']
    common = {k: v for k, v in model['common_params'].items() if k != 'num_cpab'}
    tps_params = {k: v for k, v in model['dense_motion_params'].items()
                  if k not in ('max_iter', 'fit', 'fit_iterations', 'integration_steps')}
    with torch.device('meta'):
        cpab = cpabmm.CpabDenseMotionNetwork(num_cpab=10, **common, **model['dense_motion_params']).state_dict()
        tps = tpsmm.DenseMotionNetwork(num_tps=10, **common, **tps_params).state_dict()
    assert list(cpab) == list(tps)
    assert cpab['maps.weight'].shape[0] == tps['maps.weight'].shape[0] + 1 == 12
