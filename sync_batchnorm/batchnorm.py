"""Synchronized (cross-replica) batch normalisation, as used by the original FOMM.

`SynchronizedBatchNorm{1,2,3}d` are drop-in replacements for `nn.BatchNorm{1,2,3}d`:

* Same parameters and buffers, in the same order, with the same shapes and dtypes (`weight`, `bias`,
  `running_mean`, `running_var`, `num_batches_tracked`), so state dicts load strictly in both
  directions between the two classes. They subclass `torch.nn.modules.batchnorm._BatchNorm`.
* Outside a multi-replica `DataParallelWithCallback` run (one device, CPU, or eval mode) the forward
  is exactly `F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)`.
* Inside a `DataParallelWithCallback` run with several replicas, in training mode, the batch
  statistics are computed over the WHOLE mini-batch (all replicas), so the result is the same
  function of the full batch as single-device batch norm, gradients included.

Quirks kept on purpose because the original behaves this way (checkpoints and training dynamics of
FOMM depend on them):

1. `num_batches_tracked` is never incremented (it stays 0), unlike `nn.BatchNorm*`, because the
   original calls `F.batch_norm` directly instead of `_BatchNorm.forward`. Only `momentum` (a float)
   drives the running averages; `momentum=None` (cumulative average) is not supported.
2. In the multi-replica path the normalisation uses `1 / sqrt(clamp(var_biased, min=eps))` instead of
   `1 / sqrt(var_biased + eps)`. The two agree to ~eps/(2 var) relative; they differ noticeably only
   for channels whose batch variance is close to or below eps. The single-device path (F.batch_norm)
   uses `var + eps` as usual.
3. In the multi-replica path, statistics come from per-channel sum and sum of squares
   (var = (ssum - sum * mean) / N), which is what the original does.

Running statistics in the multi-replica path are updated once per forward, by replica 0, in place:
`running = (1 - momentum) * running + momentum * stat` with the biased mean and the UNBIASED variance
(sum of squared deviations / (N - 1)), like `F.batch_norm`. Replica 0's buffers share storage with the
wrapped module's buffers (DataParallel broadcasts buffers without copying them for the first device),
so the update lands in the base module.

Optional multi-process synchronisation: with `sync_distributed=True` (constructor argument or
attribute), when `torch.distributed` is initialised with world size > 1 (in `process_group`, default
the world) and the module is in training mode, the per-rank (sum, sum of squares, count) are
all-reduced across ranks with a differentiable all-reduce (`_AllReduceSum`), and the
layer normalises with the global statistics exactly like the multi-replica path (same clamp, same
running-stat update, done on every rank so ranks stay identical). It is meant for
DistributedDataParallel with one device per process and cannot be combined with a multi-replica
DataParallel run in the same process. Off by default (the original has no such mode).
"""
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .comm import SyncContext

__all__ = ['SynchronizedBatchNorm1d', 'SynchronizedBatchNorm2d', 'SynchronizedBatchNorm3d']


