"""Multi-start: vmap over keys equals a loop over the same starts, and keeps the best."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TOL, planted_cp

import jaxtd


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_start_keeps_the_best_of_a_loop(dtype):
    x, _ = planted_cp((6, 5, 4), 3, dtype, seed=2)
    x = x + jnp.asarray(0.1 * np.random.default_rng(0).standard_normal(x.shape), x.dtype)
    key = jax.random.key(3)
    ms = jaxtd.multi_start(jaxtd.cp_als, x, 3, key=key, n_starts=5, max_iter=30, tol=0.0)
    alone = [
        jaxtd.cp_als(x, 3, init="random", key=k, max_iter=30, tol=0.0)
        for k in jax.random.split(key, 5)
    ]
    errors = np.array([float(r.rel_error) for r in alone])
    np.testing.assert_allclose(ms.rel_error, errors, rtol=TOL[dtype]["batched"] * 10)
    assert int(ms.index) == int(np.argmin(errors))
    assert float(ms.best.rel_error) == pytest.approx(errors.min(), rel=TOL[dtype]["batched"] * 10)
    assert ms.best.model.factors[0].dtype == dtype


def test_multi_start_under_jit_and_for_tucker():
    x, _ = planted_cp((5, 4, 3), 2, np.float64, seed=1)
    run = jax.jit(
        lambda x, k: jaxtd.multi_start(jaxtd.tucker_hooi, x, 2, key=k, n_starts=3).best.rel_error
    )
    assert float(run(x, jax.random.key(0))) < 1e-6


def test_multi_start_bad_input():
    x, _ = planted_cp((4, 4, 4), 2, np.float64)
    with pytest.raises(ValueError, match="n_starts"):
        jaxtd.multi_start(jaxtd.cp_als, x, 2, key=jax.random.key(0), n_starts=0)
    with pytest.raises(ValueError, match="init"):
        jaxtd.multi_start(jaxtd.cp_als, x, 2, key=jax.random.key(0), n_starts=2, init="svd")
    with pytest.raises(ValueError, match="key"):
        jaxtd.multi_start(jaxtd.cp_als, x, 2, key=None, n_starts=2)
