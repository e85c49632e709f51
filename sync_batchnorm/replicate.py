"""DataParallel with a replication callback, needed by synchronized batch norm.

`torch.nn.DataParallel` replicates the wrapped module onto every device at each forward and runs the
replicas in parallel threads. `DataParallelWithCallback` additionally calls, right after replication,
`m.__data_parallel_replicate__(ctx, copy_id)` on every submodule `m` of every replica that defines
it. `ctx` is one `CallbackContext` per submodule of the original module, shared by that submodule's
replicas (this is how the replicas of one batch-norm layer find each other); `copy_id` is the replica
index (0 for the first device).

It also makes a failing replica harmless for the others: if a replica's forward raises, the sync
contexts of all its synchronized layers are aborted, so replicas blocked in a rendezvous raise instead
of waiting for ever, and DataParallel re-raises the original error.
"""
import functools
import logging

from torch.nn.parallel import DataParallel

logger = logging.getLogger(__name__)

__all__ = ['CallbackContext', 'execute_replication_callbacks', 'guard_replicas',
           'DataParallelWithCallback', 'patch_replication_callback']


class CallbackContext:
    """Empty namespace shared by the replicas of one module; callbacks store what they need in it."""


def execute_replication_callbacks(replicas):
    """Call `__data_parallel_replicate__(ctx, copy_id)` on every submodule of every replica.

    replicas: the list returned by `replicate` (replica i is copy i). The i-th submodule (in
    `.modules()` order, identical across replicas) of every replica receives the same context object.
    Returns the list of contexts (one per submodule of a replica).
    """
    replicas = list(replicas)
    if not replicas:
        return []
    contexts = [CallbackContext() for _ in replicas[0].modules()]
    for copy_id, replica in enumerate(replicas):
        submodules = list(replica.modules())
        if len(submodules) != len(contexts):
            raise RuntimeError('replicas have different module structures')
        for ctx, module in zip(contexts, submodules):
            callback = getattr(module, '__data_parallel_replicate__', None)
            if callback is not None:
                callback(ctx, copy_id)
    return contexts


def _sync_contexts_of(replicas):
    """The distinct abortable sync contexts used by the replicas' synchronized layers."""
    found = {}
    for replica in replicas:
        for module in replica.modules():
            ctx = getattr(module, '_sync_ctx', None)
            if ctx is not None and hasattr(ctx, 'abort'):
                found[id(ctx)] = ctx
    return list(found.values())


class _AbortOnError:
    """Callable wrapper around a replica: on any exception, abort the shared sync contexts, re-raise."""

    def __init__(self, replica, contexts):
        self.replica = replica
        self.contexts = contexts

    def __call__(self, *args, **kwargs):
        try:
            return self.replica(*args, **kwargs)
        except BaseException:
            logger.debug('a replica raised; aborting %d sync contexts', len(self.contexts))
            for ctx in self.contexts:
                ctx.abort()
            raise


def guard_replicas(replicas):
    """Wrap replicas so that an exception in one aborts the rendezvous of all (no deadlock).

    Returns the replicas unchanged when they have no synchronized layer; otherwise callables to be
    run in place of the replicas (e.g. by `parallel_apply`).
    """
    replicas = list(replicas)
    contexts = _sync_contexts_of(replicas)
    if not contexts:
        return replicas
    return [_AbortOnError(replica, contexts) for replica in replicas]


class DataParallelWithCallback(DataParallel):
    """`nn.DataParallel` that runs the replication callbacks (and guards the replicas' threads).

    Same constructor and behaviour as `nn.DataParallel` (`module`, `device_ids`, `output_device`,
    `dim`); the wrapped module is `self.module`. With a single device (or none) DataParallel calls the
    module directly and synchronized batch norm behaves as plain batch norm.

    Example::

        model = DataParallelWithCallback(model, device_ids=[0, 1])
        # every SynchronizedBatchNorm in model now normalises with statistics of the whole batch
    """

    def replicate(self, module, device_ids):
        replicas = super().replicate(module, device_ids)
        execute_replication_callbacks(replicas)
        return replicas

    def parallel_apply(self, replicas, inputs, kwargs):
        return super().parallel_apply(guard_replicas(replicas), inputs, kwargs)


def patch_replication_callback(data_parallel):
    """Make an existing `nn.DataParallel` instance behave like `DataParallelWithCallback`.

    Monkey-patches the instance's `replicate` (to run the replication callbacks) and `parallel_apply`
    (to guard the replicas). Patching twice, or patching a DataParallelWithCallback, is a no-op.

    Example::

        model = nn.DataParallel(model, device_ids=[0, 1])
        patch_replication_callback(model)
    """
    if not isinstance(data_parallel, DataParallel):
        raise TypeError(f'expected a torch.nn.DataParallel, got {type(data_parallel).__name__}')
    if isinstance(data_parallel, DataParallelWithCallback) or getattr(data_parallel, '_replication_patched', False):
        return data_parallel

    old_replicate = data_parallel.replicate
    old_parallel_apply = data_parallel.parallel_apply

    @functools.wraps(old_replicate)
    def replicate(module, device_ids):
        replicas = old_replicate(module, device_ids)
        execute_replication_callbacks(replicas)
        return replicas

    @functools.wraps(old_parallel_apply)
    def parallel_apply(replicas, inputs, kwargs):
        return old_parallel_apply(guard_replicas(replicas), inputs, kwargs)

    data_parallel.replicate = replicate
    data_parallel.parallel_apply = parallel_apply
    data_parallel._replication_patched = True
    return data_parallel
