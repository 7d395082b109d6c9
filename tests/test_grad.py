"""Gradients through fits, implicit (default) and unrolled, against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import planted_cp, rel_diff

import jaxtd

SHAPE, RANK = (5, 4, 3), 2
FD_STEP = 1e-4  # central differences: truncation ~1e-8, fit noise ~1e-13 / step
GRAD_TOL = 1e-4  # the contract: relative error below 1e-4 in float64


def noisy_planted(seed=0, dtype=np.float64):
    """A well-conditioned rank-2 problem plus noise, so the optimum is isolated."""
    x, _ = planted_cp(SHAPE, RANK, dtype, seed=seed)
    noise = np.random.default_rng(seed + 1).standard_normal(SHAPE).astype(dtype)
    return x + 0.05 * jnp.asarray(noise)


def dense(model):
    if isinstance(model, jaxtd.CPTensor):
        return jaxtd.cp_to_tensor(model)
    return jaxtd.tucker_to_tensor(model)


def of_reconstruction(fit, **kwargs):
    """A scalar function of the fitted reconstruction (gauge-invariant)."""
    probe = jnp.asarray(np.random.default_rng(7).standard_normal(SHAPE))

    def f(x):
        m = dense(fit(x, RANK, **kwargs).model)
        return jnp.vdot(m, probe.astype(x.dtype)) + 0.5 * jnp.vdot(m, m)

    return f


def directional_fd(f, x, direction):
    return (f(x + FD_STEP * direction) - f(x - FD_STEP * direction)) / (2 * FD_STEP)


def check_against_fd(f, x, n_directions=2, seed=3):
    f = jax.jit(f)
    g = jax.jit(jax.grad(f))(x)
    assert bool(jnp.all(jnp.isfinite(g)))
    rng = np.random.default_rng(seed)
    for _ in range(n_directions):
        d = jnp.asarray(rng.standard_normal(x.shape))
        fd = directional_fd(f, x, d)
        assert abs(float(jnp.vdot(g, d) - fd)) <= GRAD_TOL * abs(float(fd)), (jnp.vdot(g, d), fd)
    return g


# Run to the cap: a tiny tol can stop early, where two errors round to the same value
# (the error identity resolves ~1e-8 in float64) or on one tiny L-BFGS step, while the
# parameters are still moving; the implicit gradient is exact at the optimum only.
CONVERGED = dict(max_iter=400, tol=0.0)
CONVERGED_OPT = dict(max_iter=300, tol=0.0)

FITTERS = {
    "cp_als": (jaxtd.cp_als, CONVERGED),
    "cp_opt": (jaxtd.cp_opt, CONVERGED_OPT),
    "tucker_hooi": (jaxtd.tucker_hooi, CONVERGED),
    "tucker_opt": (jaxtd.tucker_opt, CONVERGED_OPT),
    "hosvd": (jaxtd.hosvd, {}),  # no loop: differentiated directly, through eigh
    "cp_als_nonnegative": (jaxtd.cp_als, dict(CONVERGED, nonnegative=True)),
    "cp_als_unroll": (jaxtd.cp_als, dict(max_iter=150, tol=0.0, diff="unroll")),
    "tucker_hooi_unroll": (jaxtd.tucker_hooi, dict(max_iter=60, tol=0.0, diff="unroll")),
}


@pytest.mark.parametrize("name", FITTERS)
def test_grad_matches_finite_differences(name):
    fit, kwargs = FITTERS[name]
    x = noisy_planted()
    if "nonnegative" in name:
        x = jnp.abs(x)
    check_against_fd(of_reconstruction(fit, **kwargs), x)


def test_implicit_and_unrolled_gradients_agree():
    x = noisy_planted(seed=4)
    implicit = jax.grad(of_reconstruction(jaxtd.cp_als, **CONVERGED))(x)
    unrolled = jax.grad(of_reconstruction(jaxtd.cp_als, max_iter=150, tol=0.0, diff="unroll"))(x)
    assert rel_diff(implicit, unrolled) < 1e-6


def test_grad_of_cp_factors_matches_finite_differences():
    # The model is normalised (unit columns, weights): scaling is fixed, so the
    # factors themselves are differentiable functions of x, not only the reconstruction.
    probe = jnp.asarray(np.random.default_rng(8).standard_normal((SHAPE[0], RANK)))

    def f(x):
        m = jaxtd.cp_als(x, RANK, **CONVERGED).model
        return jnp.vdot(m.factors[0], probe) + jnp.sum(m.weights)

    check_against_fd(f, noisy_planted(seed=5))


def test_grad_with_mask_matches_finite_differences_and_ignores_missing():
    x = noisy_planted(seed=6)
    mask = jnp.asarray(np.random.default_rng(9).random(SHAPE) > 0.2)
    x = jnp.where(mask, x, jnp.nan)  # unobserved values must not matter
    f = of_reconstruction(jaxtd.cp_als, mask=mask, **CONVERGED)
    g = jax.jit(jax.grad(f))(x)
    assert bool(jnp.all(jnp.where(mask, jnp.isfinite(g), g == 0)))
    d = jnp.where(mask, jnp.asarray(np.random.default_rng(10).standard_normal(SHAPE)), 0)
    fd = directional_fd(jax.jit(f), x, d)
    assert abs(float(jnp.vdot(jnp.where(mask, g, 0), d) - fd)) <= GRAD_TOL * abs(float(fd))


def test_gauge_dependent_tucker_factor_gradient_is_finite():
    # Tucker factors are defined up to rotation; their gradient must still be finite.
    def f(x):
        return jnp.sum(jaxtd.tucker_hooi(x, RANK, **CONVERGED).model.factors[0] ** 3)

    assert bool(jnp.all(jnp.isfinite(jax.grad(f)(noisy_planted()))))


def test_vmap_of_grad_equals_loop():
    xs = jnp.stack([noisy_planted(seed=s) for s in (11, 12, 13)])
    grad_f = jax.jit(jax.grad(of_reconstruction(jaxtd.cp_als, **CONVERGED)))
    batched = jax.vmap(grad_f)(xs)
    for b, x in zip(batched, xs):
        assert rel_diff(b, grad_f(x)) < 1e-6


def test_float32_gradient_close_to_float64():
    # The implicit gradient is exact at the optimum only: fit to the cap in float32.
    x64 = noisy_planted()
    g32 = jax.grad(of_reconstruction(jaxtd.cp_als, max_iter=200, tol=0.0))(x64.astype(jnp.float32))
    assert g32.dtype == jnp.float32
    assert rel_diff(g32, jax.grad(of_reconstruction(jaxtd.cp_als, **CONVERGED))(x64)) < 1e-3


def test_unknown_diff_mode_raises():
    with pytest.raises(ValueError, match="diff"):
        jaxtd.cp_als(noisy_planted(), RANK, diff="backprop")
