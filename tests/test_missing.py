"""Missing data: EM for ALS/HOOI, weighted loss for the gradient fitters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import planted_cp, planted_tucker

import jaxtd
from jaxtd import Status

SHAPE = (10, 11, 12)


@pytest.fixture(scope="module")
def holes():
    """30 % of the entries missing, and NaN written into them (they must be ignored)."""
    return np.random.default_rng(7).random(SHAPE) > 0.3


def held_out_error(dense, x, mask):
    dense, x = np.asarray(dense), np.asarray(x)
    return np.linalg.norm((dense - x)[~mask]) / np.linalg.norm(x[~mask])


@pytest.mark.parametrize("fit", [jaxtd.cp_als, jaxtd.cp_opt], ids=["cp_als", "cp_opt"])
def test_cp_recovers_held_out_entries(fit, holes):
    x, _ = planted_cp(SHAPE, 3, np.float64)
    res = fit(jnp.where(holes, x, jnp.nan), 3, mask=holes, max_iter=500, tol=1e-12)
    assert held_out_error(jaxtd.cp_to_tensor(res.model), x, holes) < 1e-3
    assert float(res.rel_error) < 1e-6 and int(res.status) == Status.SUCCESS


@pytest.mark.parametrize("fit", [jaxtd.tucker_hooi, jaxtd.tucker_opt], ids=["hooi", "tucker_opt"])
def test_tucker_recovers_held_out_entries(fit, holes):
    x, _ = planted_tucker(SHAPE, (2, 3, 2), np.float64)
    res = fit(jnp.where(holes, x, jnp.nan), (2, 3, 2), mask=holes, max_iter=500, tol=1e-12)
    assert held_out_error(jaxtd.tucker_to_tensor(res.model), x, holes) < 1e-3


def test_rel_error_is_over_observed_entries(holes):
    x, _ = planted_cp(SHAPE, 3, np.float64)
    x = x + 0.1 * jax.random.normal(jax.random.key(0), SHAPE, x.dtype)
    res = jaxtd.cp_als(x, 2, mask=holes, max_iter=50)
    dense = np.asarray(jaxtd.cp_to_tensor(res.model))
    xo = np.asarray(x)
    expected = np.linalg.norm((dense - xo)[holes]) / np.linalg.norm(xo[holes])
    np.testing.assert_allclose(res.rel_error, expected, rtol=1e-10)


@pytest.mark.parametrize(
    "fit", [jaxtd.cp_als, jaxtd.tucker_hooi, jaxtd.cp_opt], ids=["als", "hooi", "opt"]
)
def test_all_true_mask_equals_no_mask(fit, aminoacids):
    x = aminoacids.tensor
    full = fit(x, 3, max_iter=30, tol=0.0)
    masked = fit(x, 3, max_iter=30, tol=0.0, mask=np.ones(x.shape, bool))
    np.testing.assert_allclose(masked.rel_error, full.rel_error, rtol=1e-6)
    dense = jaxtd.tucker_to_tensor if fit is jaxtd.tucker_hooi else jaxtd.cp_to_tensor
    np.testing.assert_allclose(
        dense(masked.model), dense(full.model), rtol=1e-5, atol=1e-6 * np.abs(x).max()
    )


def test_nan_in_an_observed_entry_and_an_empty_traced_mask_are_reported(holes):
    x, _ = planted_cp(SHAPE, 3, np.float64)
    bad = np.array(x)
    idx = np.argwhere(holes)[0]
    bad[tuple(idx)] = np.nan
    res = jaxtd.cp_als(bad, 3, mask=holes, max_iter=10)
    assert int(res.status) == Status.NONFINITE_INPUT and not bool(res.converged)
    res = jax.jit(lambda m: jaxtd.cp_als(x, 3, mask=m, max_iter=10))(np.zeros(SHAPE, bool))
    assert int(res.status) == Status.NO_OBSERVED and not bool(res.converged)
    assert "no entry" in Status.describe(res.status)


def test_vmap_over_masks(holes):
    x, _ = planted_cp(SHAPE, 3, np.float64)
    masks = jnp.stack([holes, ~holes | (np.arange(12) < 6)])
    batched = jax.vmap(lambda m: jaxtd.cp_als(x, 3, mask=m, max_iter=20))(masks)
    for b in range(2):
        single = jaxtd.cp_als(x, 3, mask=masks[b], max_iter=20)
        np.testing.assert_allclose(batched.rel_error[b], single.rel_error, rtol=1e-6, atol=1e-12)
