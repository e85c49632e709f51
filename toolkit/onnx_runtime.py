"""The graphs of export.py (toolkit.onnx_export; the folder's layout: toolkit.onnx_format) run with
ONNX Runtime on the CPU, behind calls shaped like the torch modules' (docs/onnx.md):

    model = OnnxModel(folder, config=..., checkpoint=...)  # checks model.json against them
    kp = model.kp_detector(frames)                  # {'value': (B, K, 2), 'jacobian': ...}
    features = model.encode(source)                 # once per source
    out = model.frame(source, features, kp_source, kp_target)   # {'prediction': ..., ...}

Inputs may be numpy arrays or torch tensors (any float dtype, any device); outputs come as the same
kind (torch tensors on the CPU, float32, when a torch tensor was given). The relative motion
(toolkit.animation.relative_kp) is computed by the caller, as for the torch modules.
"""
import functools
import json
import logging
from pathlib import Path

import numpy as np

from modules.errors import InputError
from toolkit.onnx_format import GRAPHS, INT8_GRAPH, MAX_OPSET, META, MIN_OPSET, file_sha256, model_params_sha256

log = logging.getLogger(__name__)


@functools.cache
def runtime_runs_opset(opset):
    """True if the installed ONNX Runtime loads a graph of ai.onnx opset `opset` (probed with a
    one-node graph: ONNX Runtime refuses opsets newer than its own when it loads a model)."""
    import onnxruntime
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'probe', [value],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', int(opset))], ir_version=8)
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    except Exception:  # ONNX Runtime's own exception classes
        return False
    return True


def runtime_max_opset(start=MAX_OPSET):
    """The newest ai.onnx opset the installed ONNX Runtime runs, searched up from `start` (None if it
    does not even run `start`)."""
    if not runtime_runs_opset(start):
        return None
    opset = start
    while opset < 100 and runtime_runs_opset(opset + 1):
        opset += 1
    return opset


