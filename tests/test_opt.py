"""cp_opt and tucker_opt: the loss identity, recovery, agreement with ALS, transforms, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DTYPES, TOL, planted_cp, planted_tucker, rel_diff

import jaxtd
from jaxtd import Status


def test_cp_loss_gradient_is_the_closed_form():
    from jaxtd._cp_opt import cp_loss

    x, _ = planted_cp((4, 5, 6), 2, np.float64, seed=3)
    x = x + 0.1 * jax.random.normal(jax.random.key(0), x.shape, x.dtype)
    factors = tuple(
        jax.random.normal(jax.random.key(n + 1), (s, 3), x.dtype) for n, s in enumerate(x.shape)
    )
    norm_x_sq = jnp.vdot(x, x)
    grads = jax.grad(lambda f: cp_loss(x, None, norm_x_sq, f))(factors)
    grams = [f.T @ f for f in factors]
    for n, g in enumerate(grads):
        v = np.prod([grams[m] for m in range(3) if m != n], axis=0)
        closed = (-jaxtd.mttkrp(x, factors, n) + factors[n] @ v) / norm_x_sq
        np.testing.assert_allclose(g, closed, rtol=1e-10, atol=1e-12)
    dense = jaxtd.cp_to_tensor(jaxtd.CPTensor(jnp.ones(3), factors))
    expected = 0.5 * jnp.vdot(x - dense, x - dense) / norm_x_sq
    np.testing.assert_allclose(cp_loss(x, None, norm_x_sq, factors), expected, rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cp_opt_recovers_planted_low_rank(dtype):
    x, _ = planted_cp((6, 7, 8), 3, dtype)
    res = jaxtd.cp_opt(x, 3, max_iter=300, tol=1e-12)
    assert rel_diff(jaxtd.cp_to_tensor(res.model), x) < TOL[dtype]["recover"]
    leaves = jax.tree_util.tree_leaves((res.model, res.rel_error, res.history))
    assert all(leaf.dtype == dtype for leaf in leaves)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tucker_opt_recovers_planted_low_rank(dtype):
    x, _ = planted_tucker((6, 7, 8), (2, 3, 4), dtype)
    res = jaxtd.tucker_opt(
        x, (2, 3, 4), init="random", key=jax.random.key(0), max_iter=500, tol=1e-12
    )
    assert rel_diff(jaxtd.tucker_to_tensor(res.model), x) < TOL[dtype]["recover"]
    assert res.model.core.dtype == dtype


def test_lbfgs_and_adam_reach_the_als_fit_on_aminoacids(aminoacids):
    x = aminoacids.tensor
    als = 1 - float(jaxtd.cp_als(x, 3, max_iter=1000, tol=1e-10).rel_error)
    lbfgs = jaxtd.cp_opt(x, 3, max_iter=1000, tol=1e-10)
    assert abs(1 - float(lbfgs.rel_error) - als) < 1e-3 and bool(lbfgs.converged)
    adam = jaxtd.cp_opt(x, 3, optimizer=optax.adam(0.1), max_iter=1500, tol=1e-10)
    assert abs(1 - float(adam.rel_error) - als) < 0.02
    hooi = 1 - float(jaxtd.tucker_hooi(x, 3, max_iter=200, tol=1e-10).rel_error)
    assert abs(1 - float(jaxtd.tucker_opt(x, 3, max_iter=300).rel_error) - hooi) < 1e-3


def test_opt_vmap_equals_loop_and_no_recompile():
    from jaxtd._cp_opt import _cp_opt

    xs = jnp.stack([planted_cp((6, 7, 8), 3, np.float64, seed=s)[0] for s in range(2)])
    xs = xs + 0.05 * jax.random.normal(jax.random.key(0), xs.shape, xs.dtype)
    batched = jax.vmap(lambda x: jaxtd.cp_opt(x, 3, max_iter=40))(xs)
    before = _cp_opt._cache_size()
    for b, x in enumerate(xs):
        single = jaxtd.cp_opt(x, 3, max_iter=40)
        np.testing.assert_allclose(batched.rel_error[b], single.rel_error, rtol=1e-5)
    after_first = _cp_opt._cache_size()
    jaxtd.cp_opt(xs[0] * 2, 3, max_iter=40, tol=1e-3)  # new data and tol: no recompile
    assert _cp_opt._cache_size() == after_first <= before + 1


@pytest.mark.parametrize("fit", [jaxtd.cp_opt, jaxtd.tucker_opt], ids=["cp_opt", "tucker_opt"])
def test_opt_all_zero_and_non_finite_input(fit):
    res = fit(jnp.zeros((4, 5, 6)), 2, max_iter=20)
    assert float(res.rel_error) == 0.0 and bool(res.converged)
    dense = jaxtd.cp_to_tensor if fit is jaxtd.cp_opt else jaxtd.tucker_to_tensor
    assert np.all(np.asarray(dense(res.model)) == 0)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(res.model))
    bad = np.ones((4, 5, 6))
    bad[0, 0, 0] = np.nan
    res = jax.jit(lambda x: fit(x, 2, max_iter=20))(bad)
    assert not bool(res.converged) and int(res.status) == Status.NONFINITE_INPUT


DIVERGING = optax.sgd(1e6)  # built once: the optimizer is a static argument


def test_divergence_keeps_the_last_finite_iterate(aminoacids):
    res = jaxtd.cp_opt(aminoacids.tensor, 3, optimizer=DIVERGING, max_iter=50)
    n = int(res.n_iter)
    assert int(res.status) == jaxtd.Status.NONFINITE_ITER and not bool(res.converged)
    assert not np.isfinite(res.history[n - 1])  # the failing step is recorded
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in res.model.factors)
    assert float(res.rel_error) == float(res.history[n - 2])  # the error of the model returned
