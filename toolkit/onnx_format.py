"""What an export folder holds and how its model.json identifies a model: shared by the exporter
(toolkit.onnx_export, which needs torch and the model code) and the runtime (toolkit.onnx_runtime,
which needs neither), so that neither imports the other."""
import hashlib
import json
from pathlib import Path

GRAPHS = ('kp_detector', 'source_encoder', 'frame')  # <name>.onnx in the export folder
INT8_GRAPH = 'frame_int8'  # export.py --int8: the frame graph with int8 convolutions (toolkit.onnx_int8)
META = 'model.json'
FORMAT = 1  # model.json's layout version
OPSET = 17  # the default opset
MIN_OPSET = 16  # 2-D grid_sample
# the newest opset torch's TorchScript exporter writes (torch.onnx's dynamo exporter would need onnxscript)
MAX_OPSET = 20


def file_sha256(path):
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def model_params_sha256(config):
    """The hex SHA-256 of a loaded config's model_params (canonical JSON): what makes two configs
    describe the same graphs."""
    text = json.dumps(config['model_params'], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def graph_entry(path, name):
    """model.json's record of one graph file: {'file': name, 'bytes': ..., 'sha256': ...} of the file
    at `path` (written under a temporary name, recorded under its final `name`)."""
    return {'file': name, 'bytes': Path(path).stat().st_size, 'sha256': file_sha256(path)}
