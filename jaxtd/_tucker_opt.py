"""Tucker decomposition by gradient descent with any optax optimizer."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from jaxtd import _validate
from jaxtd._implicit import loop_input, tucker_at_optimum
from jaxtd._init import initial_tucker_factors, tucker_init_spec
from jaxtd._loop import minimize
from jaxtd._models import TuckerTensor, tucker_inner, tucker_norm_sq, tucker_to_tensor
from jaxtd._result import FitResult, input_status
from jaxtd._tensor import multi_mode_dot


def tucker_opt(
    x,
    rank,
    *,
    init="svd",
    key: Array | None = None,
    optimizer=None,
    max_iter: int = 500,
    tol: float = 1e-7,
    mask=None,
    progress=None,
    diff: str = "implicit",
) -> FitResult:
    r"""Fit a Tucker model (core and factors together) by gradient descent with optax.

    .. math::
        f(G, U_0, …, U_{N-1}) = \tfrac12 \|W \ast (x − G ×_0 U_0 … ×_{N-1} U_{N-1})\|_F^2
                                / \|W \ast x\|_F^2,

    so ``rel_error = sqrt(2 f)``. The factors are free (not kept orthonormal). Without a
    mask the loss comes from ``‖x‖² − 2⟨x ×_n U_nᵀ, G⟩ + ⟨G, G ×_n U_nᵀU_n⟩``, with no
    dense reconstruction; with one it is taken over the observed entries. The start is
    that of :func:`tucker_hooi` (``init``, ``key``) with the core ``x ×_n U_nᵀ``, or the
    core of a user ``TuckerTensor``.

    Args:
        x: tensor of at least 2 modes, float32 or float64.
        rank: an int for every mode, or one int per mode, each ``≤ I_n``.
        init: ``"svd"``, ``"random"`` (needs ``key``) or a ``TuckerTensor``.
        key: a ``jax.random`` key.
        optimizer: an ``optax.GradientTransformation``; default ``optax.lbfgs()``. Static:
            a new optimizer object compiles a new loop.
        max_iter: the most optimizer steps; also the length of ``history``.
        tol: stop when ``|Δ rel_error|`` between two steps is below this.
        mask: boolean, shaped like ``x``; True marks an observed entry.
        progress: ``progress(iteration, rel_error)`` is called on the host after each
            iteration (``jax.debug.callback``; a small transfer per iteration). Static:
            pass the same function object to reuse the compiled loop.
        diff: ``"implicit"`` (default) or ``"unroll"``, as in :func:`jaxtd.tucker_hooi`;
            ``"unroll"`` needs an optimizer without a line search (e.g. ``optax.adam``).

    Returns:
        ``FitResult`` with a ``TuckerTensor``.

    Example:
        >>> import jax, jaxtd
        >>> x = jaxtd.datasets.load_aminoacids().tensor
        >>> res = jaxtd.tucker_opt(x, 3, max_iter=100)
        >>> round(1 - float(res.rel_error), 3)
        0.976
    """
    x, max_iter, tol, mask = _validate.fit_args(x, max_iter, tol, mask)
    ranks = _validate.tucker_rank(rank, x.shape)
    optimizer = _validate.optimizer(optimizer)
    kind, model = tucker_init_spec(init, x.shape, ranks, key, x.dtype)
    return _tucker_opt(
        x,
        mask,
        model,
        key,
        tol,
        ranks=ranks,
        init=kind,
        max_iter=max_iter,
        optimizer=optimizer,
        progress=progress,
        diff=_validate.diff(diff),
    )


@partial(jax.jit, static_argnames=("ranks", "init", "max_iter", "optimizer", "progress", "diff"))
def _tucker_opt(x, mask, init_model, key, tol, *, ranks, init, max_iter, optimizer, progress, diff):
    x_input, x = x, loop_input(x, diff)  # derivatives come from the optimum (below)
    x_obs = x if mask is None else jnp.where(mask, x, 0)
    norm_x_sq = jnp.vdot(x_obs, x_obs)
    factors = initial_tucker_factors(x_obs, ranks, init, init_model, key)
    core = init_model.core if init == "model" else multi_mode_dot(x_obs, factors, transpose=True)
    params, stats = minimize(
        partial(tucker_loss, x_obs, mask, norm_x_sq),
        TuckerTensor(core, factors),
        optimizer,
        max_iter=max_iter,
        tol=tol,
        input_status=input_status(x, mask),
        dtype=x.dtype,
        progress=progress,
        unroll=diff == "unroll",
    )
    if diff == "implicit":
        params = tucker_at_optimum(tucker_loss, params, (x_input, mask))
    return FitResult(params, *stats)


def tucker_loss(x: Array, mask: Array | None, norm_x_sq: Array, tucker: TuckerTensor) -> Array:
    """``½ ‖W ∗ (x − T)‖² / ‖W ∗ x‖²``; ``x`` is zero where unobserved."""
    safe = jnp.where(norm_x_sq > 0, norm_x_sq, 1)
    if mask is None:
        return 0.5 * (norm_x_sq - 2 * tucker_inner(x, tucker) + tucker_norm_sq(tucker)) / safe
    residual = jnp.where(mask, x - tucker_to_tensor(tucker), 0)
    return 0.5 * jnp.vdot(residual, residual) / safe
