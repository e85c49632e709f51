"""Export a trained model to ONNX: three graphs split where the animation core splits the work, so a
runtime still encodes the source once per video (export.py; docs/onnx.md).

    kp_detector.onnx     frames (B, C, H, W) in [0, 1] -> the keypoints: FOMM 'value' (B, K, 2) and
                         'jacobian' (B, K, 2, 2) if the model has them; TPSMM 'fg_kp' (B, 5K, 2)
    source_encoder.onnx  source (B, C, H, W) -> the generator's encoder features 'features_0', ...
                         (one map, or one per level: the generator's encode())
    frame.onnx           source, features_0.., the source's keypoints ('source_value', ...) and the
                         keypoints to move it to ('driving_value', ...), all batch B -> 'prediction'
                         (B, C, H, W) in [0, 1], and the cheap extras the visualisation shows
                         ('deformed', 'mask', 'occlusion_map' ...)
    model.json           what the runtime needs and checks (toolkit.onnx_runtime)

Every graph has a dynamic batch dimension; the frame size is fixed by the config. The networks are
exported after the inference rewrites the torch path runs (modules.inference.optimize_for_inference:
batch norms folded, x2 upsampling + 3x3 convolution as one transposed convolution), except the
Winograd convolutions, a torch CPU kernel choice: ONNX Runtime picks its own convolution algorithms.
The relative-motion arithmetic (toolkit.animation.normalize_kp / relative_kp) is not in any graph:
it stays in Python, shared by both backends, since it depends on the first driving frame and on
the sources' convex hulls (data-dependent, once per video).

torch.inverse has no ONNX operator. FOMM's 2x2 jacobians are inverted in closed form (adjugate over
determinant); TPSMM's thin-plate spline systems ((5 + 3)-square, one per transformation and frame)
by Gauss-Jordan elimination with partial pivoting in float64, unrolled at export time
(gauss_jordan_inverse); standard ONNX operators only.

Not exported: CPABMM. Its keypoint-to-transformation step is an iterative optimisation (a fit
whose number of steps depends on the data), not a fixed graph; it is refused with one InputError
line (Family.not_exported). TPSMM's AVD network is not exported either (--mode avd stays torch's).
"""
import contextlib
import json
import logging
import warnings
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from modules.config import load_config
from modules.errors import InputError
from modules.families import family_of
from modules.fileio import atomic_paths, make_folder
from modules.inference import WinogradConv2d
from toolkit.onnx_format import (FORMAT, GRAPHS, MAX_OPSET, META, MIN_OPSET, OPSET, file_sha256, graph_entry,
                                 model_params_sha256)

log = logging.getLogger(__name__)

DROPPED_OUTPUTS = ('sparse_deformed', 'warped_encoder_maps', 'deformed_source')  # large, unused by the animation
BATCH = 'batch'
EXAMPLE_BATCH = 2  # traced with 2 frames so that no batch-1 broadcast gets baked in


# ----------------------------------------------------------------------------------------------
# torch.inverse as ONNX operators
# ----------------------------------------------------------------------------------------------

def _inverse_2x2(g, x):
    """ONNX symbolic of inverse for (..., 2, 2): [[d, -b], [-c, a]] / (a d - b c). Other sizes are
    refused (the traced shapes are known)."""
    sizes = x.type().varyingSizes() if hasattr(x.type(), 'varyingSizes') else None  # None: a dynamic size
    if sizes is None or tuple(sizes[-2:]) != (2, 2):
        raise ValueError(f'the ONNX export inverts 2x2 matrices only, got shape {sizes}')
    def entry(row, column):
        picked = g.op('Gather', x, g.op('Constant', value_t=torch.tensor(row)), axis_i=-2)
        return g.op('Gather', picked, g.op('Constant', value_t=torch.tensor(column)), axis_i=-1)

    def stack(values, axis):
        axes = g.op('Constant', value_t=torch.tensor([axis]))
        return g.op('Concat', *[g.op('Unsqueeze', value, axes) for value in values], axis_i=axis)

    a, b, c, d = entry(0, 0), entry(0, 1), entry(1, 0), entry(1, 1)
    determinant = g.op('Sub', g.op('Mul', a, d), g.op('Mul', b, c))
    adjugate = stack([stack([d, g.op('Neg', b)], -1), stack([g.op('Neg', c), a], -1)], -2)
    return g.op('Div', adjugate, stack([stack([determinant], -1)], -2))


