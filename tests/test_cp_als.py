"""cp_als: recovery, monotone error, oracle agreement, real data, transforms, dtypes, edge cases."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DTYPES, TOL, planted_cp, rel_diff

import jaxtd
from jaxtd import Status


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,rank", [((6, 7, 8), 3), ((5, 4, 6, 3), 2)], ids=["order3", "order4"]
)
def test_recovers_planted_low_rank(shape, rank, dtype):
    x, _ = planted_cp(shape, rank, dtype)
    res = jaxtd.cp_als(x, rank, max_iter=200, tol=1e-10)
    dense_err = rel_diff(jaxtd.cp_to_tensor(res.model), x)
    assert dense_err < TOL[dtype]["recover"]
    assert res.model.weights.dtype == dtype and res.rel_error.dtype == dtype
    assert abs(float(res.rel_error) - dense_err) < TOL[dtype]["recover"]
    assert int(res.status) in (Status.SUCCESS, Status.MAX_ITER)


@pytest.mark.parametrize("dtype", DTYPES)
def test_history_never_increases(aminoacids, dtype):
    res = jaxtd.cp_als(aminoacids.tensor.astype(dtype), 3, max_iter=60, tol=0.0)
    hist = np.asarray(res.history, np.float64)
    assert int(res.n_iter) == 60 and int(res.status) == Status.MAX_ITER and not res.converged
    assert np.all(np.isfinite(hist))
    assert np.all(np.diff(hist) <= TOL[dtype]["monotone"])


def test_history_is_nan_after_n_iter_and_result_matches_last_entry(aminoacids):
    res = jaxtd.cp_als(aminoacids.tensor, 2, max_iter=500, tol=1e-6)
    n = int(res.n_iter)
    assert res.converged and int(res.status) == Status.SUCCESS and 2 <= n < 500
    assert res.history.shape == (500,)
    assert np.all(np.isfinite(res.history[:n])) and np.all(np.isnan(res.history[n:]))
    assert res.history[n - 1] == res.rel_error
    assert abs(float(res.history[n - 1] - res.history[n - 2])) < 1e-6


def test_matches_tensorly_parafac(aminoacids):
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac

    x = aminoacids.tensor / np.abs(aminoacids.tensor).max()
    ref = parafac(x, 3, n_iter_max=1000, tol=1e-12, init="svd")
    ref_dense = tl.cp_to_tensor(ref)
    res = jaxtd.cp_als(x, 3, max_iter=1000, tol=1e-12)
    ours = np.asarray(jaxtd.cp_to_tensor(res.model))
    ref_err = np.linalg.norm(x - ref_dense) / np.linalg.norm(x)
    assert abs(float(res.rel_error) - ref_err) < TOL[np.float64]["oracle"]
    assert rel_diff(ours, ref_dense) < 1e-5  # the same model, not only the same error


def test_aminoacids_rank3_fit_and_concentrations(aminoacids):
    res = jaxtd.cp_als(aminoacids.tensor, 3, max_iter=500, tol=1e-9)
    fit = 1 - float(res.rel_error)
    assert 0.974 < fit < 0.976
    corr = np.corrcoef(np.asarray(res.model.factors[0]).T, aminoacids.concentrations.T)[:3, 3:]
    best = max(
        itertools.permutations(range(3)), key=lambda p: sum(abs(corr[p[k], k]) for k in range(3))
    )
    assert all(abs(corr[best[k], k]) > 0.99 for k in range(3))


def test_known_fits_at_ranks_1_and_2(aminoacids):
    fits = [
        1 - float(jaxtd.cp_als(aminoacids.tensor, r, max_iter=500, tol=1e-9).rel_error)
        for r in (1, 2)
    ]
    np.testing.assert_allclose(fits, [0.403, 0.636], atol=1e-3)


def test_inside_a_callers_jit_equals_eager():
    x, _ = planted_cp((6, 7, 8), 3, np.float64)

    @jax.jit
    def loss(x):
        return jaxtd.cp_als(x, 3, max_iter=50).rel_error * 2

    np.testing.assert_allclose(
        loss(x), 2 * jaxtd.cp_als(x, 3, max_iter=50).rel_error, rtol=TOL[np.float64]["batched"]
    )


def test_vmap_equals_python_loop():
    xs = jnp.stack([planted_cp((6, 7, 8), 3, np.float64, seed=s)[0] for s in range(3)])
    xs = xs + 0.01 * jax.random.normal(jax.random.key(0), xs.shape, xs.dtype)
    batched = jax.vmap(lambda x: jaxtd.cp_als(x, 3, max_iter=50))(xs)
    for b, x in enumerate(xs):
        single = jaxtd.cp_als(x, 3, max_iter=50)
        assert int(batched.n_iter[b]) == int(single.n_iter)
        np.testing.assert_allclose(
            batched.rel_error[b], single.rel_error, rtol=TOL[np.float64]["batched"]
        )
        for fb, fs in zip(batched.model.factors, single.model.factors):
            np.testing.assert_allclose(fb[b], fs, rtol=TOL[np.float64]["batched"], atol=1e-9)


def test_vmap_over_keys_with_random_init():
    x, _ = planted_cp((6, 7, 8), 3, np.float64)
    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.vmap(lambda k: jaxtd.cp_als(x, 3, init="random", key=k, max_iter=50))(keys)
    single = jaxtd.cp_als(x, 3, init="random", key=keys[1], max_iter=50)
    np.testing.assert_allclose(
        batched.rel_error[1], single.rel_error, rtol=TOL[np.float64]["batched"]
    )


def test_second_call_does_not_recompile():
    from jaxtd._cp_als import _cp_als

    x1, _ = planted_cp((5, 6, 7), 2, np.float32, seed=1)
    x2, _ = planted_cp((5, 6, 7), 2, np.float32, seed=2)
    jaxtd.cp_als(x1, 2, max_iter=30)
    before = _cp_als._cache_size()
    jaxtd.cp_als(x2, 2, max_iter=30, tol=1e-3)  # new data and a new tol reuse the compiled loop
    jaxtd.cp_als(np.asarray(x2), 2, max_iter=30)
    assert _cp_als._cache_size() == before


def test_float32_stays_float32_and_integers_become_default_float():
    x, _ = planted_cp((6, 7, 8), 3, np.float32)
    res = jaxtd.cp_als(x, 3, max_iter=20)
    leaves = jax.tree_util.tree_leaves((res.model, res.rel_error, res.history))
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert (
        res.n_iter.dtype == jnp.int32
        and res.status.dtype == jnp.int32
        and res.converged.dtype == bool
    )
    ints = jaxtd.cp_als(np.arange(60).reshape(3, 4, 5), 2, max_iter=20)
    assert ints.model.weights.dtype == jnp.result_type(float)


def test_all_zero_tensor_gives_zero_model_without_nan():
    res = jaxtd.cp_als(jnp.zeros((4, 5, 6)), 2, max_iter=20)
    assert float(res.rel_error) == 0.0 and bool(res.converged) and int(res.status) == Status.SUCCESS
    assert np.all(np.asarray(jaxtd.cp_to_tensor(res.model)) == 0)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(res.model))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_reported_eagerly_and_under_jit(bad):
    x = np.array(planted_cp((6, 7, 8), 3, np.float64)[0])
    x[1, 2, 3] = bad
    for fit in (
        lambda x: jaxtd.cp_als(x, 3, max_iter=20),
        jax.jit(lambda x: jaxtd.cp_als(x, 3, max_iter=20)),
    ):
        res = fit(x)
        assert not res.converged and int(res.status) == Status.NONFINITE_INPUT
        assert int(res.n_iter) == 0 and np.isnan(res.rel_error)
        assert "NaN or Inf" in Status.describe(res.status)


def test_non_finite_during_iterations_is_reported():
    x, model = planted_cp((6, 7, 8), 3, np.float64)
    bad_init = jaxtd.CPTensor(
        model.weights, (model.factors[0], model.factors[1].at[0, 0].set(jnp.nan), model.factors[2])
    )
    res = jaxtd.cp_als(x, 3, init=bad_init, max_iter=20)
    assert not res.converged and int(res.status) == Status.NONFINITE_ITER and int(res.n_iter) == 1


def test_same_key_same_result_and_user_init_untouched():
    x, _ = planted_cp((6, 7, 8), 3, np.float64)
    a = jaxtd.cp_als(x, 3, init="random", key=jax.random.key(3), max_iter=5)
    b = jaxtd.cp_als(x, 3, init="random", key=jax.random.key(3), max_iter=5)
    c = jaxtd.cp_als(x, 3, init="random", key=jax.random.key(4), max_iter=5)
    np.testing.assert_array_equal(a.model.factors[0], b.model.factors[0])
    assert not np.allclose(a.model.factors[0], c.model.factors[0])
    init = jaxtd.CPTensor(
        np.ones(3), tuple(np.random.default_rng(0).random((n, 3)) for n in (6, 7, 8))
    )
    copy = jax.tree_util.tree_map(np.copy, init)
    jaxtd.cp_als(x, 3, init=init, max_iter=5)
    for got, kept in zip(jax.tree_util.tree_leaves(init), jax.tree_util.tree_leaves(copy)):
        np.testing.assert_array_equal(got, kept)


def test_rank_above_a_mode_size_uses_the_key():
    x, _ = planted_cp((3, 7, 8), 2, np.float64)
    res = jaxtd.cp_als(x, 5, key=jax.random.key(0), max_iter=30)
    assert res.model.factors[0].shape == (3, 5) and np.isfinite(res.rel_error)
    with pytest.raises(ValueError, match="key"):
        jaxtd.cp_als(x, 5)


def test_nonnegative_hals_factors_are_nonnegative_and_error_falls(aminoacids):
    res = jaxtd.cp_als(aminoacids.tensor, 3, nonnegative=True, max_iter=300, tol=1e-9)
    assert (
        all(float(f.min()) >= 0 for f in res.model.factors) and float(res.model.weights.min()) >= 0
    )
    hist = np.asarray(res.history[: int(res.n_iter)])
    assert np.all(np.diff(hist) <= TOL[np.float64]["monotone"])
    assert 1 - float(res.rel_error) > 0.97  # the spectra are nonnegative, so little is lost


def test_nonnegative_recovers_planted_and_starts_from_abs_of_a_user_init():
    rng = np.random.default_rng(0)
    factors = tuple(np.abs(rng.standard_normal((n, 3))) for n in (8, 9, 10))
    x = jaxtd.cp_to_tensor(jaxtd.CPTensor(np.ones(3), factors))
    res = jaxtd.cp_als(x, 3, nonnegative=True, max_iter=2000, tol=1e-12)
    assert rel_diff(jaxtd.cp_to_tensor(res.model), x) < 1e-5
    negative = jaxtd.CPTensor(np.ones(3), tuple(-f for f in factors))
    from_neg = jaxtd.cp_als(x, 3, init=negative, nonnegative=True, max_iter=5)
    from_abs = jaxtd.cp_als(
        x, 3, init=jaxtd.CPTensor(np.ones(3), factors), nonnegative=True, max_iter=5
    )
    np.testing.assert_allclose(from_neg.rel_error, from_abs.rel_error, rtol=1e-12)
    assert all(float(f.min()) >= 0 for f in from_neg.model.factors)


def test_memory_stays_near_the_tensor_for_a_conv_kernel():
    # HWIO kernel with two tiny modes: contracting one 3-mode first would make a
    # (R, 3, C, C) intermediate (R/3 times the kernel); the sweep must avoid it.
    kernel = jnp.asarray(np.random.default_rng(0).standard_normal((3, 3, 64, 64)), jnp.float32)
    compiled = (
        jax.jit(lambda k, key: jaxtd.cp_als(k, 32, key=key, max_iter=2).rel_error)
        .lower(kernel, jax.random.key(0))
        .compile()
    )
    assert compiled.memory_analysis().temp_size_in_bytes < 4 * kernel.nbytes
