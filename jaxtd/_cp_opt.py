"""CP decomposition by gradient descent with any optax optimizer (CP-OPT, CP-WOPT)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from jaxtd import _validate
from jaxtd._implicit import cp_at_optimum, loop_input
from jaxtd._init import cp_init_spec, initial_cp
from jaxtd._loop import minimize
from jaxtd._models import CPTensor, cp_inner, cp_norm_sq, cp_normalize, cp_to_tensor
from jaxtd._result import FitResult, input_status


def cp_opt(
    x,
    rank: int,
    *,
    init="svd",
    key: Array | None = None,
    optimizer=None,
    max_iter: int = 500,
    tol: float = 1e-7,
    mask=None,
    nonnegative: bool = False,
    progress=None,
    diff: str = "implicit",
) -> FitResult:
    r"""Fit a rank-``R`` CP model by minimising the relative squared error with optax.

    .. math::
        f(A_0, …, A_{N-1}) = \tfrac12 \|W \ast (x − [[A_0, …, A_{N-1}]])\|_F^2
                             / \|W \ast x\|_F^2

    over all factors at once (``W`` is the mask, all ones without one), so
    ``rel_error = sqrt(2 f)``. Without a mask, ``f`` and its gradient come from Gram
    and MTTKRP identities, with no dense reconstruction:

    .. math::
        \|x − M\|^2 = \|x\|^2 − 2⟨x, M⟩ + 1^\top (\ast_m A_m^\top A_m) 1, \qquad
        \nabla_{A_n} f = \big(−\mathrm{MTTKRP}(x, n) + A_n (\ast_{m \ne n} A_m^\top A_m)\big)
                         / \|x\|^2,

    about two passes over ``x`` per evaluation. With a mask (CP-WOPT), the loss is
    taken over the observed entries with a dense reconstruction. The start is the same
    as :func:`cp_als` (``init``, ``key``), with the weights folded into the first
    factor and the model scaled by the least-squares factor ``⟨x, M⟩ / ‖M‖²``.

    Args:
        x: tensor of at least 2 modes, float32 or float64.
        rank: number of components ``R ≥ 1``.
        init: ``"svd"``, ``"random"`` (needs ``key``) or a ``CPTensor``.
        key: a ``jax.random`` key.
        optimizer: an ``optax.GradientTransformation``; default ``optax.lbfgs()`` with its
            zoom line search. It is a static argument: a new optimizer object compiles a
            new loop, so build it once and reuse it.
        max_iter: the most optimizer steps; also the length of ``history``.
        tol: stop when ``|Δ rel_error|`` between two steps is below this.
        mask: boolean, shaped like ``x``; True marks an observed entry. ``rel_error``
            is then taken over the observed entries.
        nonnegative: constrain every factor to ``≥ 0`` by the reparametrisation
            ``A = B ∗ B`` (element-wise square), optimised over ``B`` from
            ``B = sqrt(|A_start|)``; the factors come out ``≥ 0`` exactly. As in
            :func:`cp_als`, a start with negative entries is made positive.
        progress: ``progress(iteration, rel_error)`` is called on the host after each
            iteration (``jax.debug.callback``; a small transfer per iteration). Static:
            pass the same function object to reuse the compiled loop.
        diff: how ``jax.grad`` with respect to ``x`` goes through the fit: ``"implicit"``
            (default, at the optimum, as in :func:`cp_als`) or ``"unroll"`` (through
            every step of a ``lax.scan``; the optimizer's update must itself be
            reverse-differentiable, which L-BFGS's line search, a ``while_loop``, is not:
            use e.g. ``optax.adam``).

    Returns:
        ``FitResult`` with a ``CPTensor`` normalised as by :func:`cp_normalize`.

    Example:
        >>> import jax, jaxtd
        >>> x = jaxtd.datasets.load_aminoacids().tensor
        >>> res = jaxtd.cp_opt(x, 3, max_iter=300)
        >>> round(1 - float(res.rel_error), 3)
        0.975
    """
    x, max_iter, tol, mask = _validate.fit_args(x, max_iter, tol, mask)
    rank = _validate.cp_rank(rank)
    optimizer = _validate.optimizer(optimizer)
    kind, model = cp_init_spec(init, x.shape, rank, key, x.dtype)
    return _cp_opt(
        x,
        mask,
        model,
        key,
        tol,
        rank=rank,
        init=kind,
        max_iter=max_iter,
        optimizer=optimizer,
        nonnegative=bool(nonnegative),
        progress=progress,
        diff=_validate.diff(diff),
    )


@partial(
    jax.jit,
    static_argnames=("rank", "init", "max_iter", "optimizer", "nonnegative", "progress", "diff"),
)
def _cp_opt(
    x, mask, init_model, key, tol, *, rank, init, max_iter, optimizer, nonnegative, progress, diff
) -> FitResult:
    x_input, x = x, loop_input(x, diff)  # derivatives come from the optimum (below)
    x_obs = x if mask is None else jnp.where(mask, x, 0)
    norm_x_sq = jnp.vdot(x_obs, x_obs)
    start = initial_cp(x_obs, rank, init, init_model, key)
    loss = partial(cp_loss, x_obs, mask, norm_x_sq)
    params = scaled_start(x_obs, start, norm_x_sq)
    if nonnegative:  # optimise B with A = B ∗ B ≥ 0
        loss = lambda roots, loss=loss: loss(tuple(b * b for b in roots))  # noqa: E731
        params = tuple(jnp.sqrt(jnp.abs(f)) for f in params)
    params, stats = minimize(
        loss,
        params,
        optimizer,
        max_iter=max_iter,
        tol=tol,
        input_status=input_status(x, mask),
        dtype=x.dtype,
        progress=progress,
        unroll=diff == "unroll",
    )
    factors = tuple(b * b for b in params) if nonnegative else params
    model = cp_normalize(CPTensor(jnp.ones((rank,), x.dtype), factors))
    if diff == "implicit":
        model = cp_at_optimum(cp_loss, model, (x_input, mask), nonnegative)
    return FitResult(model, *stats)


def cp_loss(x: Array, mask: Array | None, norm_x_sq: Array, factors) -> Array:
    """``½ ‖W ∗ (x − [[A]])‖² / ‖W ∗ x‖²`` (unit weights); ``x`` is zero where unobserved."""
    safe = jnp.where(norm_x_sq > 0, norm_x_sq, 1)
    model = CPTensor(jnp.ones((factors[0].shape[1],), x.dtype), factors)
    if mask is None:
        return 0.5 * (norm_x_sq - 2 * cp_inner(x, model) + cp_norm_sq(model)) / safe
    residual = jnp.where(mask, x - cp_to_tensor(model), 0)
    return 0.5 * jnp.vdot(residual, residual) / safe


def scaled_start(x: Array, cp: CPTensor, norm_x_sq: Array) -> tuple[Array, ...]:
    """Factors of ``α · cp`` with the weights folded in, ``α = ⟨x, M⟩ / ‖M‖²``; zero for x = 0.

    Gradient methods are sensitive to scale; ALS is not, so this only matters here.
    """
    weights, factors = cp
    factors = (factors[0] * weights[None, :],) + tuple(factors[1:])
    unit = CPTensor(jnp.ones_like(weights), factors)
    model_sq = cp_norm_sq(unit)
    alpha = cp_inner(x, unit) / jnp.where(model_sq > 0, model_sq, 1)
    alpha = jnp.where((alpha != 0) & (norm_x_sq > 0), alpha, jnp.where(norm_x_sq > 0, 1, 0))
    per_mode = jnp.abs(alpha) ** (1 / len(factors))
    scaled = [f * per_mode for f in factors]
    scaled[0] = scaled[0] * jnp.sign(alpha)
    return tuple(scaled)
