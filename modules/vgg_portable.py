"""Deterministic stand-in weights for VGG19 `features`: `train_params.vgg19_weights: portable`.

ImageNet weights cannot be downloaded on our machines, so the reference fixture's perceptual loss and
the bundled cartoon model's training use pseudo-random VGG19 weights defined by a counter hash; they
are the same bits on every platform and need no file. (Random convolution features still make a
multi-scale structural loss; with ImageNet weights the loss is the paper's.) The definition:

    for the i-th conv layer of torchvision's vgg19().features (i = 0..15), tensor t = 2i (weight)
    and t = 2i + 1 (bias); element n in C order:
        h = splitmix64(seed * 2**48 + t * 2**36 + n)        (uint64, wrapping)
        u = (h >> 11) / 2**53                                 (float64 in [0, 1))
        weight = float32((2u - 1) * sqrt(3) * sqrt(2 / (in_channels * 9)))
        bias   = float32((2u - 1) * sqrt(3) * 0.05)

`tests/data/fomm_fixture_small/vgg19_fingerprint.json` holds per-tensor sums of the reference
weights to check the regeneration.
"""
import numpy as np
import torch

from modules.vgg_layers import vgg19_feature_layers

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(counter):
    """The splitmix64 finaliser applied to a uint64 array (wrapping arithmetic)."""
    with np.errstate(over='ignore'):
        z = counter + _GOLDEN_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def uniform01(seed, tensor_index, count):
    """`count` float64 values in [0, 1) for one tensor."""
    with np.errstate(over='ignore'):
        base = (np.uint64(seed) << np.uint64(48)) + (np.uint64(tensor_index) << np.uint64(36))
        h = splitmix64(np.arange(count, dtype=np.uint64) + base)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


def portable_vgg19_state_dict(seed=0, max_index=None):
    """{'features.<i>.weight'|'bias': float32 torch tensor} for every conv (index <= max_index if given)."""
    state_dict = {}
    convs = [(index, layer) for index, layer in vgg19_feature_layers(num_layers=37)
             if isinstance(layer, torch.nn.Conv2d)]
    for number, (index, conv) in enumerate(convs):
        if max_index is not None and index > max_index:
            continue
        out_c, in_c = conv.out_channels, conv.in_channels
        w = (2 * uniform01(seed, 2 * number, out_c * in_c * 9) - 1) * np.sqrt(3.0) * np.sqrt(2.0 / (in_c * 9))
        b = (2 * uniform01(seed, 2 * number + 1, out_c) - 1) * np.sqrt(3.0) * 0.05
        state_dict[f'features.{index}.weight'] = torch.from_numpy(w.astype(np.float32).reshape(out_c, in_c, 3, 3))
        state_dict[f'features.{index}.bias'] = torch.from_numpy(b.astype(np.float32))
    return state_dict
