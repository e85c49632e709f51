"""CPAB transforms (Freifeld et al., PAMI 2017) and their fit to keypoints, as CPABMM (Wang et al.,
AAAI 2024) uses them in place of TPSMM's thin-plate splines.

A CPAB transform is the time-1 flow of a continuous piecewise-affine velocity field:

    T_theta(x) = phi(x, 1),   d phi / dt = v_theta(phi),   v_theta(x) = A_c(x) [x; 1],

with A_c a 2x3 matrix per cell c of a triangulated tessellation of [0, 1]^2 (nx x ny rectangles,
each split by its diagonals into 4 triangles: top, right, bottom, left) and vec(A) = B theta, B an
orthonormal basis of the fields that are continuous across every shared edge. The field also holds
outside the domain: a point outside uses the boundary triangle it faces, and two neighbouring
boundary triangles must agree along the line through their shared vertex perpendicular to the
boundary, so the field is continuous on the whole plane (libcpab's "valid outside" constraints,
zero_boundary=False; no volume constraint). This gives CPABMM's parameter dimensions: 58 for a 4x4
tessellation, 130 for 6x6. A continuous velocity field that is Lipschitz has a flow that is a
homeomorphism, smooth inside the cells: T_{-theta} is T_theta's inverse and det dT/dx > 0.

Integration (documented numerical scheme, libcpab's): nsteps steps of h = 1/nsteps, each applying
the exact affine flow of the point's current cell, x <- expm(h A_c)[x; 1]; the cell is looked up
again before every step. Inside a cell this is exact; a step that crosses into another cell is off
by O(h^2) (the fields agree on the shared edge, so only their first derivatives differ), which gives
an O(h) global error: about 1e-3 of the displacement at nsteps=50 (measured in the tests).

Coordinates here are (x, y) in [0, 1]; the motion model maps its [-1, 1] keypoints and grids.

The fit (Sec. 3.2 of CPABMM): theta minimising |T_theta(kp_driving) - kp_source|. CPABMM runs 100
(200 for taichi; 1.5x that for the global transform) Adam steps from the identity, in a Python loop
over the whole batch (fit_adam, kept for comparison). fit_gauss_newton solves the same problem by
damped Gauss-Newton (Levenberg-Marquardt) on the batch: the Jacobian dT/dtheta is integrated with the
points (forward sensitivities, integrate(..., jacobian=True)), and each step is the minimum-norm
update, delta = -J^T (J J^T + lambda I)^{-1} r, so starting from theta = 0 it adds no more velocity
field than each step needs to carry the driving keypoints onto the source keypoints.
"""
import functools

import numpy as np
import torch
from torch import nn

TRIANGLES = ('top', 'right', 'bottom', 'left')  # order of the 4 triangles of each rectangle


def _triangle_vertices(nx, ny):
    """(4 nx ny, 3, 2) integer vertices on the half-cell lattice (x = 2 j (+1 at centres), y = 2 i),
    triangle index (i ny_row * nx + j) * 4 + t, t in TRIANGLES, first vertex the rectangle's centre."""
    cells = []
    for i in range(ny):
        for j in range(nx):
            centre, ul, ur, ll, lr = (2 * j + 1, 2 * i + 1), (2 * j, 2 * i), (2 * j + 2, 2 * i), \
                (2 * j, 2 * i + 2), (2 * j + 2, 2 * i + 2)
            cells += [(centre, ul, ur), (centre, ur, lr), (centre, lr, ll), (centre, ll, ul)]
    return np.array(cells)


def constraint_matrix(nx, ny):
    """L (rows, 6 nC) with L vec(A) = 0 exactly for the continuous, valid-outside fields; vec(A) holds
    each cell's 2x3 matrix row by row."""
    vertices = _triangle_vertices(nx, ny)
    num_cells = len(vertices)
    rows = []

    def agree(c1, c2, point):  # A_c1 [p; 1] = A_c2 [p; 1], both velocity components
        p = np.array([point[0], point[1], 1.0])
        for k in range(2):
            row = np.zeros(6 * num_cells)
            row[6 * c1 + 3 * k:6 * c1 + 3 * k + 3] = p
            row[6 * c2 + 3 * k:6 * c2 + 3 * k + 3] = -p
            rows.append(row)

    edges = {}
    for c, tri in enumerate(vertices):
        for a, b in ((0, 1), (1, 2), (0, 2)):
            edges.setdefault(frozenset((tuple(tri[a]), tuple(tri[b]))), []).append(c)
    for edge, cells in edges.items():
        if len(cells) == 2:  # an inner edge: continuity at both end points
            for vx, vy in edge:
                agree(cells[0], cells[1], (vx / (2 * nx), vy / (2 * ny)))

    def tri(i, j, t):
        return (i * nx + j) * 4 + TRIANGLES.index(t)

    for i in range(ny - 1):  # left and right sides: rows i, i + 1 agree on the horizontal line
        y = (i + 1) / ny
        agree(tri(i, 0, 'left'), tri(i + 1, 0, 'left'), (-1.0, y))
        agree(tri(i, nx - 1, 'right'), tri(i + 1, nx - 1, 'right'), (2.0, y))
    for j in range(nx - 1):  # top and bottom sides: columns j, j + 1 agree on the vertical line
        x = (j + 1) / nx
        agree(tri(0, j, 'top'), tri(0, j + 1, 'top'), (x, -1.0))
        agree(tri(ny - 1, j, 'bottom'), tri(ny - 1, j + 1, 'bottom'), (x, 2.0))
    return np.stack(rows)