def _is_int(value, least=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


# what the runtime reads from model.json, and the check of each value
META_FIELDS = {
    'opset': ('an integer', _is_int),
    'frame_shape': ('[height, width, channels]', lambda v: isinstance(v, list) and len(v) == 3
                    and all(_is_int(n, 1) for n in v)),
    'keypoints': ('a list of names', lambda v: isinstance(v, list) and v and all(isinstance(n, str) for n in v)),
    'outputs': ('a list of [name, count or null]', lambda v: isinstance(v, list) and v and all(
        isinstance(o, list) and len(o) == 2 and isinstance(o[0], str) and (o[1] is None or _is_int(o[1], 1))
        for o in v)),
    'model_params_sha256': ('a SHA-256', lambda v: isinstance(v, str)),
    'checkpoint_sha256': ('a SHA-256', lambda v: isinstance(v, str)),
    'graphs': ('{graph: {"file", "bytes", "sha256"}} for ' + ', '.join(GRAPHS), lambda v: isinstance(v, dict) and all(
        isinstance(v.get(name), dict) and isinstance(v[name].get('sha256'), str) for name in GRAPHS)),
}


def meta_problem(meta):
    """None if model.json's content `meta` has every field the runtime reads, well formed; else what
    is wrong, in a few words."""
    if not isinstance(meta, dict):
        return f'an object was expected, not {type(meta).__name__}'
    for name, (expected, valid) in META_FIELDS.items():
        if name not in meta:
            return f'no {name!r}'
        if not valid(meta[name]):
            return f'{name!r} is {meta[name]!r}, not {expected}'
    return None


def _numpy(value):
    """A torch tensor or array -> a C-contiguous float32 numpy array."""
    if hasattr(value, 'detach'):
        value = value.detach().to('cpu').float().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


class OnnxModel:
    """The three graphs of an export folder in ONNX Runtime InferenceSessions on the CPU.

    config, checkpoint: optional paths; when given, model.json must name the same model_params and
    checkpoint bytes (InputError otherwise). threads: intra-op threads (None: ONNX Runtime's choice).
    """

    def __init__(self, folder, config=None, checkpoint=None, threads=None, int8=False):
        import onnxruntime

        folder = Path(folder)
        missing = [f'{name}.onnx' for name in GRAPHS if not (folder / f'{name}.onnx').is_file()]
        missing += [META] if not (folder / META).is_file() else []
        if missing:
            raise InputError(f'{folder}: not an ONNX export folder (missing {", ".join(missing)}); write one with '
                             f'export.py --config ... --checkpoint ... --out {folder}')
        try:
            self.meta = json.loads((folder / META).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f'{folder / META}: unreadable ({e}); export again with export.py') from None
        problem = meta_problem(self.meta)
        if problem:
            raise InputError(f'{folder / META}: {problem}; export again with export.py')
        self.folder = folder
        self.check(config, checkpoint)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        files = {name: f'{name}.onnx' for name in GRAPHS}
        recorded = {name: self.meta['graphs'][name] for name in GRAPHS}
        if int8:  # the per-frame graph with int8 convolutions (export.py --int8)
            files['frame'] = f'{INT8_GRAPH}.onnx'
            if not (folder / files['frame']).is_file():
                raise InputError(f'{folder} has no {files["frame"]}: export with export.py --int8')
            recorded['frame'] = self.meta.get('int8')
            if not isinstance(recorded['frame'], dict):
                raise InputError(f'{folder / files["frame"]} is not in {META} (left by an earlier export): export '
                                 f'again with export.py --int8')
        for name, file in files.items():  # the files model.json describes, not another export's
            if file_sha256(folder / file) != recorded[name].get('sha256'):
                self.check_graph_opset(folder / file)  # a graph changed to a newer opset: say that first
                raise InputError(f'{folder / file}: not the graph {META} describes (its SHA-256 differs: a file of '
                                 f'another export, or changed since): export again with export.py')
        self.sessions = {}
        for name, file in files.items():
            try:
                self.sessions[name] = onnxruntime.InferenceSession(str(folder / file), options,
                                                                   providers=['CPUExecutionProvider'])
            except Exception as e:  # ONNX Runtime raises its own classes (Fail, InvalidGraph, ...)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InputError(f'{folder / name}.onnx: ONNX Runtime {onnxruntime.__version__} cannot load it '
                                 f'({first})') from None
        self.keypoint_names = list(self.meta['keypoints'])
        self.outputs = [(name, number) for name, number in self.meta['outputs']]

    def check(self, config=None, checkpoint=None):
        """InputError when model.json does not fit the installed runtime, `config` or `checkpoint`."""
        opset = self.meta.get('opset')
        if not isinstance(opset, int) or opset < MIN_OPSET:
            raise InputError(f'{self.folder / META}: opset {opset!r}; the graphs need {MIN_OPSET} or newer: export again '
                             f'with export.py')
        if not runtime_runs_opset(opset):
            self.refuse_opset(opset, self.folder)
        if config is not None:
            from modules.config import load_config
            loaded = load_config(config)
            if model_params_sha256(loaded) != self.meta.get('model_params_sha256'):
                raise InputError(f'the ONNX graphs were exported from {self.meta.get("config")}, whose model_params '
                                 f'differ from {Path(config).name}\'s: export again with --config {config}')
        if checkpoint is not None and file_sha256(checkpoint) != self.meta.get('checkpoint_sha256'):
            raise InputError(f'the ONNX graphs were exported from another checkpoint ({self.meta.get("checkpoint")}), '
                             f'not {Path(checkpoint).name}: export again with --checkpoint {checkpoint}')

    def check_graph_opset(self, path):
        """InputError if the graph file at `path` declares an ai.onnx opset the installed ONNX Runtime
        does not run (None otherwise, or if the file is not a readable graph)."""
        import onnx
        try:
            graph = onnx.load(str(path), load_external_data=False)
        except Exception:  # not a graph at all: the caller's message covers it
            return
        opset = next((entry.version for entry in graph.opset_import if entry.domain in ('', 'ai.onnx')), None)
        if opset is not None and not runtime_runs_opset(opset):
            self.refuse_opset(opset, path)

    def refuse_opset(self, opset, where):
        import onnxruntime
        newest = runtime_max_opset(MIN_OPSET)
        raise InputError(f'{where}: the graphs use ai.onnx opset {opset}, but the installed ONNX Runtime '
                         f'{onnxruntime.__version__} runs opsets up to {newest}: export again with '
                         f'--opset {min(newest or MIN_OPSET, MAX_OPSET)} or upgrade onnxruntime')

    @property
    def frame_shape(self):
        return tuple(self.meta['frame_shape'])

    def check_frames(self, frames):
        """InputError unless `frames` is a (B, C, H, W) batch of the exported frame shape (the graphs'
        sizes are fixed at export; only the batch is dynamic)."""
        height, width, channels = self.frame_shape
        shape = tuple(frames.shape)
        if len(shape) != 4 or shape[1:] != (channels, height, width):
            got = f'{shape[3]}x{shape[2]} with {shape[1]} channels' if len(shape) == 4 else f'shape {shape}'
            raise InputError(f'images of {got}: the ONNX graphs in {self.folder} take (B, {channels}, {height}, '
                             f'{width}) batches, {width}x{height} frames with {channels} channels (model.json '
                             f'frame_shape): resize them first, or export a model of that size')

    def _run(self, name, feeds, torch_out):
        session = self.sessions[name]
        values = session.run(None, {key: _numpy(value) for key, value in feeds.items()})
        if torch_out:
            import torch
            values = [torch.from_numpy(value) for value in values]
        return values

    def kp_detector(self, frames):
        """frames (B, C, H, W) in [0, 1] -> the keypoint dict."""
        self.check_frames(frames)
        values = self._run('kp_detector', {'frames': frames}, hasattr(frames, 'detach'))
        return dict(zip(self.keypoint_names, values))

    def encode(self, source):
        """source (B, C, H, W) -> the encoder features, a list of maps (feed them to frame as they are)."""
        self.check_frames(source)
        return self._run('source_encoder', {'source': source}, hasattr(source, 'detach'))

    def frame(self, source, features, kp_source, kp_driving):
        """source (B, C, H, W), features (encode's list, batch B), the keypoint dicts (batch B) -> the
        outputs named in model.json: {'prediction': (B, C, H, W), ...} (lists regrouped)."""
        self.check_frames(source)
        feeds = {'source': source}
        feeds.update({f'features_{i}': value for i, value in enumerate(features)})
        for prefix, kp in (('source', kp_source), ('driving', kp_driving)):
            for name in self.keypoint_names:
                if name not in kp:
                    raise ValueError(f'the {prefix} keypoints lack {name!r} (the graphs take {self.keypoint_names})')
                feeds[f'{prefix}_{name}'] = kp[name]
        values = iter(self._run('frame', feeds, hasattr(source, 'detach')))
        return {name: next(values) if number is None else [next(values) for _ in range(number)]
                for name, number in self.outputs}


