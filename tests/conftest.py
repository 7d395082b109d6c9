"""Test configuration: float64 available, strict promotion, shared tolerances and data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# x64 on so that both float32 and float64 are tested; strict promotion catches silent
# upcasts (float32 in must stay float32), and rank promotion catches broadcasting slips.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import jaxtd  # noqa: E402

DTYPES = (np.float32, np.float64)

# Tolerances, stated once. `exact`: algebra that is exact up to rounding. `recover`:
# dense ‖x − model‖/‖x‖ after fitting an exactly low-rank tensor. `oracle`: difference in
# rel_error against TensorLy at the same init. `monotone`: slack for a history that must
# not increase (the error identity cancels, so float32 resolves errors to ~1e-3 only).
# `batched`: relative difference between a vmapped or jitted fit and the same fit alone
# (batched linear algebra rounds differently, and iterations carry that along).
TOL = {
    np.float32: dict(exact=2e-5, recover=2e-3, oracle=1e-4, monotone=1e-4, batched=1e-4),
    np.float64: dict(exact=1e-12, recover=1e-6, oracle=1e-8, monotone=1e-10, batched=1e-7),
}


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def planted_cp(shape, rank, dtype, seed=0):
    """An exactly rank-`rank` tensor with well-conditioned random factors, and its model."""
    rng = np.random.default_rng(seed)
    factors = tuple(rng.standard_normal((n, rank)).astype(dtype) for n in shape)
    weights = np.linspace(1.0, 2.0, rank).astype(dtype)
    model = jaxtd.CPTensor(jnp.asarray(weights), tuple(jnp.asarray(f) for f in factors))
    return jaxtd.cp_to_tensor(model), model


def planted_tucker(shape, ranks, dtype, seed=0):
    """An exactly multilinear-rank-`ranks` tensor and its model."""
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(ranks).astype(dtype)
    factors = tuple(
        np.linalg.qr(rng.standard_normal((n, r)))[0].astype(dtype) for n, r in zip(shape, ranks)
    )
    model = jaxtd.TuckerTensor(jnp.asarray(core), tuple(jnp.asarray(f) for f in factors))
    return jaxtd.tucker_to_tensor(model), model


@pytest.fixture(scope="session")
def aminoacids():
    return jaxtd.datasets.load_aminoacids()