@functools.lru_cache(maxsize=None)
def cpab_basis(nx, ny):
    """(6 nC, d) float64 orthonormal basis of the null space of constraint_matrix.

    The SVD's null-space vectors are one basis among many, and which one depends on the LAPACK
    build and its thread count; so the basis is made canonical: the eigenvectors, within the null
    space, of the fixed diagonal weighting diag(1 ... 2) of the 6 nC entries (distinct eigenvalues),
    each signed so that its largest entry is positive. The same theta then means the same field on
    every machine."""
    L = constraint_matrix(nx, ny)
    _, s, vt = np.linalg.svd(L)
    rank = int((s > 1e-10 * s[0]).sum())
    null = vt[rank:].T
    weights = np.linspace(1.0, 2.0, L.shape[1])
    _, vectors = np.linalg.eigh(null.T @ (weights[:, None] * null))
    basis = null @ vectors
    largest = np.abs(basis).argmax(axis=0)
    return np.ascontiguousarray(basis * np.sign(basis[largest, np.arange(basis.shape[1])]))


def expm_affine(X, order=8):
    """exp of (..., 3, 3) matrices with a zero last row: each matrix scaled by its own 2^-s (inf-norm
    at most 1/4), a Taylor polynomial (Horner), then s squarings. Per matrix, so a result does not
    depend on the rest of the batch; differentiable, cheap to backprop through (3x3 products),
    float32-accurate."""
    norm = X.detach().abs().sum(-1).amax(-1)
    squarings = torch.log2(norm / 0.25).ceil().clamp(min=0).nan_to_num(0)  # (...,)
    X = X / (2 ** squarings)[..., None, None]
    identity = torch.eye(3, dtype=X.dtype, device=X.device).expand_as(X)
    out = identity
    for k in range(order, 0, -1):
        out = identity + X @ out / k
    for i in range(int(squarings.max()) if squarings.numel() else 0):
        out = torch.where((squarings > i)[..., None, None], out @ out, out)
    return out


