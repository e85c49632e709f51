"""Tests of sync_batchnorm (synchronized batch norm + DataParallelWithCallback), CPU only.

There is no GPU here, so the cross-replica path is tested exactly the way DataParallel drives it:
the module is replicated (a CPU imitation of `torch.nn.parallel.replicate`, below), the replication
callbacks are executed, and the replicas run concurrently in one thread each.
"""
import copy
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sync_batchnorm import (DataParallelWithCallback, SynchronizedBatchNorm1d, SynchronizedBatchNorm2d,
                            SynchronizedBatchNorm3d, patch_replication_callback)
from sync_batchnorm.comm import SyncAbortedError, SyncContext
from sync_batchnorm.replicate import execute_replication_callbacks, guard_replicas

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 4
TINY_EPS = 1e-30


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def cpu_replicate(module, num_copies):
    """CPU imitation of torch.nn.parallel.replicate (which only works with CUDA devices).

    Like the real one: replicas are `_replicate_for_data_parallel()` shells; parameters are
    differentiable copies (gradients of all replicas sum into the original parameters, as with
    Broadcast); replica 0's buffers ARE the original buffers (broadcast_coalesced returns the inputs
    for the first device) while the other replicas get copies.
    """
    originals = list(module.modules())
    index = {id(m): i for i, m in enumerate(originals)}
    replicas = []
    for copy_id in range(num_copies):
        copies = [m._replicate_for_data_parallel() for m in originals]
        for orig, rep in zip(originals, copies):
            for name, child in orig._modules.items():
                rep._modules[name] = None if child is None else copies[index[id(child)]]
            for name, param in orig._parameters.items():
                setattr(rep, name, None if param is None else param.clone())
            if copy_id > 0:
                for name, buf in orig._buffers.items():
                    rep._buffers[name] = None if buf is None else buf.clone()
        replicas.append(copies[0])
    return replicas


def threaded_apply(replicas, inputs, timeout=30.0, guard=True):
    """Run replica i on inputs[i] in its own thread, like parallel_apply. Returns (outputs, errors).

    guard: wrap the replicas with guard_replicas (what DataParallelWithCallback.parallel_apply does).
    """
    runners = guard_replicas(replicas) if guard else list(replicas)
    outputs = [None] * len(runners)
    errors = [None] * len(runners)
    grad_enabled = torch.is_grad_enabled()

    def work(i):
        torch.set_grad_enabled(grad_enabled)
        try:
            outputs[i] = runners[i](inputs[i])
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(runners))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), 'replica threads deadlocked'
    return outputs, errors


def run_replicas(replicas, inputs, guard=True):
    outputs, errors = threaded_apply(replicas, inputs, guard=guard)
    for err in errors:
        if err is not None:
            raise err
    return outputs


def make_input(sizes, seed, channels=C, hw=(5, 6)):
    """Batch whose chunks (of the given sizes) have clearly different means and scales."""
    gen = torch.Generator().manual_seed(seed)
    batch = sum(sizes)
    x = torch.randn(batch, channels, *hw, generator=gen)
    offsets = torch.linspace(-3.0, 3.0, batch).view(batch, 1, 1, 1)
    scales = torch.linspace(0.5, 2.0, channels).view(1, channels, 1, 1)
    return x * scales + offsets


def make_sync_bn(seed=0, channels=C):
    torch.manual_seed(seed)
    bn = SynchronizedBatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels) + 0.5)
        bn.bias.copy_(torch.randn(channels))
        bn.running_mean.copy_(torch.randn(channels))
        bn.running_var.copy_(torch.rand(channels) + 0.5)
    return bn


def full_batch_reference(x, weight, bias, running_mean, running_var, momentum=0.1):
    """Full-batch training-mode batch norm, updating running_mean/var in place.

    eps=TINY_EPS: the synchronized path normalises with clamp(var, eps) ** -0.5, which equals
    var ** -0.5 whenever every channel's batch variance exceeds eps (true for the data used here);
    F.batch_norm wants eps > 0 in training, and var + 1e-30 == var in float32 for these variances.
    """
    return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, TINY_EPS)


