"""The toolkit's one device choice: every entry point and the original's Python API pick their
device here."""
import logging
import warnings

import torch

log = logging.getLogger(__name__)


def pick_device(cpu=False, index=None, warn=False):
    """The device to run on.

    cpu: True -> the CPU; a torch.device or device string (TPSMM's `device` argument) -> that device;
    False -> CUDA device `index` (default: the current one) when CUDA is available, else the CPU with
    a note: a UserWarning with warn=True (the Python API, as the original's demo would fail there),
    else a log line (the command line)."""
    if isinstance(cpu, (torch.device, str)):
        return torch.device(cpu)
    if cpu:
        return torch.device('cpu')
    if torch.cuda.is_available():
        return torch.device('cuda', index) if index is not None else torch.device('cuda')
    message = 'no CUDA device found: running on the CPU'
    if warn:
        warnings.warn(message + ' (pass cpu=True / --cpu to silence this)', stacklevel=3)
    else:
        log.info(message)
    return torch.device('cpu')