def gauss_jordan_inverse(matrix):
    """The inverse of (..., n, n) matrices by Gauss-Jordan elimination with partial pivoting, written
    with operations the ONNX exporter traces (ArgMax, GatherElements, Where), in float64: TPSMM's
    thin-plate spline systems, for which ONNX has no inverse operator. n is fixed by the traced
    shape; the loop is unrolled."""
    n = matrix.shape[-1]
    dtype = matrix.dtype
    matrix = matrix.double()  # in float64: the spline systems are ill-conditioned, and LAPACK pivots better
    eye = torch.eye(n, dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
    augmented = torch.cat([matrix, eye], -1)  # (..., n, 2n)
    rows = torch.arange(n, device=matrix.device)
    for k in range(n):
        column = augmented[..., :, k].abs()  # (..., n)
        column = torch.where(rows >= k, column, torch.full_like(column, -1.0))
        pivot = column.argmax(-1, keepdim=True)  # (..., 1): the largest entry at or below row k
        order = torch.where(rows == k, pivot, torch.where(rows == pivot, torch.full_like(pivot, k), rows))
        augmented = augmented.gather(-2, order.unsqueeze(-1).expand_as(augmented))  # rows k and pivot swapped
        row = augmented[..., k:k + 1, :] / augmented[..., k:k + 1, k:k + 1]
        augmented = augmented - augmented[..., :, k:k + 1] * row
        augmented = torch.where((rows == k).view(n, 1), row, augmented)
    return augmented[..., n:].to(dtype)


@contextlib.contextmanager
def traceable_inverses():
    """torch.inverse and torch.linalg.inv for the export: 2x2 matrices keep the exact closed form
    (the registered symbolic, FOMM's jacobians), larger ones use gauss_jordan_inverse."""
    original = torch.inverse

    def inverse(matrix):
        return original(matrix) if matrix.shape[-1] == 2 else gauss_jordan_inverse(matrix)

    with mock.patch('torch.inverse', inverse), mock.patch('torch.linalg.inv', inverse):
        yield


_REGISTERED = set()


def _register_symbolics(opset):
    for name in ('aten::inverse', 'aten::linalg_inv'):
        if (name, opset) not in _REGISTERED:
            torch.onnx.register_custom_op_symbolic(name, _inverse_2x2, opset)
            _REGISTERED.add((name, opset))


# ----------------------------------------------------------------------------------------------
# The three graphs as modules with tensor inputs and outputs
# ----------------------------------------------------------------------------------------------

class KeypointGraph(nn.Module):
    """kp_detector with a tuple of its dict's entries (in `names`' order) as the output."""

    def __init__(self, kp_detector, names):
        super().__init__()
        self.kp_detector, self.names = kp_detector, tuple(names)

    def forward(self, frames):
        kp = self.kp_detector(frames)
        return tuple(kp[name] for name in self.names)


class EncoderGraph(nn.Module):
    """generator.encode with a tuple of maps as the output (one map, or one per level)."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def forward(self, source):
        features = self.generator.encode(source)
        return tuple(features) if isinstance(features, (list, tuple)) else (features,)


class FrameGraph(nn.Module):
    """The generator's per-frame part: (source, *features, *kp_source entries, *kp_driving entries)
    -> the outputs named in `outputs` ((name, count): count None for a tensor, n for a list of n)."""

    def __init__(self, generator, num_features, as_list, kp_names, outputs):
        super().__init__()
        self.generator = generator
        self.num_features, self.as_list = num_features, as_list
        self.kp_names, self.outputs = tuple(kp_names), tuple(outputs)

    def forward(self, source, *inputs):
        features = list(inputs[:self.num_features])
        rest = inputs[self.num_features:]
        count = len(self.kp_names)
        kp_source = dict(zip(self.kp_names, rest[:count]))
        kp_driving = dict(zip(self.kp_names, rest[count:2 * count]))
        out = self.generator(source, kp_driving=kp_driving, kp_source=kp_source,
                             source_features=features if self.as_list else features[0])
        flat = []
        for name, number in self.outputs:
            flat.extend([out[name]] if number is None else list(out[name]))
        return tuple(flat)


def flat_names(outputs):
    """[(name, count)] -> the graph's output names: name, or name_0 .. name_{count-1}."""
    return [name if number is None else f'{name}_{i}' for name, number in outputs
            for i in ([0] if number is None else range(number))]


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------

def without_winograd(module):
    """Puts every WinogradConv2d's plain convolution back, in place; returns the module."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, WinogradConv2d):
                setattr(parent, name, child.conv)
    return module


def exportable(family):
    """Raises InputError (one line, saying why) for a family whose models are not exported
    (Family.not_exported)."""
    if family.not_exported:
        raise InputError(f'{family.title} models are not exported to ONNX: {family.not_exported}')


def load_for_export(config_path, checkpoint_path):
    """(config, family, generator, kp_detector): the demo's networks of a config on the CPU as demo.py
    runs them (toolkit.demo.load_networks: loaded strictly, eval mode, the inference rewrites), the
    Winograd convolutions put back. A family that is not exported is refused (InputError) before the
    checkpoint is read."""
    from toolkit.demo import load_networks

    config = load_config(config_path)
    exportable(family_of(config['model_params']))
    family, models = load_networks(config, config_path, checkpoint_path, torch.device('cpu'))
    generator, kp_detector = family.animation(models)
    return config, family, without_winograd(generator).eval(), without_winograd(kp_detector).eval()


def _export_one(module, args, path, input_names, output_names, opset):
    """torch.onnx.export of `module` called with `args` to `path` (a temporary file of the export),
    every input and output with a dynamic batch dimension."""
    axes = {name: {0: BATCH} for name in (*input_names, *output_names)}
    # The tracer warns where Python reads a shape: the frame size, fixed by design (only the batch is
    # dynamic, and the tests run the graphs at other batch sizes); and the TorchScript exporter is
    # deprecated in favour of the dynamo one, which needs onnxscript.
    with torch.no_grad(), warnings.catch_warnings(), traceable_inverses():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, args, str(path), input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)


def checked_graph(path):
    """None if onnx.checker.check_model (full check) accepts the graph at `path`, else its complaint."""
    import onnx
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        return f'the ONNX checker refuses it: {str(e).strip().splitlines()[0]}'
    return None


def export(config, checkpoint, out_dir, opset=OPSET):
    """Writes kp_detector.onnx, source_encoder.onnx, frame.onnx and model.json into `out_dir` for the
    model of `config` (a YAML path) with the weights of `checkpoint`; each graph is checked with
    onnx.checker.check_model. FOMM and TPSMM models: CPABMM is not exported (its keypoint fit is an
    iterative optimisation, not a fixed graph).
    Returns {graph name: path} (model.json under 'meta'); each graph's size is logged."""
    import onnx

    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise InputError(f'--opset {opset}: the export needs an opset from {MIN_OPSET} (2-D grid_sample) to '
                         f'{MAX_OPSET} (the newest torch {torch.__version__} writes)')
    opset = int(opset)
    loaded, family, generator, kp_detector = load_for_export(config, checkpoint)
    _register_symbolics(opset)
    height, width, channels = loaded['dataset_params']['frame_shape']
    out_dir = Path(out_dir)
    make_folder(out_dir)

    frames = torch.rand(EXAMPLE_BATCH, channels, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kp = kp_detector(frames)
        kp_names = [name for name in ('value', 'fg_kp', 'jacobian') if name in kp]
        features = generator.encode(frames)
        as_list = isinstance(features, (list, tuple))
        features = list(features) if as_list else [features]
        kp_driving = kp_detector(frames.flip(0))
        out = generator(frames, kp_driving=kp_driving, kp_source=kp,
                        source_features=features if as_list else features[0])
    outputs = [(name, len(value) if isinstance(value, (list, tuple)) else None) for name, value in out.items()
               if name not in DROPPED_OUTPUTS]
    feature_names = [f'features_{i}' for i in range(len(features))]
    source_kp_names = [f'source_{name}' for name in kp_names]
    driving_kp_names = [f'driving_{name}' for name in kp_names]

    paths = {name: out_dir / f'{name}.onnx' for name in GRAPHS}
    meta_path = out_dir / META
    # The graphs and model.json are written under temporary names, each graph checked with the ONNX
    # checker, and renamed into place together, model.json last (modules.fileio.atomic_paths): a
    # failed or killed export leaves the folder's earlier export whole, never a mix of old and new
    # graphs; model.json records each graph's SHA-256, which the runtime checks.
    with atomic_paths({**paths, 'meta': meta_path},
                      verify=lambda name, tmp: None if name == 'meta' else checked_graph(tmp)) as tmps:
        _export_one(KeypointGraph(kp_detector, kp_names), (frames,), tmps['kp_detector'], ['frames'], kp_names,
                    opset)
        _export_one(EncoderGraph(generator), (frames,), tmps['source_encoder'], ['source'], feature_names, opset)
        frame_graph = FrameGraph(generator, len(features), as_list, kp_names, outputs)
        frame_args = (frames, *features, *(kp[name] for name in kp_names), *(kp_driving[name] for name in kp_names))
        _export_one(frame_graph, frame_args, tmps['frame'], ['source', *feature_names, *source_kp_names,
                                                             *driving_kp_names], flat_names(outputs), opset)

        graphs = {}
        for name, path in paths.items():
            graphs[name] = graph_entry(tmps[name], path.name)
            log.info('%s: %.2f MB', path, graphs[name]['bytes'] / 1e6)

        animate_params = loaded.get('animate_params') or {}
        meta = {
            'format': FORMAT,
            'family': family.name,
            'config': Path(config).name,
            'model_params_sha256': model_params_sha256(loaded),
            'checkpoint': Path(checkpoint).name,
            'checkpoint_sha256': file_sha256(checkpoint),
            'opset': opset,
            'frame_shape': [height, width, channels],
            'num_keypoints': int(kp[kp_names[0]].shape[1]),
            'keypoints': kp_names,
            'features': len(features),
            'features_as_list': as_list,
            'outputs': [[name, number] for name, number in outputs],
            'modes': list(family.modes),
            'normalization_params': animate_params.get('normalization_params'),
            'graphs': graphs,
            'exported_with': {'torch': torch.__version__, 'onnx': onnx.__version__},
        }
        Path(tmps['meta']).write_text(json.dumps(meta, indent=2) + '\n')
    return {**paths, 'meta': meta_path}