# ----------------------------------------------------------------------------------------------
# Module interface / single device
# ----------------------------------------------------------------------------------------------
def test_state_dict_identical_to_batchnorm2d():
    sync, ref = SynchronizedBatchNorm2d(C), nn.BatchNorm2d(C)
    assert isinstance(sync, nn.modules.batchnorm._BatchNorm)
    sd_sync, sd_ref = sync.state_dict(), ref.state_dict()
    assert list(sd_sync) == list(sd_ref) == ['weight', 'bias', 'running_mean', 'running_var',
                                             'num_batches_tracked']
    for key in sd_ref:
        assert sd_sync[key].shape == sd_ref[key].shape, key
        assert sd_sync[key].dtype == sd_ref[key].dtype, key
        assert torch.equal(sd_sync[key], sd_ref[key]), key
    assert sd_sync['num_batches_tracked'].dtype == torch.int64 and sd_sync['num_batches_tracked'].dim() == 0

    # Strict loading both ways.
    src = nn.BatchNorm2d(C)
    with torch.no_grad():
        for t in src.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t).abs())
    src.num_batches_tracked.fill_(7)
    sync.load_state_dict(src.state_dict(), strict=True)
    for key, value in src.state_dict().items():
        assert torch.equal(sync.state_dict()[key], value)
    back = nn.BatchNorm2d(C)
    back.load_state_dict(sync.state_dict(), strict=True)
    for key, value in sync.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_affine_false_and_other_dims():
    bn = SynchronizedBatchNorm2d(3, affine=False)
    assert list(bn.state_dict()) == list(nn.BatchNorm2d(3, affine=False).state_dict())
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(bn(x), F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5))
    assert SynchronizedBatchNorm1d(3)(torch.randn(4, 3)).shape == (4, 3)
    assert SynchronizedBatchNorm1d(3)(torch.randn(4, 3, 5)).shape == (4, 3, 5)
    assert SynchronizedBatchNorm3d(3)(torch.randn(2, 3, 2, 2, 2)).shape == (2, 3, 2, 2, 2)


def test_input_dim_checked():
    with pytest.raises(ValueError, match='4D'):
        SynchronizedBatchNorm2d(C)(torch.randn(2, C, 3))
    with pytest.raises(ValueError, match='5D'):
        SynchronizedBatchNorm3d(C)(torch.randn(2, C, 3, 3))
    with pytest.raises(ValueError, match='2D or 3D'):
        SynchronizedBatchNorm1d(C)(torch.randn(2, C, 3, 3))


