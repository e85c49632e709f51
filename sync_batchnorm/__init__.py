"""Synchronized batch normalisation for `nn.DataParallel`, as used by FOMM.

Public API::

    from sync_batchnorm import SynchronizedBatchNorm2d, DataParallelWithCallback

* `SynchronizedBatchNorm1d/2d/3d`: drop-in replacements of `nn.BatchNorm1d/2d/3d` (identical state
  dict) that, inside a multi-device `DataParallelWithCallback`, normalise with the statistics of the
  whole batch instead of each device's chunk. See `sync_batchnorm.batchnorm` for the quirks kept from
  the original (num_batches_tracked stays 0, clamp(var, eps) in the multi-replica path).
* `DataParallelWithCallback`: `nn.DataParallel` that wires the replicas of each synchronized layer
  together after replication; `patch_replication_callback(dp)` does the same to an existing
  `nn.DataParallel` instance.
"""
from .batchnorm import SynchronizedBatchNorm1d, SynchronizedBatchNorm2d, SynchronizedBatchNorm3d
from .replicate import DataParallelWithCallback, patch_replication_callback

__all__ = ['SynchronizedBatchNorm1d', 'SynchronizedBatchNorm2d', 'SynchronizedBatchNorm3d',
           'DataParallelWithCallback', 'patch_replication_callback']
