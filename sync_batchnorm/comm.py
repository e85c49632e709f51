"""Cross-replica communication for synchronized batch normalisation.

`torch.nn.DataParallel` runs the forward pass of each replica in its own Python thread (one thread per
device). A synchronized batch-norm layer therefore only needs an in-process rendezvous: every replica
puts its local statistics into a shared slot, waits until all replicas have done so, and then reads
everybody's statistics. `SyncContext` implements exactly that with a `threading.Barrier`.

One `SyncContext` is shared by the replicas of ONE original batch-norm module (it is created by the
replication callback, see `sync_batchnorm.replicate`). Each call of `SyncContext.exchange` is one
rendezvous round; rounds may be repeated any number of times (a module called several times per
forward, or replicas that are reused for several forwards).

Failure handling: if a replica raises before it reaches the rendezvous, the other replicas would wait
for ever. Two safeguards exist:

* `SyncContext.abort()` breaks the barrier, so every replica waiting (now or later) in `exchange`
  raises `SyncAbortedError` immediately. `DataParallelWithCallback` calls it automatically when any
  replica's forward raises (see `sync_batchnorm.replicate.guard_replicas`).
* A wait timeout (`DEFAULT_TIMEOUT` seconds, overridable per context; `None` disables it) catches
  the remaining cases, e.g. data-dependent control flow that makes one replica skip the layer.
"""
import logging
import threading

logger = logging.getLogger(__name__)

# Seconds a replica waits for the others inside one rendezvous before giving up (None: wait for ever).
# Replicas run in lockstep, so a healthy wait is short; this is only a guard against deadlocks.
DEFAULT_TIMEOUT = 600.0

_USE_DEFAULT = object()


class SyncAbortedError(RuntimeError):
    """Raised in a replica whose rendezvous was aborted (another replica failed) or timed out."""


class SyncContext:
    """Rendezvous point shared by the N replicas of one module.

    Usage (each replica, in its own thread)::

        ctx.register(copy_id)                      # once per replica, before any forward
        items = ctx.exchange(copy_id, my_item)     # -> [item of copy 0, item of copy 1, ...]

    `exchange` returns the items of all registered replicas ordered by copy id, so every replica sees
    the same list in the same order (hence reduces in the same order and gets identical results).

    Two barrier waits per round: the first makes all items visible, the second keeps a fast replica
    from overwriting its slot in the NEXT round before a slow replica has read the current one.
    """

    def __init__(self, timeout=_USE_DEFAULT):
        self.timeout = DEFAULT_TIMEOUT if timeout is _USE_DEFAULT else timeout
        self._lock = threading.Lock()
        self._copy_ids = []
        self._slots = {}
        self._barrier = None

    @property
    def num_replicas(self):
        """Number of registered replicas."""
        return len(self._copy_ids)

    def register(self, copy_id):
        """Register replica `copy_id`. Must be done for all replicas before the first `exchange`."""
        with self._lock:
            if copy_id in self._copy_ids:
                raise ValueError(f'replica {copy_id} is already registered with this SyncContext')
            self._copy_ids.append(copy_id)
            self._copy_ids.sort()
            # Registration happens sequentially in the main thread before any replica runs, so
            # rebuilding the barrier for the new party count is safe.
            self._barrier = threading.Barrier(len(self._copy_ids), timeout=self.timeout)

    def abort(self):
        """Break the rendezvous: replicas waiting now or later in `exchange` raise SyncAbortedError."""
        barrier = self._barrier
        if barrier is not None and not barrier.broken:
            logger.debug('aborting sync context with %d replicas', self.num_replicas)
            barrier.abort()

    @property
    def broken(self):
        """True once the rendezvous was aborted or a wait timed out."""
        return self._barrier is not None and self._barrier.broken

    def _wait(self, copy_id):
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            raise SyncAbortedError(
                f'synchronized batch norm: replica {copy_id} gave up waiting for the other replicas '
                f'(another replica raised, or the wait exceeded timeout={self.timeout}s). Every replica '
                'must call each synchronized batch-norm layer the same number of times per forward.'
            ) from None

    def exchange(self, copy_id, item):
        """Contribute `item` for replica `copy_id`; return all replicas' items ordered by copy id."""
        if copy_id not in self._copy_ids:
            raise ValueError(f'replica {copy_id} is not registered with this SyncContext')
        if len(self._copy_ids) == 1:
            return [item]
        self._slots[copy_id] = item  # distinct keys per thread; dict item assignment is atomic
        self._wait(copy_id)
        items = [self._slots[i] for i in self._copy_ids]
        self._wait(copy_id)
        # Everybody has read this round: drop our reference so the slot does not keep tensors alive.
        self._slots.pop(copy_id, None)
        return items
