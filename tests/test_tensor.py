"""Tensor algebra and model algebra against dense NumPy and TensorLy."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DTYPES, TOL, planted_cp, planted_tucker, rel_diff

import jaxtd
from jaxtd._tensor import leading_left_singular_vectors, leading_mode_vectors, mode_gram

tl = pytest.importorskip("tensorly")

SHAPES = [(4, 5, 6), (3, 4, 2, 5)]


@pytest.fixture(params=SHAPES, ids=["order3", "order4"])
def tensor(request):
    rng = np.random.default_rng(1)
    return rng.standard_normal(request.param)


def test_unfold_matches_tensorly_and_fold_inverts(tensor):
    for n in range(tensor.ndim):
        u = jaxtd.unfold(tensor, n)
        np.testing.assert_array_equal(u, tl.unfold(tensor, n))
        np.testing.assert_array_equal(jaxtd.fold(u, n, tensor.shape), tensor)


def test_mode_dot_and_multi_mode_dot_match_tensorly(tensor):
    rng = np.random.default_rng(2)
    mats = [rng.standard_normal((2 + n, s)) for n, s in enumerate(tensor.shape)]
    for n, m in enumerate(mats):
        np.testing.assert_allclose(
            jaxtd.mode_dot(tensor, m, n), tl.tenalg.mode_dot(tensor, m, n), rtol=1e-12
        )
    np.testing.assert_allclose(
        jaxtd.multi_mode_dot(tensor, mats), tl.tenalg.multi_mode_dot(tensor, mats), rtol=1e-12
    )
    tmats = [m.T for m in mats[1:]]
    np.testing.assert_allclose(
        jaxtd.multi_mode_dot(tensor, tmats, modes=range(1, tensor.ndim), transpose=True),
        tl.tenalg.multi_mode_dot(tensor, mats[1:], modes=list(range(1, tensor.ndim))),
        rtol=1e-12,
    )


def test_khatri_rao_and_mttkrp_match_tensorly(tensor):
    rng = np.random.default_rng(3)
    factors = [rng.standard_normal((s, 3)) for s in tensor.shape]
    np.testing.assert_allclose(jaxtd.khatri_rao(factors), tl.tenalg.khatri_rao(factors), rtol=1e-12)
    for n in range(tensor.ndim):
        expected = tl.unfold(tensor, n) @ tl.tenalg.khatri_rao(factors, skip_matrix=n)
        np.testing.assert_allclose(
            jaxtd.mttkrp(tensor, factors, n), expected, rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_cp_to_tensor_norms_and_inner_products(dtype):
    x, model = planted_cp((4, 5, 6), 3, dtype)
    expected = tl.cp_to_tensor((np.asarray(model.weights), [np.asarray(f) for f in model.factors]))
    assert x.dtype == dtype
    assert rel_diff(x, expected) < TOL[dtype]["exact"]
    dense = np.asarray(x, np.float64)
    assert abs(float(jaxtd.cp_norm(model)) / np.linalg.norm(dense) - 1) < TOL[dtype]["exact"]
    _, other = planted_cp((4, 5, 6), 2, dtype, seed=5)
    other_dense = np.asarray(jaxtd.cp_to_tensor(other), np.float64)
    scale = np.linalg.norm(dense) * np.linalg.norm(other_dense)
    assert (
        abs(float(jaxtd.cp_inner(x, other)) - np.vdot(dense, other_dense)) / scale
        < TOL[dtype]["exact"]
    )
    assert (
        abs(float(jaxtd.cp_inner(model, other)) - np.vdot(dense, other_dense)) / scale
        < TOL[dtype]["exact"]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_tucker_to_tensor_norms_and_inner_products(dtype):
    x, model = planted_tucker((4, 5, 6), (2, 3, 2), dtype)
    expected = tl.tucker_to_tensor((np.asarray(model.core), [np.asarray(f) for f in model.factors]))
    assert rel_diff(x, expected) < TOL[dtype]["exact"]
    # Non-orthonormal factors: the norm must not assume orthonormality.
    skewed = jaxtd.TuckerTensor(model.core, tuple(f * 2 + 0.5 for f in model.factors))
    dense = np.asarray(jaxtd.tucker_to_tensor(skewed), np.float64)
    assert abs(float(jaxtd.tucker_norm(skewed)) / np.linalg.norm(dense) - 1) < TOL[dtype]["exact"]
    scale = np.linalg.norm(dense) * np.linalg.norm(np.asarray(x, np.float64))
    assert (
        abs(float(jaxtd.tucker_inner(x, skewed)) - np.vdot(np.asarray(x, np.float64), dense))
        / scale
        < TOL[dtype]["exact"]
    )
    assert (
        abs(float(jaxtd.tucker_inner(model, skewed)) - np.vdot(np.asarray(x, np.float64), dense))
        / scale
        < TOL[dtype]["exact"]
    )


def test_cp_normalize_keeps_the_tensor_and_handles_zero_columns():
    _, model = planted_cp((4, 5, 6), 3, np.float64)
    zeroed = jaxtd.CPTensor(
        model.weights, (model.factors[0].at[:, 1].set(0.0),) + model.factors[1:]
    )
    normed = jaxtd.cp_normalize(zeroed)
    assert isinstance(normed.factors, tuple)
    norms = np.linalg.norm(np.asarray(normed.factors[1]), axis=0)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-12)
    assert normed.weights[1] == 0 and np.all(np.isfinite(np.asarray(normed.factors[0])))
    np.testing.assert_allclose(jaxtd.cp_to_tensor(normed), jaxtd.cp_to_tensor(zeroed), atol=1e-12)


def test_leading_singular_vectors_agree_with_svd_on_both_sides():
    from jaxtd._tensor import leading_left_singular_vectors

    rng = np.random.default_rng(4)
    for shape in [(5, 30), (30, 5)]:
        m = rng.standard_normal(shape)
        u = np.asarray(leading_left_singular_vectors(jnp.asarray(m), 3))
        ref = np.linalg.svd(m, full_matrices=False)[0][:, :3]
        np.testing.assert_allclose(
            np.abs(u.T @ ref), np.eye(3), atol=1e-10
        )  # same vectors up to sign
        assert np.all(u[np.argmax(np.abs(u), axis=0), range(3)] > 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 3, 6])
def test_spd_solve_small_matches_solve_under_vmap_and_is_finite_when_singular(dtype, rank):
    import jax

    from jaxtd._tensor import spd_solve_small

    rng = np.random.default_rng(rank)
    a = rng.standard_normal((16, rank, rank)).astype(dtype)
    v = a @ a.transpose(0, 2, 1) + np.eye(rank, dtype=dtype)  # SPD, well conditioned
    b = rng.standard_normal((16, rank, 4)).astype(dtype)
    got = jax.vmap(spd_solve_small)(jnp.asarray(v), jnp.asarray(b))
    assert got.dtype == dtype
    ref = np.linalg.solve(v.astype(np.float64), b.astype(np.float64))
    assert rel_diff(got, ref) < 100 * TOL[dtype]["exact"]
    # Singular: all zero (-> 0, as the pseudo-inverse), a zero row/column, rank one.
    u = rng.standard_normal((rank, 1)).astype(dtype)
    singular = np.stack([np.zeros((rank, rank), dtype), v[0], u @ u.T])
    singular[1, 0, :] = singular[1, :, 0] = 0
    rhs = np.stack([b[0], b[1], u @ rng.standard_normal((1, 4)).astype(dtype)])
    rhs[1, 0] = 0  # the normal equations' right side lies in the range of V
    out = np.asarray(jax.vmap(spd_solve_small)(jnp.asarray(singular), jnp.asarray(rhs)))
    assert np.all(np.isfinite(out)) and np.all(out[0] == 0)
    np.testing.assert_allclose(  # the others solve V X = B (right sides in range)
        np.einsum("bij,bjk->bik", singular[1:], out[1:]),
        rhs[1:],
        atol=100 * TOL[dtype]["exact"] * np.abs(rhs).max(),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_unrolled_contractions_match_the_gemm_path(dtype, monkeypatch):
    from jaxtd import _tensor

    rng = np.random.default_rng(2)
    for shape in [(10, 10, 10), (3, 4, 2, 5)]:
        x = jnp.asarray(rng.standard_normal(shape).astype(dtype))
        fs = [jnp.asarray(rng.standard_normal((n, 3)).astype(dtype)) for n in shape]
        unrolled = [_tensor.mttkrp(x, fs, n) for n in range(len(shape))]
        with monkeypatch.context() as m:
            m.setattr(_tensor, "UNROLL_MAX_SIZE", 0)
            gemm = [_tensor.mttkrp(x, fs, n) for n in range(len(shape))]
        for u, g in zip(unrolled, gemm):
            assert u.dtype == dtype and rel_diff(u, g) < TOL[dtype]["exact"]
    # the short-factor reductions of a sweep: Gram matrices and column sums
    f = jnp.asarray(rng.standard_normal((10, 3)).astype(dtype))
    for got, want in [(_tensor.factor_gram(f), f.T @ f), (_tensor.sum_rows(f), f.sum(0))]:
        assert got.dtype == dtype and rel_diff(got, want) < TOL[dtype]["exact"]
    tall = jnp.asarray(rng.standard_normal((40, 3)).astype(dtype))  # past UNROLL_MAX_LEN
    assert rel_diff(_tensor.factor_gram(tall), tall.T @ tall) < TOL[dtype]["exact"]


@pytest.mark.parametrize("shape", [(4, 5, 6), (3, 4, 5, 2), (7, 2), (5, 30, 40)])
def test_mode_gram_and_leading_vectors_read_x_in_place(shape):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape))
    for n in range(len(shape)):
        u = jaxtd.unfold(x, n)
        np.testing.assert_allclose(mode_gram(x, n), u @ u.T, rtol=1e-12, atol=1e-12)
        k = min(2, shape[n])
        np.testing.assert_allclose(
            leading_mode_vectors(x, n, k), leading_left_singular_vectors(u, k), atol=1e-10
        )