class CPAB(nn.Module):
    """CPAB transforms on a tess_size = (nx, ny) tessellation of [0, 1]^2.

    theta: (N, d) -> velocity_matrices (N, nC, 2, 3); transform(points (N, P, 2), theta) -> (N, P, 2).
    The basis is a non-persistent buffer (it follows .to(device); state dicts do not hold it).
    """

    def __init__(self, tess_size=(4, 4), nsteps=50):
        super().__init__()
        self.nx, self.ny = int(tess_size[0]), int(tess_size[1])
        self.num_cells = 4 * self.nx * self.ny
        self.nsteps = int(nsteps)
        self.register_buffer('basis', torch.tensor(cpab_basis(self.nx, self.ny), dtype=torch.float32),
                             persistent=False)
        self.d = self.basis.shape[1]

    def extra_repr(self):
        return f'tess_size=({self.nx}, {self.ny}), d={self.d}, nsteps={self.nsteps}'

    def identity(self, n, device=None, dtype=torch.float32):
        """theta = 0: the zero field, T = identity. (N, d)"""
        return torch.zeros(n, self.d, device=device, dtype=dtype)

    def velocity_matrices(self, theta):
        """theta (N, d) -> A (N, nC, 2, 3)."""
        return (theta @ self.basis.to(theta.dtype).t()).view(theta.shape[0], self.num_cells, 2, 3)

    def cell_index(self, points):
        """(..., 2) points in (x, y) -> (...) long cell index; points outside use the rectangle they
        face and the triangle their (unclamped) position in it selects."""
        return self._cell_index(points[..., 0], points[..., 1])

    def _cell_index(self, x, y):
        gx, gy = x * self.nx, y * self.ny
        rx, ry = gx.floor().clamp(0, self.nx - 1), gy.floor().clamp(0, self.ny - 1)
        u, v = gx - rx, gy - ry
        d1, d2 = v - u, u + v - 1  # the two diagonals
        triangle = torch.where(d1 < 0, torch.where(d2 < 0, 0, 1), torch.where(d2 > 0, 2, 3))
        return (ry * self.nx + rx).long() * 4 + triangle

    def velocity(self, points, theta):
        """v_theta at points (N, P, 2) -> (N, P, 2)."""
        A = self.velocity_matrices(theta).flatten(0, 1)  # (N nC, 2, 3)
        offset = torch.arange(theta.shape[0], device=theta.device)[:, None] * self.num_cells
        Ac = A[self.cell_index(points) + offset]
        return (Ac[..., :2] @ points.unsqueeze(-1)).squeeze(-1) + Ac[..., 2]

    def step_matrices(self, theta, t=1.0):
        """expm(h A_c) for every cell, h = t / nsteps: (N, nC, 2, 3)."""
        A = self.velocity_matrices(theta) * (t / self.nsteps)
        square = torch.cat([A, A.new_zeros(*A.shape[:2], 1, 3)], dim=2)
        return expm_affine(square)[:, :, :2]

    def transform(self, points, theta, t=1.0):
        """T_theta(points): points (N, P, 2) or (P, 2) shared by all N -> (N, P, 2). Differentiable in
        both arguments (autograd through the steps)."""
        return self.integrate(points, theta, t)[0]

    def integrate(self, points, theta, t=1.0, jacobian=False):
        """-> (T_theta(points) (N, P, 2), dT/dtheta (N, P, 2, d) if jacobian else None).

        The Jacobian is the derivative of the sensitivity equation dS/dt = R_c S + G_c [x; 1] (R_c the
        2x2 part of A_c, G_c cell c's basis fields), integrated per step with the trapezoid rule on
        the variation-of-constants integral: S_K = sum_k h/2 (P_k G_ck [x_k; 1] + P_k+1 G_ck [x_k+1; 1]),
        P_k = R_K-1 ... R_k the 2x2 propagator from step k to the end (O(h^2) from the exact
        derivative of the steps). A backward sweep over the stored steps accumulates the coefficients
        of each cell's 6 entries, and one product with the basis gives J: no (P, d) work per step.
        It serves the Gauss-Newton fit; autograd gives exact gradients of transform()."""
        n = theta.shape[0]
        if points.dim() == 2:
            points = points.unsqueeze(0).expand(n, -1, -1)
        steps = self.step_matrices(theta, t).reshape(n * self.num_cells, 6)  # [r00 r01 t0 r10 r11 t1] per cell
        offset = torch.arange(n, device=theta.device)[:, None] * self.num_cells
        points = points.to(theta.dtype)
        x, y = points[..., 0].contiguous(), points[..., 1].contiguous()  # two (N, P) planes: cheaper steps
        path = []
        for _ in range(self.nsteps):
            cell = self._cell_index(x, y) + offset
            m = steps.index_select(0, cell.view(-1)).view(*cell.shape, 6)
            x_next = m[..., 0] * x + m[..., 1] * y + m[..., 2]
            y_next = m[..., 3] * x + m[..., 4] * y + m[..., 5]
            if jacobian:
                path.append((cell, m.view(*cell.shape, 2, 3)[..., :2], torch.stack([x, y], -1),
                             torch.stack([x_next, y_next], -1)))
            x, y = x_next, y_next
        x = torch.stack([x, y], -1)
        if not jacobian:
            return x, None
        h = t / self.nsteps
        p = x.shape[1]
        propagator = torch.eye(2, dtype=x.dtype, device=x.device).expand(n, p, 2, 2)  # P_K = I
        coefficients = x.new_zeros(n * self.num_cells, p, 2, 2, 3)  # [cell, point, output, row, col]
        points_index = torch.arange(p, device=x.device)
        for cell, R, x_now, x_next in reversed(path):
            earlier = propagator @ R  # P_k
            ones = torch.ones_like(x_now[..., :1])
            coefficient = 0.5 * h * (earlier.unsqueeze(-1) * torch.cat([x_now, ones], -1)[..., None, None, :]
                                     + propagator.unsqueeze(-1) * torch.cat([x_next, ones], -1)[..., None, None, :])
            coefficients.index_put_((cell, points_index.expand_as(cell)), coefficient, accumulate=True)
            propagator = earlier
        coefficients = coefficients.view(n, self.num_cells, p, 2, 6).permute(0, 2, 3, 1, 4).reshape(n, p, 2, -1)
        return x, coefficients @ self.basis.to(x.dtype)


