"""CP decomposition by alternating least squares (CP-ALS)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from jaxtd import _validate
from jaxtd._cp_opt import cp_loss
from jaxtd._implicit import cp_at_optimum, loop_input
from jaxtd._init import cp_init_spec, initial_cp
from jaxtd._loop import impute_step, iterate
from jaxtd._models import CPTensor, cp_to_tensor
from jaxtd._result import FitResult, input_status
from jaxtd._tensor import (
    SMALL_SOLVE_MAX_RANK,
    contract_shared_rank,
    contract_to_rank,
    dimension_tree_split,
    factor_gram,
    gram_hadamard,
    psd_pinv,
    spd_solve_small,
    sum_rows,
)


def cp_als(
    x,
    rank: int,
    *,
    init="svd",
    key: Array | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    mask=None,
    nonnegative: bool = False,
    progress=None,
    diff: str = "implicit",
) -> FitResult:
    r"""Fit a rank-``R`` CP model ``x ≈ [[w; A_0, ..., A_{N-1}]]`` by alternating least squares.

    Each sweep solves, mode by mode, the linear least-squares problem

    .. math::
        A_n \leftarrow \arg\min_A \|X_{(n)} - A\,(\odot_{m \ne n} A_m)^\top\|_F
              = \mathrm{MTTKRP}(x, n)\,\big(\ast_{m \ne n} A_m^\top A_m\big)^{-1}

    (``⊙`` Khatri–Rao, ``∗`` Hadamard product) through the pseudo-inverse of the
    ``R × R`` normal matrix (an ``eigh``; up to rank 6 an unrolled Cholesky with a
    rounding-level ridge, which fuses across a ``vmap`` batch), then scales the columns
    of ``A_n`` to unit norm, carrying the scale in ``w``. The MTTKRPs of a sweep share
    partial contractions (a dimension tree): the modes split into two blocks, chosen to
    keep the partial results small, and one pass over ``x`` serves each block, so a sweep
    reads ``x`` twice and never forms a Khatri–Rao product of the other modes. The error
    comes from ``‖x − M‖² = ‖x‖² − 2⟨x, M⟩ + ‖M‖²`` with the last MTTKRP of the sweep,
    never from a dense reconstruction; in float32 it resolves ``rel_error`` down to about
    ``1e-3`` (cancellation), in float64 to about ``1e-7``.

    Cost per sweep: ``O(size(x) · R)`` flops; memory beyond ``x`` and the factors: the
    two blocks' partial results, ``(prod(I_block)) · R`` each (for ``200³``, ``200² R``;
    for a ``(3, 3, 512, 512)`` conv kernel, ``3·3·512 R`` and ``512 R``).

    Args:
        x: tensor of at least 2 modes, float32 or float64 (integers become the default
            float dtype).
        rank: number of components ``R ≥ 1``.
        init: ``"svd"``, ``"random"`` (needs ``key``) or a ``CPTensor``; see ``jaxtd._init``.
        key: a ``jax.random`` key, for ``"random"`` init, or for ``"svd"`` at a rank above
            a mode size.
        max_iter: the most sweeps; also the length of ``history``.
        tol: stop when ``|Δ rel_error|`` between two sweeps is below this.
        mask: boolean, shaped like ``x``; True marks an observed entry. Missing entries
            are imputed from the current model before each sweep (EM), and
            ``rel_error`` is taken over the observed entries (with a dense
            reconstruction per sweep).
        nonnegative: constrain every factor to ``≥ 0`` (so the model too). Each mode is
            then updated by HALS, one column at a time,
            ``a_r ← max(0, a_r + (M[:, r] − A V[:, r]) / V[r, r])``, which keeps the
            error non-increasing. The start is ``|init|`` (the signs of singular vectors
            are arbitrary; a user init's negative entries are likewise made positive).
        progress: ``progress(iteration, rel_error)`` is called on the host after each
            iteration (``jax.debug.callback``; a small transfer per iteration). Static:
            pass the same function object to reuse the compiled loop.
        diff: how ``jax.grad`` (or ``jvp``) with respect to ``x`` goes through the fit.
            ``"implicit"`` (default): by the implicit function theorem at the optimum
            (one conjugate-gradient solve with Hessian-vector products; see
            ``jaxtd._implicit``), with no cost when no derivative is taken.
            ``"unroll"``: through every sweep of a ``lax.scan`` of ``max_iter`` sweeps
            (the derivative of the iterate actually returned, at ``max_iter`` times the
            memory). Only ``model`` carries derivatives; ``rel_error`` and ``history``
            are constants.

    Returns:
        ``FitResult`` whose ``model`` is a ``CPTensor`` with unit-norm factor columns.

    Example:
        >>> import jax, jaxtd
        >>> keys = jax.random.split(jax.random.key(0), 3)
        >>> a, b, c = (jax.random.normal(k, (n, 2)) for k, n in zip(keys, (4, 5, 6)))
        >>> x = jaxtd.cp_to_tensor(jaxtd.CPTensor(jax.numpy.ones(2), (a, b, c)))
        >>> res = jaxtd.cp_als(x, 2, max_iter=200, tol=1e-10)
        >>> bool(res.rel_error < 1e-2)
        True
    """
    x, max_iter, tol, mask = _validate.fit_args(x, max_iter, tol, mask)
    rank = _validate.cp_rank(rank)
    kind, model = cp_init_spec(init, x.shape, rank, key, x.dtype)
    nonnegative = bool(nonnegative)
    return _cp_als(
        x,
        mask,
        model,
        key,
        tol,
        rank=rank,
        init=kind,
        max_iter=max_iter,
        nonnegative=nonnegative,
        progress=progress,
        diff=_validate.diff(diff),
    )


@partial(jax.jit, static_argnames=("rank", "init", "max_iter", "nonnegative", "progress", "diff"))
def _cp_als(
    x, mask, init_model, key, tol, *, rank, init, max_iter, nonnegative, progress, diff
) -> FitResult:
    x_input, x = x, loop_input(x, diff)  # derivatives come from the optimum (below)
    x_obs = x if mask is None else jnp.where(mask, x, 0)
    start = initial_cp(x_obs, rank, init, init_model, key)
    if nonnegative:
        start = jax.tree_util.tree_map(jnp.abs, start)
    update = _hals_normalized if nonnegative else _solve_normalized
    loop = dict(
        max_iter=max_iter,
        tol=tol,
        input_status=input_status(x, mask),
        dtype=x.dtype,
        progress=progress,
        unroll=diff == "unroll",
    )
    if mask is None:
        norm_x_sq = jnp.vdot(x, x)
        model, stats = iterate(lambda cp: als_sweep(x, cp, norm_x_sq, update), start, **loop)
    else:
        sweep = lambda filled, cp: als_sweep(filled, cp, jnp.vdot(filled, filled), update)[0]  # noqa: E731
        step = impute_step(sweep, cp_to_tensor, x_obs, mask)
        (model, _), stats = iterate(step, (start, cp_to_tensor(start)), **loop)
    if diff == "implicit":
        model = cp_at_optimum(cp_loss, model, (x_input, mask), nonnegative)
    return FitResult(model, *stats)


def als_sweep(x: Array, cp: CPTensor, norm_x_sq: Array, update=None) -> tuple[CPTensor, Array]:
    """One ALS sweep over all modes, with the relative error of the new model.

    ``update(mttkrp_n, v, current)`` returns the new unit-column factor and its column
    norms; the default is the unconstrained least-squares solve.
    """
    update = update or _solve_normalized
    factors = list(cp.factors)
    grams = [factor_gram(f) for f in factors]
    split = dimension_tree_split(x.shape)
    weights = cp.weights
    for block in (range(split), range(split, x.ndim)):
        # x contracted over the modes outside the block serves every mode in it.
        outside = [m for m in range(x.ndim) if m not in block]
        partial_t = contract_to_rank(x, factors, outside)  # (I_block..., R)
        for n in block:
            others = [m - block[0] for m in block if m != n]
            by_pos = {m - block[0]: factors[m] for m in block if m != n}
            mttkrp_n = contract_shared_rank(partial_t, by_pos, others)
            v = gram_hadamard(grams[:n] + grams[n + 1 :])
            factors[n], weights = update(mttkrp_n, v, factors[n] * weights[None, :])
            grams[n] = factor_gram(factors[n])
    # mttkrp_n is the last mode's MTTKRP with every other factor final.
    inner = jnp.vdot(sum_rows(mttkrp_n * factors[-1]), weights)
    norm_m_sq = weights @ gram_hadamard(grams) @ weights
    res_sq = jnp.maximum(norm_x_sq - 2 * inner + norm_m_sq, 0)
    rel_error = jnp.where(
        norm_x_sq > 0, jnp.sqrt(res_sq / jnp.where(norm_x_sq > 0, norm_x_sq, 1)), 0
    )
    return CPTensor(weights, tuple(factors)), rel_error


def _solve_normalized(mttkrp_n: Array, v: Array, current: Array) -> tuple[Array, Array]:
    """``A = M V⁺`` (least-norm solution), then unit-norm columns and their norms.

    Up to ``SMALL_SOLVE_MAX_RANK``, ``A = M (V + δI)⁻¹`` by an unrolled Cholesky with a
    ridge at rounding level (:func:`jaxtd._tensor.spd_solve_small`): plain arithmetic
    that fuses, alone and across a ``vmap`` batch of small fits, where a vmapped ``eigh``
    of a tiny matrix is slow. Above it, ``V⁺`` comes from ``eigh`` of the symmetric
    ``R × R`` matrix ``V`` (see :func:`jaxtd._tensor.psd_pinv`); one ``eigh`` is much
    faster inside the compiled loop on CPU than LAPACK's Cholesky and two triangular
    solves. Either way a singular ``V`` (an all-zero tensor, a zero column) gives
    finite factors.
    """
    if v.shape[0] <= SMALL_SOLVE_MAX_RANK:
        factor = spd_solve_small(v, mttkrp_n.T).T
    else:
        factor = mttkrp_n @ psd_pinv(v)
    norms = _column_norms(factor)
    return factor / jnp.where(norms > 0, norms, 1)[None, :], norms


def _column_norms(factor: Array) -> Array:
    sq = sum_rows(factor * factor)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)  # no NaN derivative at 0


def _hals_normalized(mttkrp_n: Array, v: Array, current: Array) -> tuple[Array, Array]:
    """Nonnegative update by HALS from ``current``, then unit-norm columns and their norms.

    Column ``r`` minimises the error exactly over ``a_r ≥ 0`` with the others fixed:
    ``a_r ← max(0, a_r + (M[:, r] − A V[:, r]) / V[r, r])``.
    """

    def column(r, a):
        vrr = v[r, r]
        step = (mttkrp_n[:, r] - a @ v[:, r]) / jnp.where(vrr > 0, vrr, 1)
        return a.at[:, r].set(jnp.where(vrr > 0, jnp.maximum(a[:, r] + step, 0), a[:, r]))

    factor = jax.lax.fori_loop(0, v.shape[0], column, current)
    norms = _column_norms(factor)
    return factor / jnp.where(norms > 0, norms, 1)[None, :], norms
