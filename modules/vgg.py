"""VGG19 feature extractor of the perceptual loss, without torchvision.

The layers are laid out exactly as torchvision's `vgg19().features` (indices 0..29, up to relu5_1),
so the standard ImageNet file `vgg19-dcbb9e9d.pth` loads into it. Building a `Vgg19` never touches
the disk or the network: `load_vgg19_weights` reads a local file (by default from torch.hub's cache,
`$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`) and `fetch_vgg19_weights` downloads it there when
a network exists.
"""
import logging
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from modules.errors import InputError
from modules.vgg_layers import vgg19_feature_layers

log = logging.getLogger(__name__)

VGG19_FILENAME = 'vgg19-dcbb9e9d.pth'
VGG19_URL = 'https://download.pytorch.org/models/' + VGG19_FILENAME

# The original splits features[0:30] into 5 slices ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
_SLICE_ENDS = (2, 7, 12, 21, 30)


class Vgg19(nn.Module):
    """ImageNet-normalised VGG19 pyramid: x (B, 3, H, W) in [0, 1] -> [relu1_1, relu2_1, relu3_1,
    relu4_1, relu5_1] feature maps (64, 128, 256, 512, 512 channels at H/1, /2, /4, /8, /16).

    H and W must be at least 16 (four max-pools before relu5_1). The layers start uninitialised
    (random); call `load_vgg19_weights(vgg)` to load the ImageNet weights.
    Children keep torchvision's indices: slice1.0 is features.0, slice5.28 is features.28.
    """

    def __init__(self, requires_grad=False):
        super().__init__()
        layers = vgg19_feature_layers(_SLICE_ENDS[-1])
        start = 0
        for number, end in enumerate(_SLICE_ENDS, start=1):
            block = nn.Sequential()
            for index, layer in layers[start:end]:
                block.add_module(str(index), layer)
            setattr(self, f'slice{number}', block)
            start = end
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if not requires_grad:
            for param in self.parameters():
                param.requires_grad = False

    def slices(self):
        return [self.slice1, self.slice2, self.slice3, self.slice4, self.slice5]

    def load_features_state_dict(self, state_dict, source='<state dict>'):
        """Loads torchvision-layout weights: keys `features.<i>.weight/bias` (or `<i>.weight/bias`).

        Only the conv layers up to features.28 are used; other entries (classifier.*, deeper
        features) are ignored. Raises InputError naming the missing or mis-shaped keys.
        """
        by_index = {}
        for block in self.slices():
            for name, layer in block.named_children():
                by_index[name] = layer
        problems, new_values = [], {}
        for index, layer in by_index.items():
            if not isinstance(layer, nn.Conv2d):
                continue
            for field in ('weight', 'bias'):
                target = getattr(layer, field)
                value = state_dict.get(f'features.{index}.{field}', state_dict.get(f'{index}.{field}'))
                if value is None:
                    problems.append(f'missing features.{index}.{field}')
                elif tuple(value.shape) != tuple(target.shape):
                    problems.append(f'features.{index}.{field} has shape {list(value.shape)}, '
                                    f'expected {list(target.shape)}')
                else:
                    new_values[target] = value
        if problems:
            more = f' and {len(problems) - 3} more' if len(problems) > 3 else ''
            raise InputError(f'{source} is not a VGG19 weight file ({"; ".join(problems[:3])}{more}): '
                             f'use torchvision\'s {VGG19_FILENAME} ({VGG19_URL})')
        with torch.no_grad():
            for target, value in new_values.items():
                target.copy_(value)

    def forward(self, x, levels=5):
        """x: (B, 3, H, W) in [0, 1] -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1][:levels]
        (the deeper slices are not computed)."""
        out = (x - self.mean) / self.std
        features = []
        for block in self.slices()[:levels]:
            out = block(out)
            features.append(out)
        return features


PORTABLE = 'portable'  # train_params.vgg19_weights value: deterministic stand-in weights, no file


def default_vgg19_path():
    """Where torch.hub keeps the standard weights: $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth."""
    return Path(torch.hub.get_dir()) / 'checkpoints' / VGG19_FILENAME


def _missing_message(path, configured):
    where = 'train_params.vgg19_weights points at' if configured else 'expected in torch.hub\'s cache at'
    return (f'VGG19 weights for the perceptual loss not found ({where} {path}): download {VGG19_URL} '
            f'and put it at {default_vgg19_path()}, or set train_params.vgg19_weights to a local copy '
            f'(or set every loss_weights.perceptual to 0 to train without it)')


def fetch_vgg19_weights(path=None):
    """Makes sure the weight file exists locally and returns its path.

    `path` (a user-given file) must exist. Without it the torch.hub cache is used, and the file is
    downloaded there (hash-checked) if it is missing; without a network this raises InputError.
    """
    if path == PORTABLE:
        return path
    if path is not None:
        if not Path(path).is_file():
            raise InputError(_missing_message(path, configured=True))
        return Path(path)
    target = default_vgg19_path()
    if not target.is_file():
        log.info('downloading %s to %s', VGG19_URL, target)
        try:
            torch.hub.load_state_dict_from_url(VGG19_URL, progress=True, check_hash=True, map_location='cpu')
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; hash mismatch a RuntimeError
            raise InputError(_missing_message(target, configured=False) + f' [download failed: {e}]') from e
    return target


def load_vgg19_weights(vgg, path=None):
    """Loads the VGG19 ImageNet weights into `vgg` from a local file; never downloads.

    path 'portable' (PORTABLE) loads the deterministic pseudo-random stand-in weights of
    modules.vgg_portable instead (no file; what the bundled cartoon model was trained with).

    path: a `vgg19-dcbb9e9d.pth`-style file (only its `features.*` entries are read; a file holding
    nothing else works too). None means torch.hub's cache. Raises InputError with the file to put
    where if it is missing or unreadable.
    """
    if path == PORTABLE:
        from modules.vgg_portable import portable_vgg19_state_dict
        vgg.load_features_state_dict(portable_vgg19_state_dict(seed=0, max_index=28), source=PORTABLE)
        log.info('perceptual loss: portable pseudo-random VGG19 weights (not ImageNet)')
        return vgg
    configured = path is not None
    path = Path(path) if configured else default_vgg19_path()
    if not path.is_file():
        raise InputError(_missing_message(path, configured))
    try:
        state_dict = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise InputError(f'{path}: cannot read the VGG19 weights ({type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else "corrupt file"}); '
                         f'download {VGG19_URL} again') from e
    if not isinstance(state_dict, dict):
        raise InputError(f'{path} is not a VGG19 state dict (it holds a {type(state_dict).__name__})')
    vgg.load_features_state_dict(state_dict, source=str(path))
    log.debug('loaded VGG19 weights from %s', path)
    return vgg