def test_single_device_train_forward_matches_f_batch_norm_and_nn_batchnorm():
    sync = make_sync_bn(seed=1)
    ref = nn.BatchNorm2d(C)
    ref.load_state_dict(sync.state_dict())
    rm, rv = sync.running_mean.clone(), sync.running_var.clone()
    x = make_input([8], seed=2)

    out = sync(x)
    expected = F.batch_norm(x, rm, rv, sync.weight, sync.bias, True, 0.1, 1e-5)
    assert torch.equal(out, expected)  # bitwise: it is the same call
    assert torch.equal(sync.running_mean, rm) and torch.equal(sync.running_var, rv)

    out_ref = ref(x)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(sync.running_mean, ref.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(sync.running_var, ref.running_var, rtol=0, atol=1e-6)
    # Running var uses the unbiased batch variance, momentum 0.1.
    batch_var = x.transpose(0, 1).reshape(C, -1).var(dim=1, unbiased=True)
    torch.testing.assert_close(sync.running_var, 0.9 * make_sync_bn(seed=1).running_var + 0.1 * batch_var)
    # The quirk: num_batches_tracked is never incremented (nn.BatchNorm2d's is).
    assert int(sync.num_batches_tracked) == 0
    assert int(ref.num_batches_tracked) == 1


def test_eval_mode_uses_running_stats():
    sync = make_sync_bn(seed=3).eval()
    x = make_input([6], seed=4)
    before = {k: v.clone() for k, v in sync.state_dict().items()}
    out = sync(x)
    expected = (x - sync.running_mean.view(1, C, 1, 1)) / torch.sqrt(sync.running_var.view(1, C, 1, 1) + 1e-5)
    expected = expected * sync.weight.view(1, C, 1, 1) + sync.bias.view(1, C, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for key, value in sync.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_base_module_is_never_put_in_sync_mode():
    bn = make_sync_bn()
    replicas = cpu_replicate(bn, 2)
    execute_replication_callbacks(replicas)
    assert bn._sync_ctx is None  # only the replicas know each other
    assert replicas[0]._sync_ctx is replicas[1]._sync_ctx
    assert replicas[0]._sync_ctx.num_replicas == 2
    assert [r._copy_id for r in replicas] == [0, 1]
    assert replicas[0].running_mean is bn.running_mean  # the imitation aliases like the real one


# ----------------------------------------------------------------------------------------------
# Cross-replica synchronisation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('sizes', [(3, 5), (4, 4), (2, 3, 3)])
@pytest.mark.parametrize('reuse_replicas', [False, True])
def test_replicas_match_full_batch(sizes, reuse_replicas):
    bn = make_sync_bn(seed=5)
    weight_ref = bn.weight.detach().clone().requires_grad_(True)
    bias_ref = bn.bias.detach().clone().requires_grad_(True)
    rm_ref, rv_ref = bn.running_mean.clone(), bn.running_var.clone()

    replicas = None
    for step in range(2):  # two successive forwards: no deadlock, no stale state
        if replicas is None or not reuse_replicas:
            replicas = cpu_replicate(bn, len(sizes))  # DataParallel re-replicates every forward
            execute_replication_callbacks(replicas)
        x = make_input(sizes, seed=10 + step).requires_grad_(True)
        grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(20 + step))
        bn.weight.grad = bn.bias.grad = None

        out = torch.cat(run_replicas(replicas, list(x.split(list(sizes)))))
        (out * grad_out).sum().backward()

        x_ref = x.detach().clone().requires_grad_(True)
        weight_ref.grad = bias_ref.grad = None
        out_ref = full_batch_reference(x_ref, weight_ref, bias_ref, rm_ref, rv_ref)
        (out_ref * grad_out).sum().backward()

        torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(bn.running_mean, rm_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(bn.running_var, rv_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-4)
        torch.testing.assert_close(bn.weight.grad, weight_ref.grad, rtol=0, atol=1e-4)
        torch.testing.assert_close(bn.bias.grad, bias_ref.grad, rtol=0, atol=1e-4)
        assert int(bn.num_batches_tracked) == 0

    # Also close to nn.BatchNorm2d's (var + eps) normalisation, the difference being the eps clamp.
    x = make_input(sizes, seed=99)
    replicas = cpu_replicate(bn, len(sizes))
    execute_replication_callbacks(replicas)
    with torch.no_grad():
        out = torch.cat(run_replicas(replicas, list(x.split(list(sizes)))))
        out_bn = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.1, 1e-5)
    torch.testing.assert_close(out, out_bn, rtol=0, atol=1e-4)


def test_unsynchronised_statistics_would_differ():
    """Guards the test above: per-replica statistics are far from the full-batch ones on this data."""
    sizes = [3, 5]
    bn = make_sync_bn(seed=6)
    x = make_input(sizes, seed=7)
    with torch.no_grad():
        full = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.1, TINY_EPS)
        per_chunk = torch.cat([F.batch_norm(c, None, None, bn.weight, bn.bias, True, 0.1, TINY_EPS)
                               for c in x.split(sizes)])
        assert (per_chunk - full).abs().max() > 0.5

        rm0 = bn.running_mean.clone()
        replicas = cpu_replicate(bn, 2)
        execute_replication_callbacks(replicas)
        synced = torch.cat(run_replicas(replicas, list(x.split(sizes))))
    torch.testing.assert_close(synced, full, rtol=0, atol=1e-5)
    # Running mean: full-batch update, not the first chunk's.
    full_mean = x.mean(dim=(0, 2, 3))
    chunk0_mean = x[:sizes[0]].mean(dim=(0, 2, 3))
    assert (full_mean - chunk0_mean).abs().max() > 0.5
    torch.testing.assert_close(bn.running_mean, 0.9 * rm0 + 0.1 * full_mean, rtol=0, atol=1e-5)


def test_eps_clamp_in_multi_replica_path():
    """The original normalises with clamp(var_biased, eps) ** -0.5, not (var_biased + eps) ** -0.5."""
    eps = 1e-2
    bn = SynchronizedBatchNorm2d(2, eps=eps, affine=False)
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(4, 2, 3, 3, generator=gen)
    x[:, 0] = x[:, 0] * 0.01 + 1.0  # variance ~1e-4 < eps: clamped to eps
    x[:, 1] = x[:, 1] * 0.2 - 1.0   # variance ~4e-2 > eps: clamp inactive, and no "+ eps" either
    replicas = cpu_replicate(bn, 2)
    execute_replication_callbacks(replicas)
    with torch.no_grad():
        out = torch.cat(run_replicas(replicas, list(x.split([1, 3]))))
    mean = x.mean(dim=(0, 2, 3)).view(1, 2, 1, 1)
    var = x.var(dim=(0, 2, 3), unbiased=False).view(1, 2, 1, 1)
    assert var[0, 0] < eps < var[0, 1]
    torch.testing.assert_close(out, (x - mean) * var.clamp(min=eps).rsqrt(), rtol=1e-4, atol=1e-5)
    plus_eps = (x - mean) * (var + eps).rsqrt()
    no_eps = (x - mean) * var.rsqrt()
    assert (out[:, 1] - plus_eps[:, 1]).abs().max() > 0.05
    assert (out[:, 0] - no_eps[:, 0]).abs().max() > 0.5