class _AllReduceSum(torch.autograd.Function):
    """Sum over torch.distributed ranks, differentiable: every rank's output is the sum of all inputs,
    so the gradient of each input is the sum of all ranks' output gradients (another all-reduce)."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone()
        torch.distributed.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.contiguous().clone()
        torch.distributed.all_reduce(grad, group=ctx.group)
        return grad, None


class _SynchronizedBatchNorm(_BatchNorm):
    """Shared implementation; use the 1d/2d/3d subclasses."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, *,
                 sync_distributed=False, process_group=None):
        if momentum is None:
            raise ValueError('SynchronizedBatchNorm needs a float momentum (momentum=None, the cumulative '
                             'moving average, is not supported: num_batches_tracked is never updated)')
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=True)
        # Plain attributes (not buffers): they do not appear in the state dict.
        self.sync_distributed = sync_distributed
        self.process_group = process_group
        # Set on replicas only, by __data_parallel_replicate__; the wrapped module keeps None / 0.
        self._sync_ctx = None
        self._copy_id = 0

    # ------------------------------------------------------------------------------------------
    # Replication callback (called by DataParallelWithCallback on every replica after replicate)
    # ------------------------------------------------------------------------------------------
    def __data_parallel_replicate__(self, ctx, copy_id):
        """Join the sync context shared by all replicas of this module.

        `ctx` is one object per original module, shared by its replicas (see
        `sync_batchnorm.replicate.execute_replication_callbacks`); `copy_id` is 0 for the replica on
        the first device (the one whose buffers alias the wrapped module's buffers).
        """
        sync = getattr(ctx, 'sync_context', None)
        if sync is None:
            sync = SyncContext()
            ctx.sync_context = sync
        sync.register(copy_id)
        self._sync_ctx = sync
        self._copy_id = copy_id

    # ------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------
    def _replicas_active(self):
        return self.training and self._sync_ctx is not None and self._sync_ctx.num_replicas > 1

    def _distributed_active(self):
        if not (self.training and self.sync_distributed):
            return False
        dist = torch.distributed
        return (dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def forward(self, input):
        self._check_input_dim(input)
        replicas = self._replicas_active()
        distributed = self._distributed_active()
        if replicas and distributed:
            raise NotImplementedError('sync_distributed=True cannot be combined with a multi-replica '
                                      'DataParallel run in the same process; use one device per process')
        if replicas:
            return self._forward_synchronized(input, self._reduce_over_replicas,
                                              update_running_stats=self._copy_id == 0)
        if distributed:
            return self._forward_synchronized(input, self._reduce_over_ranks, update_running_stats=True)
        # Same call as the original. NOTE: unlike nn.BatchNorm*.forward this never increments
        # num_batches_tracked (it stays 0); kept on purpose for fidelity, see the module docstring.
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)

    def _forward_synchronized(self, input, reduce_fn, update_running_stats):
        """Batch norm with statistics of the whole (multi-replica / multi-rank) batch.

        input: (B_local, C, *). reduce_fn(sum (C,), ssum (C,), count int) -> global (sum, ssum, count),
        differentiable in sum and ssum.
        """
        num_channels = input.size(1)
        reduce_dims = [0] + list(range(2, input.dim()))
        # Accumulate at least in float32 (no-op for float32 / float64 inputs).
        x = input.to(torch.promote_types(input.dtype, torch.float32))
        local_sum = x.sum(dim=reduce_dims)
        local_ssum = (x * x).sum(dim=reduce_dims)
        local_count = input.numel() // num_channels if num_channels else 0

        total_sum, total_ssum, count = reduce_fn(local_sum, local_ssum, local_count)
        if count <= 1:
            raise ValueError(f'Expected more than 1 value per channel when training, got {count} values '
                             f'per channel over the whole synchronized batch')

        mean = total_sum / count
        sum_sq_dev = total_ssum - total_sum * mean
        var_unbiased = sum_sq_dev / (count - 1)
        var_biased = sum_sq_dev / count
        # The original's normalisation: clamp(var, eps) ** -0.5, NOT (var + eps) ** -0.5.
        inv_std = var_biased.clamp(min=self.eps) ** -0.5

        if update_running_stats:
            with torch.no_grad():
                # In place: replica 0's buffers share storage with the wrapped module's buffers.
                self.running_mean.mul_(1.0 - self.momentum).add_(
                    mean.detach().to(self.running_mean.dtype), alpha=self.momentum)
                self.running_var.mul_(1.0 - self.momentum).add_(
                    var_unbiased.detach().to(self.running_var.dtype), alpha=self.momentum)

        shape = [1, num_channels] + [1] * (input.dim() - 2)
        if self.affine:
            output = (x - mean.view(shape)) * (inv_std * self.weight).view(shape) + self.bias.view(shape)
        else:
            output = (x - mean.view(shape)) * inv_std.view(shape)
        return output.to(input.dtype)

    def _reduce_over_replicas(self, local_sum, local_ssum, local_count):
        """Sum (sum, ssum, count) over the DataParallel replicas; differentiable (`.to` copies)."""
        contributions = self._sync_ctx.exchange(self._copy_id, (local_sum, local_ssum, local_count))
        device = local_sum.device
        total_sum = total_ssum = None
        total_count = 0
        # Same order (copy id) on every replica, so every replica gets identical statistics.
        for part_sum, part_ssum, part_count in contributions:
            part_sum = part_sum.to(device)
            part_ssum = part_ssum.to(device)
            total_sum = part_sum if total_sum is None else total_sum + part_sum
            total_ssum = part_ssum if total_ssum is None else total_ssum + part_ssum
            total_count += part_count
        return total_sum, total_ssum, total_count

    def _reduce_over_ranks(self, local_sum, local_ssum, local_count):
        """Sum (sum, ssum, count) over torch.distributed ranks with a differentiable all-reduce."""
        num_channels = local_sum.numel()
        count = local_sum.new_full((1,), float(local_count))
        packed = _AllReduceSum.apply(torch.cat([local_sum, local_ssum, count]), self.process_group)
        total_count = int(round(packed[2 * num_channels].item()))
        return packed[:num_channels], packed[num_channels:2 * num_channels], total_count

    _dims = ()      # accepted input ranks, set by each subclass
    _layout = ''    # how the input is laid out, for the error message

    def _check_input_dim(self, input):
        if input.dim() not in self._dims:
            raise ValueError(f'{type(self).__name__} expects a {" or ".join(f"{d}D" for d in self._dims)} input '
                             f'{self._layout}, got a {input.dim()}D input of shape {tuple(input.shape)}')


class SynchronizedBatchNorm1d(_SynchronizedBatchNorm):
    """Synchronized batch norm over a (B, C) or (B, C, L) input; drop-in for `nn.BatchNorm1d`.

    See the `sync_batchnorm.batchnorm` module docstring for the synchronisation and the quirks
    (num_batches_tracked stays 0; clamp(var, eps) in the multi-replica path).
    """

    _dims = (2, 3)
    _layout = '(B, C[, L])'


class SynchronizedBatchNorm2d(_SynchronizedBatchNorm):
    """Synchronized batch norm over a (B, C, H, W) input; drop-in for `nn.BatchNorm2d`.

    Args: num_features (C), eps=1e-5, momentum=0.1, affine=True (keyword-only extras:
    sync_distributed=False, process_group=None). Output has the input's shape.
    See the `sync_batchnorm.batchnorm` module docstring for the synchronisation and the quirks
    (num_batches_tracked stays 0; clamp(var, eps) in the multi-replica path).
    """

    _dims = (4,)
    _layout = '(B, C, H, W)'


class SynchronizedBatchNorm3d(_SynchronizedBatchNorm):
    """Synchronized batch norm over a (B, C, D, H, W) input; drop-in for `nn.BatchNorm3d`.

    See the `sync_batchnorm.batchnorm` module docstring for the synchronisation and the quirks
    (num_batches_tracked stays 0; clamp(var, eps) in the multi-replica path).
    """

    _dims = (5,)
    _layout = '(B, C, D, H, W)'
