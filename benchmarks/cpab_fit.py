"""CPABMM's keypoint-to-CPAB fit (Adam loop) vs ours (batched Gauss-Newton), in one run.

    python benchmarks/cpab_fit.py [--batch 8] [--size 256] [--repeats 3] [--device cpu|cuda]

One batch as CPABMM's dense motion network sees it at 256x256 (scale_factor 0.25: a 64x64 grid):
K = 10 partial CPABs (5 keypoints each, 4x4 tessellation, d = 58) and one global CPAB (50 keypoints,
6x6, d = 130) per sample. The keypoint pairs are smooth random motions (a random affine motion of
the whole set, another per group of 5, and 1% jitter), seeded. Timed per scheme (median of
--repeats): the fit of all thetas, then the warp of the dense grid by all transforms; and the fit
error, the RMS distance of T(kp_driving) to kp_source in pixels of the --size image. CPABMM's scheme:
Adam, lr 1e-2, 100 steps (150 for the global fit), loss |2T(d) - 2s| over the batch (fit_adam).
Ours: fit_gauss_newton, 10 iterations at most, with CpabDenseMotionNetwork's penalties.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.cpabmm.cpab import CPAB, fit_adam, fit_gauss_newton  # noqa: E402
from modules.cpabmm.dense_motion import GLOBAL_REGULARIZATION, PARTIAL_REGULARIZATION  # noqa: E402


def keypoint_pairs(batch, num_cpab=10, seed=0):
    """(driving, source) (batch, 5 num_cpab, 2) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    driving = torch.rand(batch, num_cpab, 5, 2, generator=g) * 0.7 + 0.15
    def affine(*shape, strength):  # noqa: E306
        return torch.eye(2) + strength * torch.randn(*shape, 2, 2, generator=g), 0.03 * torch.randn(*shape, 1, 2,
                                                                                                   generator=g)
    A, b = affine(batch, 1, strength=0.1)
    a, c = affine(batch, num_cpab, strength=0.05)
    source = (driving - 0.5) @ A.transpose(-1, -2) + 0.5 + b
    centre = source.mean(2, keepdim=True)
    source = (source - centre) @ a.transpose(-1, -2) + centre + c + 0.01 * torch.randn(source.shape, generator=g)
    return driving.view(batch, -1, 2), source.view(batch, -1, 2)


def timed(fn, repeats, device):
    times, result = [], None
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_scheme(name, partial, whole, driving, source, grid, repeats, device):
    bs = driving.shape[0]
    groups_d, groups_s = driving.reshape(-1, 5, 2), source.reshape(-1, 5, 2)
    if name == 'adam':
        fit = lambda: (fit_adam(partial, groups_d, groups_s, steps=100),  # noqa: E731
                       fit_adam(whole, driving, source, steps=150))
    else:
        fit = lambda: (fit_gauss_newton(partial, groups_d, groups_s, regularization=PARTIAL_REGULARIZATION),  # noqa: E731
                       fit_gauss_newton(whole, driving, source, regularization=GLOBAL_REGULARIZATION))
    fit_s, ((theta_p, error_p), (theta_g, error_g)) = timed(fit, repeats, device)
    with torch.no_grad():
        warp_s, _ = timed(lambda: (partial.transform(grid, theta_p), whole.transform(grid, theta_g)), repeats, device)
    return {'fit_s': fit_s, 'warp_s': warp_s, 'partial_px': error_p, 'global_px': error_g, 'transforms': bs * 11}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=256, help='image size; the grid is size / 4')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    opt = parser.parse_args(argv)
    device = torch.device(opt.device)
    driving, source = (t.to(device) for t in keypoint_pairs(opt.batch))
    n = opt.size // 4
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing='xy'), -1)
    grid = grid.view(-1, 2).to(device)
    partial, whole = CPAB((4, 4)).to(device), CPAB((6, 6)).to(device)
    print(f'batch {opt.batch} at {opt.size}x{opt.size} ({n}x{n} grid), {opt.batch * 11} CPAB transforms, '
          f'{device}, torch threads {torch.get_num_threads()}, median of {opt.repeats}')
    results = {name: run_scheme(name, partial, whole, driving, source, grid, opt.repeats, device)
               for name in ('adam', 'gauss_newton')}
    print('| scheme | fit (s) | warp (s) | fit + warp (s) | partial fit error (px, mean / max) | '
          'global fit error (px, mean / max) |')
    print('|---|---|---|---|---|---|')
    for name, r in results.items():
        label = {'adam': "CPABMM's Adam (100 / 150 steps)", 'gauss_newton': 'ours: batched Gauss-Newton'}[name]
        px = lambda e: f'{e.mean() * opt.size:.4f} / {e.max() * opt.size:.4f}'  # noqa: E731
        print(f"| {label} | {r['fit_s']:.3f} | {r['warp_s']:.3f} | {r['fit_s'] + r['warp_s']:.3f} | "
              f"{px(r['partial_px'])} | {px(r['global_px'])} |")
    adam, ours = results['adam'], results['gauss_newton']
    print(f"speed-up of fit + warp: {(adam['fit_s'] + adam['warp_s']) / (ours['fit_s'] + ours['warp_s']):.1f}x; "
          f"mean fit error ours / Adam: partial {ours['partial_px'].mean() / adam['partial_px'].mean():.2g}, "
          f"global {ours['global_px'].mean() / adam['global_px'].mean():.2g}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