def _residual(cpab, driving, source, theta, jacobian=False):
    moved, J = cpab.integrate(driving, theta, jacobian=jacobian)
    r = (moved - source).flatten(1)  # (N, 2P)
    return r, (None if J is None else J.flatten(1, 2))  # J: (N, 2P, d)


def fit_gauss_newton(cpab, driving, source, theta=None, iterations=10, tolerance=1e-5, damping=1e-3,
                     regularization=0.0, ftol=1e-4):
    """theta (N, d) with T_theta(driving) ~ source; driving, source: (N, P, 2) in [0, 1].

    Minimises |T_theta(driving) - source|^2 + regularization |theta|^2 by damped Gauss-Newton
    (Levenberg-Marquardt) on the whole batch at once:
    delta = -(J^T J + (regularization + lam s) I)^{-1} (J^T r + regularization theta), s the mean of
    diag(J^T J), lam per sample, divided by 10 after a step that lowers the objective, multiplied by
    10 (step refused) otherwise. With regularization 0 and fewer equations than unknowns (5 keypoints,
    d = 58) each step is the minimum-norm update -J^T (J J^T + lam s I)^{-1} r.
    The small Tikhonov term keeps theta, the velocity field, from growing without bound when the
    keypoints cannot be matched exactly (50 keypoints of the global transform), where CPABMM's short
    Adam run stops early by construction. Starts from `theta` if given, else the identity; stops
    after `iterations` steps, or when every sample is done: its RMS point error is below `tolerance`,
    or it has converged (one of its steps was taken and lowered its objective by less than `ftol`,
    relative; 0 = never). A batch runs until its slowest sample is done. -> (theta, RMS point error
    per sample (N,))."""
    n, p = driving.shape[:2]
    eye = torch.eye(cpab.d, dtype=driving.dtype, device=driving.device)
    with torch.no_grad():
        theta = cpab.identity(n, driving.device, driving.dtype) if theta is None else theta.detach().clone()
        r, J = _residual(cpab, driving, source, theta, jacobian=True)
        cost = (r ** 2).sum(1) + regularization * (theta ** 2).sum(1)
        lam = torch.full((n,), damping, dtype=theta.dtype, device=theta.device)

        def rms(residual):
            return ((residual ** 2).sum(1) / p).sqrt()

        converged = torch.zeros(n, dtype=torch.bool, device=theta.device)
        done = rms(r) < tolerance
        for _ in range(iterations):
            if bool(done.all()):
                break
            JtJ = J.transpose(1, 2) @ J
            gradient = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1) + regularization * theta
            damping_scale = lam * JtJ.diagonal(dim1=1, dim2=2).mean(1)  # lam relative to J's scale
            delta = -torch.linalg.solve(JtJ + (regularization + damping_scale)[:, None, None] * eye, gradient)
            r_new, J_new = _residual(cpab, driving, source, theta + delta, jacobian=True)
            cost_new = (r_new ** 2).sum(1) + regularization * ((theta + delta) ** 2).sum(1)
            better = cost_new < cost
            converged |= better & (cost - cost_new <= ftol * cost)
            theta = torch.where(better[:, None], theta + delta, theta)
            r = torch.where(better[:, None], r_new, r)
            J = torch.where(better[:, None, None], J_new, J)
            cost = torch.where(better, cost_new, cost)
            lam = torch.where(better, lam / 10, lam * 10).clamp(1e-6, 1e6)  # (float32: keep J^T J + lam s I solvable)
            done = converged | (rms(r) < tolerance)
    return theta, rms(r)


def fit_adam(cpab, driving, source, steps=100, lr=1e-2):
    """CPABMM's fit, for comparison: Adam (lr 1e-2) on theta from the identity (+1e-6), `steps` steps
    minimising the Frobenius norm of 2 T(driving) - 2 source over the whole batch (its [-1, 1] units).
    Works inside torch.inference_mode too (demo.py, reconstruction). -> (theta, RMS point error per
    sample (N,), in [0, 1] units)."""
    with torch.inference_mode(False), torch.enable_grad():
        driving, source = driving.detach().clone(), source.detach().clone()  # not inference tensors
        theta = torch.full((driving.shape[0], cpab.d), 1e-6, dtype=driving.dtype, device=driving.device,
                           requires_grad=True)
        optimizer = torch.optim.Adam([theta], lr=lr)
        for _ in range(int(steps)):
            optimizer.zero_grad()
            loss = torch.norm(2 * cpab.transform(driving, theta) - 2 * source)
            loss.backward()
            optimizer.step()
        theta = theta.detach()
    with torch.no_grad():
        error = (cpab.transform(driving, theta) - source).pow(2).sum(-1).mean(1).sqrt()
    return theta, error
