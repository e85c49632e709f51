"""CPAB transforms (modules/cpabmm/cpab.py): the basis, diffeomorphism, identity, gradients, the
integrator's accuracy, and the keypoint fit (Gauss-Newton vs CPABMM's Adam) on random and real
keypoint sets."""
import numpy as np
import pytest
import torch

from modules.cpabmm.cpab import CPAB, constraint_matrix, cpab_basis, fit_adam, fit_gauss_newton
from modules.cpabmm.dense_motion import GLOBAL_REGULARIZATION
from tests.conftest import REPO

BUNDLED = REPO / 'pretrained' / 'cartoon-64'


def smooth_pairs(n, points, seed, strength=0.15):
    """(driving, source) (n, points, 2) in [0.1, 0.9]: source = a random affine motion of driving plus
    1% jitter, the kind of motion a keypoint group follows between two frames."""
    g = torch.Generator().manual_seed(seed)
    driving = torch.rand(n, points, 2, generator=g) * 0.8 + 0.1
    A = torch.eye(2) + strength * torch.randn(n, 2, 2, generator=g)
    b = 0.05 * torch.randn(n, 1, 2, generator=g)
    source = (driving - 0.5) @ A.transpose(1, 2) + 0.5 + b + 0.01 * torch.randn(n, points, 2, generator=g)
    return driving, source


# CPABMM's table of dimensions (zero_boundary=False, no volume constraint), computed by libcpab.
@pytest.mark.parametrize('n, d', [(3, 34), (4, 58), (5, 90), (6, 130), (7, 178), (10, 370)])
def test_dimension_matches_cpabmms_table(n, d):
    assert CPAB((n, n)).d == d


def test_the_velocity_field_is_continuous_inside_and_outside_the_domain():
    cpab = CPAB((4, 4))
    theta = torch.randn(2, cpab.d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    basis = torch.tensor(cpab_basis(4, 4))  # float64
    cpab.basis = basis
    # every inner edge and the lines perpendicular to the boundary through boundary vertices, from both sides
    t = torch.linspace(-0.5, 1.5, 401, dtype=torch.float64)
    lines = [torch.stack([torch.full_like(t, c), t], -1) for c in np.arange(0, 1.01, 0.25)] + \
            [torch.stack([t, torch.full_like(t, c)], -1) for c in np.arange(0, 1.01, 0.25)] + \
            [torch.stack([t, t], -1), torch.stack([t, 1 - t], -1)]
    for line in lines:
        for shift in (torch.tensor([1e-7, 0.0]), torch.tensor([0.0, 1e-7]), torch.tensor([1e-7, 1e-7])):
            shift = shift.double()
            a = cpab.velocity((line + shift).expand(2, -1, -1), theta)
            b = cpab.velocity((line - shift).expand(2, -1, -1), theta)
            assert (a - b).abs().max() < 1e-5
    L = constraint_matrix(4, 4)
    assert np.abs(L @ basis.numpy()).max() < 1e-10
    assert np.allclose(basis.numpy().T @ basis.numpy(), np.eye(cpab.d), atol=1e-10), 'orthonormal'


def test_theta_zero_is_the_identity():
    cpab = CPAB((4, 4))
    points = torch.rand(3, 100, 2) * 1.4 - 0.2
    assert torch.equal(cpab.transform(points, cpab.identity(3)), points)


@pytest.mark.parametrize('tess, scale, n', [((4, 4), 1.0, 65), ((6, 6), 1.0, 65), ((4, 4), 1.5, 257)])
def test_minus_theta_inverts_and_the_jacobian_determinant_is_positive(tess, scale, n):
    """(The map is smooth inside the regions whose trajectories cross the same cells and has kinks
    between them; finite differences that straddle a kink mix two Jacobians, and for fields much
    stronger than these (displacements past the image size) such a mix can have a negative
    determinant, on a line of grid points whose share falls as 1/n, though the map does not fold.)"""
    cpab = CPAB(tess)
    theta = scale * torch.randn(4, cpab.d, generator=torch.Generator().manual_seed(1))
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing='xy'), -1)
    moved = cpab.transform(grid.view(-1, 2), theta)
    displacement = (moved - grid.view(-1, 2)).norm(dim=-1).max()
    assert displacement > 0.1, 'a real deformation'
    back = cpab.transform(moved, -theta)
    assert (back - grid.view(-1, 2)).norm(dim=-1).max() < 2e-3 * displacement
    moved = moved.view(4, n, n, 2)
    dx = (moved[:, :-1, 1:] - moved[:, :-1, :-1]) * (n - 1)  # d T / d x
    dy = (moved[:, 1:, :-1] - moved[:, :-1, :-1]) * (n - 1)  # d T / d y
    det = dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]
    assert det.min() > 0, 'orientation preserved everywhere: no fold'
    assert det.max() / det.min() > 1.2, 'and not a rigid motion'


