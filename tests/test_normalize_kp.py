"""animate.normalize_kp against the original's outputs (fixture-small), every flag combination."""
import itertools

import numpy as np
import pytest
import torch

from toolkit.animation import adapt_movement_scale_factor, convex_hull_area, normalize_kp
from tests.conftest import assert_close

T = 4


def kp_of(ref, prefix):
    return {'value': ref[prefix + '/value'], 'jacobian': ref[prefix + '/jacobian']}


@pytest.mark.parametrize('ams,urm,urj', list(itertools.product([0, 1], repeat=3)))
def test_matches_original(ref, ams, urm, urj):
    for t in range(T):
        out = normalize_kp(kp_source=kp_of(ref, 'kp_source'), kp_driving=kp_of(ref, f'kp_driving/{t}'),
                           kp_driving_initial=kp_of(ref, 'kp_driving/0'), adapt_movement_scale=bool(ams),
                           use_relative_movement=bool(urm), use_relative_jacobian=bool(urj))
        for name in ('value', 'jacobian'):
            assert_close(out[name], ref[f'normalize_kp/ams{ams}_urm{urm}_urj{urj}/{t}/{name}'], f't={t} {name}')


def test_adapt_scale_factor_matches_scipy_convex_hull(ref):
    factor = adapt_movement_scale_factor(kp_of(ref, 'kp_source'), kp_of(ref, 'kp_driving/0'))
    assert factor == pytest.approx(ref['normalize_kp/adapt_movement_scale_factor'].item(), rel=1e-12)


def test_convex_hull_area():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [1, 1], [0.5, 1.5]])
    assert convex_hull_area(square) == pytest.approx(4.0)
    assert convex_hull_area(np.array([[0, 0], [1, 1], [2, 2]])) == 0.0  # collinear
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 2))
    angles = np.linspace(0, 2 * np.pi, 13)[:-1]
    circle = np.stack([np.cos(angles), np.sin(angles)], 1) * 10
    assert convex_hull_area(np.concatenate([pts, circle])) == pytest.approx(0.5 * 12 * 100 * np.sin(2 * np.pi / 12))


def test_jacobian_free_model_does_not_crash_with_relative_jacobian(ref):
    kp_source = {'value': ref['kp_source/value']}
    out = normalize_kp(kp_source, {'value': ref['kp_driving/2/value']}, {'value': ref['kp_driving/0/value']},
                       use_relative_movement=True, use_relative_jacobian=True)
    assert set(out) == {'value'}
    expected = ref['kp_driving/2/value'] - ref['kp_driving/0/value'] + ref['kp_source/value']
    assert torch.equal(out['value'], expected)