# ----------------------------------------------------------------------------------------------
# The animation core's backend: the graphs behind the torch modules' interface
# ----------------------------------------------------------------------------------------------

def _torch_modules():
    import torch

    class OnnxModule(torch.nn.Module):
        """A torch module run by ONNX Runtime. Its one parameter (a CPU float32 scalar) tells the
        animation core where to put the inputs. A deep copy (the original API's make_animation and
        --fast copy the models they are given) is a new wrapper of the same sessions: ONNX Runtime's
        sessions cannot be copied, and running them changes nothing in them."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

        def __deepcopy__(self, memo):
            copied = type(self)(self.model)
            copied.train(self.training)
            memo[id(self)] = copied
            return copied

    class OnnxKeypointDetector(OnnxModule):
        """kp_detector(frames (B, C, H, W)) -> {'value', 'jacobian'}, run by ONNX Runtime."""

        def forward(self, frames):
            return self.model.kp_detector(frames)

    class OnnxGenerator(OnnxModule):
        """The generator's interface of the animation core (modules.generator.OcclusionAwareGenerator:
        encode(source) once per source, then forward(source, kp_driving, kp_source, source_features)),
        run by ONNX Runtime."""

        def encode(self, source):
            return self.model.encode(source)

        def forward(self, source_image, kp_driving, kp_source, source_features=None):
            if source_features is None:
                source_features = self.encode(source_image)
            return self.model.frame(source_image, source_features, kp_source, kp_driving)

    return OnnxGenerator, OnnxKeypointDetector


def onnx_networks(folder, config=None, checkpoint=None, threads=None, int8=False):
    """(generator, kp_detector) for the animation core (toolkit.animation.Animator, and so demo.py,
    multi-face and the original API), run from an export folder by ONNX Runtime on the CPU. config,
    checkpoint: checked against the folder's model.json (InputError when they differ). int8: the
    per-frame graph's int8 variant (export.py --int8)."""
    model = OnnxModel(folder, config=config, checkpoint=checkpoint, threads=threads, int8=int8)
    generator_class, detector_class = _torch_modules()
    return generator_class(model).eval(), detector_class(model).eval()
