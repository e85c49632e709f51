"""The TPSMM fixture's checkpoint, rebuilt from its recipe (tests/data/tpsmm_fixture_small/
checkpoint_spec.json): the original file is ~100 MB of seeded random float32 (two ResNet-18s), so the
fixture ships, per state-dict entry, how it was drawn. Each 'uniform' entry of shape S holds, for
element n (C order), float32((2u - 1) * half_width [+ center]) with u the splitmix64 counter hash
of (seed, stream, n) (modules.vgg_portable.uniform01: the scheme of the FOMM fixture's VGG19);
'zero_int64' is a 0-d int64 zero (num_batches_tracked); 'constant' is copied from fixtures.pt."""
import json
from pathlib import Path

import numpy as np
import torch

from modules.vgg_portable import uniform01

TPSMM_FIXTURE_DIR = Path(__file__).resolve().parent / 'data' / 'tpsmm_fixture_small'


def spec_tensor(seed, entry, constants):
    """One state-dict entry of the spec as a torch tensor."""
    if entry['init'] == 'zero_int64':
        return torch.tensor(0, dtype=torch.int64)
    if entry['init'] == 'constant':
        return constants[entry['fixture_key']].clone()
    if entry['init'] != 'uniform':
        raise ValueError(f"unknown init {entry['init']!r} for {entry['key']}")
    shape = tuple(entry['shape'])
    values = (2.0 * uniform01(seed, entry['stream'], int(np.prod(shape, dtype=np.int64)))  - 1.0) * entry['half_width']
    if 'center' in entry:
        values = values + np.asarray(entry['center'], dtype=np.float64)
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def build_checkpoint(folder=TPSMM_FIXTURE_DIR):
    """The checkpoint dict the original Logger wrote: {module: state dict, 'optimizer_avd': ...,
    'epoch': 0}, top-level keys in the original's order."""
    spec = json.loads((folder / 'checkpoint_spec.json').read_text())
    constants = torch.load(folder / 'fixtures.pt', map_location='cpu', weights_only=True)
    checkpoint = {}
    for name in spec['top_level_keys']:
        if name in spec['state_dicts']:
            checkpoint[name] = {entry['key']: spec_tensor(spec['seed'], entry, constants)
                                for entry in spec['state_dicts'][name]}
        elif name in spec['optimizers']:
            optimizer = json.loads(json.dumps(spec['optimizers'][name]))
            for group in optimizer['param_groups']:
                group['betas'] = tuple(group['betas'])
            checkpoint[name] = optimizer
        else:
            checkpoint[name] = spec[name]
    return checkpoint


def fingerprint_mismatches(folder=TPSMM_FIXTURE_DIR, checkpoint=None):
    """Entries whose rebuilt tensor does not match the spec's fingerprint (first four values exactly,
    float64 sum and absolute sum within 1e-12 relative)."""
    spec = json.loads((folder / 'checkpoint_spec.json').read_text())
    checkpoint = checkpoint or build_checkpoint(folder)
    bad = []
    for name, entries in spec['state_dicts'].items():
        for entry in entries:
            values = checkpoint[name][entry['key']].double().flatten()
            expected = entry['fingerprint']
            scale = max(1.0, expected['abs_sum'])
            if (values[:4].tolist() != expected['first4'] or abs(values.sum().item() - expected['sum']) > 1e-12 * scale
                    or abs(values.abs().sum().item() - expected['abs_sum']) > 1e-12 * scale):
                bad.append(f"{name}/{entry['key']}")
    return bad
