"""For every official config, our modules have exactly the original's state-dict keys, key order,
shapes, dtypes and parameter counts (tests/data/fomm_keys/<config>.json, made from the original)."""
import json

import pytest
import torch

from modules.build import build_models
from modules.config import load_config
from tests.conftest import KEYS_DIR, OFFICIAL_CONFIGS, REPO


def reference(name):
    return json.loads((KEYS_DIR / f'{name}.json').read_text())


@pytest.mark.parametrize('name', OFFICIAL_CONFIGS)
def test_state_dict_keys_order_and_shapes(name):
    ref = reference(name)
    config = load_config(REPO / 'config' / f'{name}.yaml')
    models = build_models(config['model_params'], device='meta')
    for module_name, module in models.items():
        state = module.state_dict()
        assert list(state) == list(ref[module_name]), f'{name}: {module_name} key order'
        for key, shape in ref[module_name].items():
            assert list(state[key].shape) == shape, f'{name}: {module_name}.{key}'
        details = ref['details'][module_name]
        dtypes = {k: str(v.dtype).replace('torch.', '') for k, v in state.items() if v.dtype != torch.float32}
        assert dtypes == details['non_float32_keys'], f'{name}: {module_name} dtypes'
        buffers = [k for k in state if k not in dict(module.named_parameters())]
        assert buffers == details['buffer_keys'], f'{name}: {module_name} buffers'
        assert sum(p.numel() for p in module.parameters()) == ref['num_parameters'][module_name]
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        assert trainable == details['num_trainable_parameters']


def test_meta_build_equals_real_build():
    """The meta-device build used for key checks has the same state dict as a real one."""
    config = load_config(REPO / 'config' / 'mgif-256.yaml')
    real = build_models(config['model_params'], names=['kp_detector', 'discriminator'])
    meta = build_models(config['model_params'], names=['kp_detector', 'discriminator'], device='meta')
    for name in real:
        a, b = real[name].state_dict(), meta[name].state_dict()
        assert [(k, v.shape, v.dtype) for k, v in a.items()] == [(k, v.shape, v.dtype) for k, v in b.items()]
    # Constructor initialisation that the original does: the Jacobian head starts at the identity.
    jacobian = real['kp_detector'].jacobian
    assert torch.count_nonzero(jacobian.weight) == 0
    assert jacobian.bias.tolist() == [1.0, 0.0, 0.0, 1.0]  # single_jacobian_map: one shared map
    assert int(real['kp_detector'].predictor.encoder.down_blocks[0].norm.num_batches_tracked) == 0