def test_integration_converges_with_the_number_of_steps():
    theta = 1.5 * torch.randn(3, 58, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    points = torch.rand(3, 200, 2, dtype=torch.float64)
    fine = CPAB((4, 4), nsteps=2000).double().transform(points, theta)
    errors = [(CPAB((4, 4), nsteps=s).double().transform(points, theta) - fine).abs().max() for s in (25, 50, 100)]
    assert errors[1] < 1e-3 * (fine - points).abs().max()
    assert errors[0] > errors[1] > errors[2], errors


def test_gradients_match_finite_differences():
    cpab = CPAB((4, 4), nsteps=20).double()
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(2, cpab.d, generator=g, dtype=torch.float64).requires_grad_()
    points = (torch.rand(2, 6, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(cpab.transform, (points, theta), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_the_fits_jacobian_agrees_with_autograd():
    cpab = CPAB((4, 4)).double()
    theta = torch.randn(3, cpab.d, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    points = torch.rand(3, 5, 2, dtype=torch.float64)
    _, J = cpab.integrate(points, theta, jacobian=True)
    reference = torch.func.jacrev(lambda t: cpab.transform(points, t).sum(0))(theta)  # (P, 2, N, d)
    reference = reference.permute(2, 0, 1, 3)
    assert ((J - reference).norm() / reference.norm()) < 1e-3


def test_gauss_newton_matches_keypoints_better_than_cpabmms_adam():
    for tess, points, n in (((4, 4), 5, 64), ((6, 6), 50, 8)):
        cpab = CPAB(tess)
        driving, source = smooth_pairs(n, points, seed=5)
        _, gn = fit_gauss_newton(cpab, driving, source, regularization=0.0 if points == 5 else GLOBAL_REGULARIZATION)
        _, adam = fit_adam(cpab, driving, source, steps=100 if points == 5 else 150)
        assert gn.mean() < adam.mean() and gn.median() < adam.median(), (tess, gn.mean(), adam.mean())
        if points == 5:  # 10 equations, 58 unknowns: exactly solvable
            assert gn.max() < 1e-4, gn.max()


def test_hard_random_keypoints_mostly_converge():
    cpab = CPAB((4, 4))
    g = torch.Generator().manual_seed(6)
    driving = torch.rand(64, 5, 2, generator=g) * 0.8 + 0.1
    source = driving + 0.08 * torch.randn(64, 5, 2, generator=g)  # independent jumps of each keypoint
    theta, error = fit_gauss_newton(cpab, driving, source, iterations=20)
    assert error.median() < 1e-4 and (error < 1e-3).float().mean() > 0.8, error
    moved = cpab.transform(driving, theta)
    assert torch.allclose(((moved - source) ** 2).sum(-1).mean(1).sqrt(), error, atol=1e-5)


def test_warm_start_from_the_previous_frame_converges_sooner():
    cpab = CPAB((4, 4))
    driving, source = smooth_pairs(16, 5, seed=7)
    theta, _ = fit_gauss_newton(cpab, driving, source)
    nearby = source + 0.002 * torch.randn(source.shape, generator=torch.Generator().manual_seed(8))
    _, cold = fit_gauss_newton(cpab, driving, nearby, iterations=2)
    _, warm = fit_gauss_newton(cpab, driving, nearby, theta=theta, iterations=2)
    assert warm.max() < 1e-4 < cold.max(), (warm.max(), cold.max())


def bundled_keypoints():
    """The bundled FOMM's keypoints on its sample driving video: frame 0 and every 10th frame, in [0, 1]."""
    from demo import load_checkpoints
    from toolkit.video_io import iter_video_frames
    _, kp_detector = load_checkpoints(str(REPO / 'config' / 'cartoon-64.yaml'), str(BUNDLED / 'cartoon-64.pth.tar'),
                                      cpu=True)
    frames = np.stack([f for i, f in enumerate(iter_video_frames(BUNDLED / 'driving.mp4')) if i % 10 == 0])
    with torch.no_grad():
        kp = kp_detector(torch.tensor(frames / 255.0, dtype=torch.float32).permute(0, 3, 1, 2))['value']
    return (kp + 1) / 2  # (T, 10, 2)


def test_fit_on_real_keypoints_of_a_talking_head():
    kp = bundled_keypoints()
    source = kp[:1].expand(len(kp) - 1, -1, -1)  # animate frame 0 by every later frame
    driving = kp[1:]
    assert (driving - source).norm(dim=-1).mean() > 0.01, 'the keypoints move'
    partial = CPAB((4, 4))
    groups = lambda x: x.reshape(-1, 5, 2)  # noqa: E731  (2 groups of 5 keypoints per frame)
    theta, error = fit_gauss_newton(partial, groups(driving), groups(source))
    moved = partial.transform(groups(driving), theta)  # (float32 rounding grows with |theta|)
    assert torch.allclose(((moved - groups(source)) ** 2).sum(-1).mean(1).sqrt(), error, atol=1e-4)
    _, adam = fit_adam(partial, groups(driving), groups(source))
    # Some groups hold two keypoints less than a pixel apart that move differently: no smooth map
    # matches those exactly, and both fits stop short there.
    assert error.median() < 1e-3 and error.mean() < adam.mean() / 2 and error.max() < adam.max(), (error, adam)
    _, whole = fit_gauss_newton(CPAB((6, 6)), driving, source, regularization=GLOBAL_REGULARIZATION)
    _, whole_adam = fit_adam(CPAB((6, 6)), driving, source, steps=150)
    assert whole.mean() < whole_adam.mean(), (whole, whole_adam)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cpu_and_cuda_agree():
    cpab = CPAB((4, 4))
    driving, source = smooth_pairs(32, 5, seed=9)
    theta = torch.randn(32, cpab.d, generator=torch.Generator().manual_seed(10))
    cpu = cpab.transform(driving, theta)
    cuda = cpab.to('cuda').transform(driving.cuda(), theta.cuda()).cpu()
    assert (cpu - cuda).abs().max() < 1e-4
    fitted_cpu, _ = fit_gauss_newton(cpab.cpu(), driving, source)
    fitted_cuda, error = fit_gauss_newton(cpab.to('cuda'), driving.cuda(), source.cuda())
    assert error.max() < 1e-4
    assert (cpab.cpu().transform(driving, fitted_cuda.cpu()) - source).abs().max() < 5e-4


def test_the_basis_is_the_same_with_any_number_of_threads(tmp_path):
    """LAPACK's null-space vectors depend on its thread count; the canonical basis does not (a theta
    means the same field everywhere)."""
    import os
    import subprocess
    import sys
    code = ('import numpy as np; from modules.cpabmm.cpab import cpab_basis; '
            'np.save(__import__("sys").argv[1], cpab_basis(4, 4))')
    bases = []
    for threads, tmp in (('1', 'one.npy'), ('2', 'two.npy')):
        env = {**os.environ, 'OMP_NUM_THREADS': threads, 'OPENBLAS_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads}
        subprocess.run([sys.executable, '-c', code, str(tmp_path / tmp)], cwd=REPO, env=env, check=True)
        bases.append(np.load(tmp_path / tmp))
    assert np.abs(bases[0] - bases[1]).max() < 1e-9


def test_the_fit_stops_once_every_sample_has_converged(monkeypatch):
    """The global fit of real keypoints (50 of them: over-determined) reaches its floor in a few
    steps: it stops there (ftol) instead of running out its iterations, at the same error."""
    import modules.cpabmm.cpab as cpab_module
    calls = []
    residual = cpab_module._residual
    monkeypatch.setattr(cpab_module, '_residual', lambda *a, **k: calls.append(1) or residual(*a, **k))
    kp = bundled_keypoints()
    cpab = CPAB((6, 6))
    steps = {}
    for ftol in (0, 1e-4):
        for i in range(1, len(kp)):  # one frame at a time: the fit stops when all its samples have converged
            calls.clear()
            _, error = fit_gauss_newton(cpab, kp[i:i + 1], kp[:1], regularization=GLOBAL_REGULARIZATION, ftol=ftol)
            steps[ftol, i] = len(calls), float(error)
    frames = range(1, len(kp))
    assert all(steps[0, i][0] == 11 for i in frames), 'without ftol: every iteration'
    assert sum(steps[1e-4, i][0] < 11 for i in frames) >= len(kp) // 2, steps
    assert all(abs(steps[1e-4, i][1] - steps[0, i][1]) < 0.01 * steps[0, i][1] for i in frames), steps
    # a batch runs until its slowest sample is done: an early and a late frame together take the late one's steps
    early = min(frames, key=lambda i: steps[1e-4, i][0])
    late = max(frames, key=lambda i: steps[1e-4, i][0])
    assert steps[1e-4, early][0] < steps[1e-4, late][0]
    calls.clear()
    fit_gauss_newton(cpab, kp[[early, late]], kp[[0, 0]], regularization=GLOBAL_REGULARIZATION)
    assert len(calls) == steps[1e-4, late][0]