class _Net(nn.Module):
    """conv -> SyncBN -> ReLU -> conv -> SyncBN (the second BN is called twice)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, C, 3, padding=1)
        self.bn1 = SynchronizedBatchNorm2d(C)
        self.conv2 = nn.Conv2d(C, C, 3, padding=1)
        self.bn2 = SynchronizedBatchNorm2d(C)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(h)) + self.bn2(h)


def _reference_copy(net):
    """Single-device copy of `net` whose batch norms use a negligible eps (F.batch_norm with
    var + 1e-30 equals the synchronized path's clamp(var, eps) whenever var > eps): tight comparison."""
    ref = copy.deepcopy(net)
    for m in ref.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = TINY_EPS
    return ref


def _cpu_scatter(inputs, kwargs, device_ids, sizes):
    chunks = inputs[0].split(sizes)
    return tuple((c,) for c in chunks), tuple({} for _ in chunks)


def test_data_parallel_with_callback_end_to_end_cpu(monkeypatch):
    """Full DataParallelWithCallback.forward with CUDA-only pieces swapped for CPU equivalents."""
    sizes = [3, 5]
    torch.manual_seed(11)
    net = _Net()
    net_ref = _reference_copy(net)
    monkeypatch.setattr(nn.DataParallel, 'replicate', lambda self, module, ids: cpu_replicate(module, len(ids)))

    def base_parallel_apply(self, replicas, inputs, kwargs):
        # DataParallelWithCallback hands the base class guarded replicas (abort on error).
        assert all(type(r).__name__ == '_AbortOnError' for r in replicas)
        return run_replicas(replicas, [i[0] for i in inputs], guard=False)

    monkeypatch.setattr(nn.DataParallel, 'parallel_apply', base_parallel_apply)
    dp = DataParallelWithCallback(net)
    dp.device_ids, dp.src_device_obj, dp.output_device = [0, 1], torch.device('cpu'), 0
    monkeypatch.setattr(dp, 'scatter', lambda inputs, kwargs, ids: _cpu_scatter(inputs, kwargs, ids, sizes))
    monkeypatch.setattr(dp, 'gather', lambda outputs, device: torch.cat(outputs))

    for step in range(2):
        x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(30 + step))
        x[:3] += 2.0
        net.zero_grad()
        net_ref.zero_grad()
        out = dp(x)
        out_ref = net_ref(x)
        out.square().mean().backward()
        out_ref.square().mean().backward()
        torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-4)
        for (name, p), p_ref in zip(net.named_parameters(), net_ref.parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-4, msg=name)
        for (name, b), b_ref in zip(net.named_buffers(), net_ref.buffers()):
            if b.is_floating_point():
                torch.testing.assert_close(b, b_ref, rtol=0, atol=1e-5, msg=name)
    assert net.bn1._sync_ctx is None


def test_patch_replication_callback(monkeypatch):
    net = _Net()
    dp = nn.DataParallel(net)
    monkeypatch.setattr(dp, 'replicate', lambda module, ids: cpu_replicate(module, len(ids)), raising=False)
    patch_replication_callback(dp)
    patch_replication_callback(dp)  # idempotent
    replicas = dp.replicate(net, [0, 1, 2])
    assert replicas[0].bn1._sync_ctx is replicas[2].bn1._sync_ctx
    assert replicas[0].bn1._sync_ctx is not replicas[0].bn2._sync_ctx
    assert replicas[0].bn1._sync_ctx.num_replicas == 3
    x = torch.randn(6, 3, 4, 4)
    outs = run_replicas(replicas, list(x.split(2)))
    assert torch.cat(outs).shape == (6, C, 4, 4)
    with pytest.raises(TypeError):
        patch_replication_callback(net)


# ----------------------------------------------------------------------------------------------
# Failure handling
# ----------------------------------------------------------------------------------------------
class _FailOnOddBatch(nn.Module):
    def forward(self, x):
        if x.shape[0] % 2:
            raise RuntimeError('boom')
        return x


def test_error_in_one_replica_does_not_deadlock():
    model = nn.Sequential(_FailOnOddBatch(), SynchronizedBatchNorm2d(C))
    replicas = cpu_replicate(model, 2)
    execute_replication_callbacks(replicas)
    x = torch.randn(7, C, 3, 3)
    start = time.monotonic()
    _, errors = threaded_apply(replicas, list(x.split([4, 3])), timeout=20.0)
    assert time.monotonic() - start < 10.0
    assert isinstance(errors[1], RuntimeError) and 'boom' in str(errors[1])
    assert isinstance(errors[0], SyncAbortedError)


