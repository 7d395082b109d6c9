"""rank_sweep and CORCONDIA: errors against rank, the core consistency, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DTYPES, TOL, planted_cp, planted_tucker, rel_diff

import jaxtd
from jaxtd._cp_als import _cp_als
from jaxtd._rank import _corcondia, corcondia, rank_sweep

KEY = jax.random.key(0)
SHAPE = (4, 5, 6)
# One set of static fit arguments for every CP fit here, so the tests share compiled loops.
FIT = dict(key=KEY, max_iter=300, tol=1e-10)


def corcondia_reference(x, weights, factors):
    """CORCONDIA in float64 NumPy: the core by the pseudo-inverse of the Kronecker product.

    Factor columns get the same norm ``|w_r|^(1/N)``, the sign of ``w_r`` on mode 0 (the
    N-way toolbox convention). vec(x) = (B_0 ⊗ ... ⊗ B_{N-1}) vec(G) in C order.
    """
    x = np.asarray(x, np.float64)
    weights = np.asarray(weights, np.float64)
    factors = [np.asarray(f, np.float64) for f in factors]
    n, rank = len(factors), weights.shape[0]
    scale = np.abs(weights * np.prod([np.linalg.norm(f, axis=0) for f in factors], axis=0))
    b = [f / np.linalg.norm(f, axis=0) * scale ** (1 / n) for f in factors]
    b[0] = b[0] * np.sign(weights)
    kron = b[0]
    for f in b[1:]:
        kron = np.kron(kron, f)
    core = (np.linalg.pinv(kron) @ x.reshape(-1)).reshape((rank,) * n)
    target = np.zeros((rank,) * n)
    target[(np.arange(rank),) * n] = 1
    return 100 * (1 - np.sum((core - target) ** 2) / rank)


def noisy_planted(shape, rank, dtype, noise=1e-3, seed=0):
    x, model = planted_cp(shape, rank, np.float64, seed)
    e = np.random.default_rng(seed + 1).standard_normal(shape)
    x = np.asarray(x) + noise * np.linalg.norm(x) / np.linalg.norm(e) * e
    return jnp.asarray(x.astype(dtype)), model


@pytest.mark.parametrize("dtype", DTYPES)
def test_cp_sweep_error_falls_and_matches_single_fits(dtype):
    x, _ = planted_cp(SHAPE, 3, dtype)
    sweep = rank_sweep(x, [1, 2, 3], **FIT)
    assert sweep.ranks == (1, 2, 3)
    assert sweep.rel_error.shape == (3,) and sweep.rel_error.dtype == dtype
    assert sweep.n_iter.dtype == jnp.int32 and sweep.converged.dtype == jnp.bool_
    assert sweep.corcondia is None
    errors = np.asarray(sweep.rel_error)
    assert np.all(np.diff(errors) < 0) and errors[-1] < TOL[dtype]["recover"]
    for rank, res, err, n in zip(sweep.ranks, sweep.results, errors, sweep.n_iter):
        alone = jaxtd.cp_als(x, rank, **FIT)  # the same compiled fit: the same numbers
        assert err == float(alone.rel_error) and int(n) == int(alone.n_iter)
        np.testing.assert_array_equal(res.model.factors[0], alone.model.factors[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tucker_sweep_int_and_tuple_ranks(dtype):
    x, _ = planted_tucker(SHAPE, (2, 3, 3), dtype)
    sweep = rank_sweep(x, [1, (2, 3, 3)], model="tucker", max_iter=50, tol=1e-9)
    assert sweep.ranks == ((1, 1, 1), (2, 3, 3))
    errors = np.asarray(sweep.rel_error)
    assert errors[0] > 0.1 and errors[1] < TOL[dtype]["recover"]
    alone = jaxtd.tucker_hooi(x, 1, max_iter=50, tol=1e-9)
    assert errors[0] == float(alone.rel_error)
    if dtype == np.float64:  # the HOSVD takes no key: the sweep leaves it out
        hosvd = rank_sweep(x, [(2, 3, 3)], model="tucker", method="hosvd", key=KEY)
        assert float(hosvd.rel_error[0]) < TOL[dtype]["recover"]


def test_sweep_second_call_does_not_recompile():
    x, _ = planted_cp(SHAPE, 2, np.float64)
    rank_sweep(x, [1, 2], corcondia=True, **FIT)
    before = (_cp_als._cache_size(), _corcondia._cache_size())
    rank_sweep(x * 2, [2, 1], corcondia=True, **{**FIT, "tol": 1e-3})
    assert (_cp_als._cache_size(), _corcondia._cache_size()) == before


@pytest.mark.parametrize("dtype", DTYPES)
def test_corcondia_high_at_true_rank_and_lower_above(dtype):
    x, model = noisy_planted(SHAPE, 2, dtype)
    sweep = rank_sweep(x, [1, 2, 3], corcondia=True, **FIT)
    cc = np.asarray(sweep.corcondia)
    assert sweep.corcondia.dtype == dtype
    assert cc[0] > 99.9 and cc[1] > 99 and cc[2] < 90, cc
    for res, value in zip(sweep.results, cc):  # the sweep's values are corcondia's
        assert abs(value - float(corcondia(x, res.model))) < 1e-3
    exact, model = planted_cp(SHAPE, 3, dtype)
    assert abs(float(corcondia(exact, model)) - 100) < 1e3 * TOL[dtype]["exact"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_corcondia_matches_pinv_reference(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    factors = tuple(rng.standard_normal((n, 2)).astype(dtype) for n in x.shape)
    weights = np.array([2.5, -0.7], dtype)  # a negative weight: its sign goes to mode 0
    model = jaxtd.CPTensor(jnp.asarray(weights), tuple(jnp.asarray(f) for f in factors))
    got = corcondia(x, model)
    want = corcondia_reference(x, weights, factors)
    assert got.dtype == dtype and got.shape == ()
    assert abs(float(got) - want) <= 100 * TOL[dtype]["exact"] * max(1, abs(want))
    # How the scale sits among the factors and weights does not matter.
    moved = jaxtd.CPTensor(
        jnp.ones(2, dtype), (factors[0] * weights[None, :] * 2, factors[1] / 2, factors[2])
    )
    assert abs(float(corcondia(x, moved)) - want) <= 100 * TOL[dtype]["exact"] * max(1, abs(want))
    # 4 modes, and a matrix (2 modes).
    x4 = rng.standard_normal((2, 3, 2, 3))
    f4 = tuple(rng.standard_normal((n, 2)) for n in x4.shape)
    m4 = jaxtd.CPTensor(jnp.array([1.0, 2.0]), tuple(jnp.asarray(f) for f in f4))
    np.testing.assert_allclose(corcondia(x4, m4), corcondia_reference(x4, [1.0, 2.0], f4))
    x2 = rng.standard_normal((4, 5))
    f2 = tuple(rng.standard_normal((n, 3)) for n in x2.shape)
    m2 = jaxtd.CPTensor(jnp.ones(3), tuple(jnp.asarray(f) for f in f2))
    np.testing.assert_allclose(corcondia(x2, m2), corcondia_reference(x2, np.ones(3), f2))


def test_corcondia_zero_component_is_finite():
    x, model = planted_cp((3, 4, 5), 2, np.float64)
    zeroed = model._replace(weights=jnp.array([1.0, 0.0]))
    value = float(corcondia(x, zeroed))
    assert np.isfinite(value)
    assert abs(value - corcondia_reference(x, [1.0, 1e-300], model.factors)) < 1e-8


@pytest.mark.parametrize("dtype", DTYPES)
def test_corcondia_jit_and_vmap(dtype):
    models = [planted_cp((3, 4, 5), 2, dtype, seed=s)[1] for s in range(3)]
    rng = np.random.default_rng(0)
    xs = jnp.stack(
        [
            jaxtd.cp_to_tensor(m) + 0.05 * rng.standard_normal((3, 4, 5)).astype(dtype)
            for m in models
        ]
    )
    loop = np.array([float(corcondia(x, m)) for x, m in zip(xs, models)])
    batched = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *models)
    vmapped = jax.vmap(corcondia)(xs, batched)
    assert vmapped.dtype == dtype and vmapped.shape == (3,)
    assert rel_diff(vmapped, loop) < TOL[dtype]["batched"]
    assert rel_diff(jax.jit(corcondia)(xs[0], models[0]), loop[0]) < TOL[dtype]["batched"]


def test_sweep_bad_input():
    x, model = planted_cp((3, 4, 5), 2, np.float64)
    with pytest.raises(ValueError, match="ranks is empty"):
        rank_sweep(x, [])
    with pytest.raises(TypeError, match="ranks must be a sequence"):
        rank_sweep(x, 2)
    with pytest.raises(ValueError, match=r"ranks\[1\]: rank must be >= 1, got 0"):
        rank_sweep(x, [1, 0])
    with pytest.raises(TypeError, match=r"ranks\[0\]: rank must be an int"):
        rank_sweep(x, [1.5])
    with pytest.raises(ValueError, match=r"ranks\[1\]: Tucker rank \(4, 4, 4\) exceeds"):
        rank_sweep(x, [2, 4], model="tucker")
    with pytest.raises(ValueError, match=r"ranks\[0\]: rank has 2 entries"):
        rank_sweep(x, [(2, 2)], model="tucker")
    with pytest.raises(ValueError, match="model must be one of .* got 'parafac'"):
        rank_sweep(x, [1], model="parafac")
    with pytest.raises(ValueError, match="method must be one of .* got 'hooi'"):
        rank_sweep(x, [1], method="hooi")
    with pytest.raises(ValueError, match='corcondia=True needs model="cp"'):
        rank_sweep(x, [1], model="tucker", corcondia=True)
    with pytest.raises(ValueError, match="corcondia=True is not available with a mask"):
        rank_sweep(x, [1], corcondia=True, mask=np.ones(x.shape, bool))
    with pytest.raises(ValueError, match="x must have at least 2 modes"):
        rank_sweep(np.ones(3), [1])


def test_corcondia_bad_input():
    x, model = planted_cp((3, 4, 5), 2, np.float64)
    with pytest.raises(TypeError, match="cp_model must be a jaxtd.CPTensor, got TuckerTensor"):
        corcondia(x, jaxtd.TuckerTensor(jnp.ones((2, 2, 2)), model.factors))
    with pytest.raises(ValueError, match="cp_model has 2 factors but x has 3 modes"):
        corcondia(x, jaxtd.CPTensor(model.weights, model.factors[:2]))
    with pytest.raises(ValueError, match=r"cp_model shapes do not fit x \(3, 4, 5\)"):
        corcondia(x, jaxtd.CPTensor(model.weights, (model.factors[0].T,) + model.factors[1:]))
    with pytest.raises(ValueError, match=r"got weights \(3,\)"):
        corcondia(x, jaxtd.CPTensor(jnp.ones(3), model.factors))
    with pytest.raises(ValueError, match=r"cp_model shapes do not fit"):
        corcondia(x.transpose(2, 1, 0), model)
    with pytest.raises(TypeError, match="complex"):
        corcondia(x.astype(np.complex64), model)
