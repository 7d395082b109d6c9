"""hosvd and tucker_hooi: recovery, orthonormality, monotone error, oracle, transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DTYPES, TOL, planted_tucker, rel_diff

import jaxtd
from jaxtd import Status


def assert_orthonormal(factors, tol):
    for f in factors:
        f = np.asarray(f, np.float64)
        np.testing.assert_allclose(f.T @ f, np.eye(f.shape[1]), atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sequential", [False, True], ids=["hosvd", "st_hosvd"])
def test_hosvd_recovers_exact_multilinear_rank(dtype, sequential):
    x, _ = planted_tucker((6, 7, 8), (2, 3, 4), dtype)
    res = jaxtd.hosvd(x, (2, 3, 4), sequential=sequential)
    assert rel_diff(jaxtd.tucker_to_tensor(res.model), x) < TOL[dtype]["recover"]
    assert_orthonormal(res.model.factors, TOL[dtype]["recover"])
    assert res.model.core.dtype == dtype and res.history.shape == (1,)
    assert bool(res.converged) and int(res.status) == Status.SUCCESS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,ranks", [((6, 7, 8), (2, 3, 4)), ((5, 4, 6, 3), (2, 2, 3, 2))], ids=["order3", "order4"]
)
def test_hooi_recovers_planted_from_random_start(shape, ranks, dtype):
    x, _ = planted_tucker(shape, ranks, dtype)
    res = jaxtd.tucker_hooi(x, ranks, init="random", key=jax.random.key(0), max_iter=100, tol=1e-10)
    assert rel_diff(jaxtd.tucker_to_tensor(res.model), x) < TOL[dtype]["recover"]
    assert_orthonormal(res.model.factors, TOL[dtype]["recover"])
    assert res.model.core.dtype == dtype and res.rel_error.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_hooi_history_never_increases_and_beats_hosvd(aminoacids, dtype):
    x = aminoacids.tensor.astype(dtype)
    res = jaxtd.tucker_hooi(
        x, (2, 3, 3), init="random", key=jax.random.key(1), max_iter=30, tol=0.0
    )
    hist = np.asarray(res.history, np.float64)
    assert np.all(np.isfinite(hist)) and np.all(np.diff(hist) <= TOL[dtype]["monotone"])
    hooi = jaxtd.tucker_hooi(x, (2, 3, 3))
    assert (
        float(hooi.rel_error) <= float(jaxtd.hosvd(x, (2, 3, 3)).rel_error) + TOL[dtype]["monotone"]
    )
    dense = rel_diff(jaxtd.tucker_to_tensor(hooi.model), x)
    assert abs(float(hooi.rel_error) - dense) < TOL[dtype]["oracle"] * 10


def test_matches_tensorly_tucker(aminoacids):
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import tucker

    x = aminoacids.tensor
    ref = tucker(x, (3, 3, 3), n_iter_max=200, tol=1e-12, init="svd")
    ref_err = np.linalg.norm(x - tl.tucker_to_tensor(ref)) / np.linalg.norm(x)
    res = jaxtd.tucker_hooi(x, (3, 3, 3), max_iter=200, tol=1e-12)
    assert abs(float(res.rel_error) - ref_err) < TOL[np.float64]["oracle"]
    for ours, theirs in zip(res.model.factors, ref.factors):  # the same subspaces
        s = np.linalg.svd(np.asarray(ours).T @ theirs, compute_uv=False)
        np.testing.assert_allclose(s, 1.0, atol=1e-6)


def test_hooi_vmap_equals_loop_and_works_in_jit():
    xs = jnp.stack([planted_tucker((6, 7, 8), (2, 3, 4), np.float64, seed=s)[0] for s in range(3)])
    xs = xs + 0.05 * jax.random.normal(jax.random.key(0), xs.shape, xs.dtype)
    batched = jax.vmap(lambda x: jaxtd.tucker_hooi(x, (2, 3, 4), max_iter=20))(xs)
    jitted = jax.jit(lambda x: jaxtd.tucker_hooi(x, (2, 3, 4), max_iter=20).rel_error)
    for b, x in enumerate(xs):
        single = jaxtd.tucker_hooi(x, (2, 3, 4), max_iter=20)
        assert int(batched.n_iter[b]) == int(single.n_iter)
        np.testing.assert_allclose(
            batched.rel_error[b], single.rel_error, rtol=TOL[np.float64]["batched"]
        )
        np.testing.assert_allclose(jitted(x), single.rel_error, rtol=TOL[np.float64]["batched"])
        np.testing.assert_allclose(
            batched.model.core[b], single.model.core, rtol=TOL[np.float64]["batched"], atol=1e-9
        )


def test_hooi_second_call_does_not_recompile():
    from jaxtd._tucker_hooi import _tucker_hooi

    x1, _ = planted_tucker((5, 6, 7), (2, 2, 2), np.float32, seed=1)
    x2, _ = planted_tucker((5, 6, 7), (2, 2, 2), np.float32, seed=2)
    jaxtd.tucker_hooi(x1, 2, max_iter=10)
    before = _tucker_hooi._cache_size()
    jaxtd.tucker_hooi(x2, (2, 2, 2), max_iter=10, tol=1e-2)
    assert _tucker_hooi._cache_size() == before


@pytest.mark.parametrize("fit", [jaxtd.hosvd, jaxtd.tucker_hooi], ids=["hosvd", "hooi"])
def test_all_zero_tensor_gives_zero_model(fit):
    res = fit(jnp.zeros((4, 5, 6)), 2)
    assert float(res.rel_error) == 0.0 and bool(res.converged)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(res.model))
    assert np.all(np.asarray(jaxtd.tucker_to_tensor(res.model)) == 0)


@pytest.mark.parametrize("fit", [jaxtd.hosvd, jaxtd.tucker_hooi], ids=["hosvd", "hooi"])
def test_non_finite_input_is_reported_under_jit(fit):
    x = np.array(planted_tucker((6, 7, 8), (2, 3, 4), np.float64)[0])
    x[0, 0, 0] = np.inf
    res = jax.jit(lambda x: fit(x, 2))(x)
    assert not bool(res.converged) and int(res.status) == Status.NONFINITE_INPUT


def test_front_doors_dispatch(aminoacids):
    x = aminoacids.tensor
    np.testing.assert_allclose(
        jaxtd.tucker(x, 3, method="hosvd").rel_error, jaxtd.hosvd(x, 3).rel_error
    )
    np.testing.assert_allclose(jaxtd.tucker(x, 3).rel_error, jaxtd.tucker_hooi(x, 3).rel_error)
    np.testing.assert_allclose(
        jaxtd.cp(x, 2, max_iter=30).rel_error, jaxtd.cp_als(x, 2, max_iter=30).rel_error
    )
    np.testing.assert_allclose(
        jaxtd.cp(x, 2, method="opt", max_iter=30).rel_error,
        jaxtd.cp_opt(x, 2, max_iter=30).rel_error,
    )
    np.testing.assert_allclose(
        jaxtd.tucker(x, 2, method="opt", max_iter=30).rel_error,
        jaxtd.tucker_opt(x, 2, max_iter=30).rel_error,
    )