def test_sync_context_timeout_and_rounds():
    ctx = SyncContext(timeout=0.2)
    ctx.register(0)
    ctx.register(1)
    with pytest.raises(ValueError):
        ctx.register(1)
    start = time.monotonic()
    with pytest.raises(SyncAbortedError):
        ctx.exchange(0, 'a')  # replica 1 never comes
    assert time.monotonic() - start < 5.0
    assert ctx.broken

    # Many rounds in a row, items always ordered by copy id.
    ctx = SyncContext(timeout=10.0)
    for i in range(3):
        ctx.register(i)
    results = [[] for _ in range(3)]

    def work(i):
        for r in range(50):
            results[i].append(ctx.exchange(i, (i, r)))

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20.0)
    assert not any(t.is_alive() for t in threads)
    for i in range(3):
        assert results[i] == [[(0, r), (1, r), (2, r)] for r in range(50)]


# ----------------------------------------------------------------------------------------------
# Optional torch.distributed path (gloo, 2 processes on CPU)
# ----------------------------------------------------------------------------------------------
_DIST_WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    from sync_batchnorm import SynchronizedBatchNorm2d

    rank, world, init_file, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method='file://' + init_file, rank=rank, world_size=world)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(7, 3, 4, 4, generator=gen) + torch.linspace(-2, 2, 7).view(7, 1, 1, 1)
        g = torch.randn(7, 3, 4, 4, generator=gen)
        sizes = [3, 4]
        start = sum(sizes[:rank])
        xr = x[start:start + sizes[rank]].clone().requires_grad_(True)
        bn = SynchronizedBatchNorm2d(3, sync_distributed=True)
        out = bn(xr)
        (out * g[start:start + sizes[rank]]).sum().backward()
        torch.save({'out': out.detach(), 'xgrad': xr.grad, 'wgrad': bn.weight.grad, 'bgrad': bn.bias.grad,
                    'rm': bn.running_mean, 'rv': bn.running_var}, out_file)
        dist.barrier()
    finally:
        dist.destroy_process_group()
''')


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason='torch.distributed with gloo is not available')
def test_distributed_sync_two_processes(tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(_DIST_WORKER)
    init_file = tmp_path / 'init'
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    procs = [subprocess.Popen([sys.executable, str(script), str(r), '2', str(init_file), str(tmp_path / f'r{r}.pt')],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=180)[0].decode(errors='replace'))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail('distributed workers timed out')
    assert all(p.returncode == 0 for p in procs), '\n'.join(logs)
    res = [torch.load(tmp_path / f'r{r}.pt') for r in range(2)]

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 3, 4, 4, generator=gen) + torch.linspace(-2, 2, 7).view(7, 1, 1, 1)).requires_grad_(True)
    g = torch.randn(7, 3, 4, 4, generator=gen)
    w = torch.ones(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    rm, rv = torch.zeros(3), torch.ones(3)
    out = full_batch_reference(x, w, b, rm, rv)
    (out * g).sum().backward()
    torch.testing.assert_close(torch.cat([r['out'] for r in res]), out.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat([r['xgrad'] for r in res]), x.grad, rtol=0, atol=1e-4)
    # Each rank holds the gradient of its own loss term; DDP would average them, so their sum is the
    # full-batch gradient.
    torch.testing.assert_close(res[0]['wgrad'] + res[1]['wgrad'], w.grad, rtol=0, atol=1e-4)
    torch.testing.assert_close(res[0]['bgrad'] + res[1]['bgrad'], b.grad, rtol=0, atol=1e-4)
    for r in res:
        torch.testing.assert_close(r['rm'], rm, rtol=0, atol=1e-5)
        torch.testing.assert_close(r['rv'], rv, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Real GPUs
# ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs at least 2 CUDA devices')
def test_data_parallel_on_gpus_matches_full_batch():
    torch.manual_seed(12)
    net = _Net().cuda()
    net_ref = _reference_copy(net)
    dp = DataParallelWithCallback(net, device_ids=[0, 1])
    for step in range(2):
        x = torch.randn(8, 3, 6, 6, device='cuda')
        x[:4] += 2.0
        net.zero_grad()
        net_ref.zero_grad()
        out = dp(x)
        out_ref = net_ref(x)
        out.square().mean().backward()
        out_ref.square().mean().backward()
        torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-4)
        for p, p_ref in zip(net.parameters(), net_ref.parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-4)
        for b, b_ref in zip(net.buffers(), net_ref.buffers()):
            if b.is_floating_point():
                torch.testing.assert_close(b, b_ref, rtol=0, atol=1e-5)
