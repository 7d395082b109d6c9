"""Tucker decomposition by higher-order orthogonal iteration (HOOI)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from jaxtd import _validate
from jaxtd._hosvd import tucker_rel_error
from jaxtd._implicit import loop_input, tucker_at_optimum
from jaxtd._init import initial_tucker_factors, tucker_init_spec
from jaxtd._loop import impute_step, iterate
from jaxtd._models import TuckerTensor, tucker_to_tensor
from jaxtd._result import FitResult, input_status
from jaxtd._tensor import (
    dimension_tree_split,
    fix_signs,
    mode_dot,
    multi_mode_dot,
    unfold,
)
from jaxtd._tucker_opt import tucker_loss


def tucker_hooi(
    x,
    rank,
    *,
    init="svd",
    key: Array | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    mask=None,
    progress=None,
    diff: str = "implicit",
) -> FitResult:
    r"""Fit a Tucker model ``x ≈ G ×_0 U_0 ... ×_{N-1} U_{N-1}`` with orthonormal ``U_n`` by HOOI.

    HOOI maximises ``‖x ×_0 U_0ᵀ ... ×_{N-1} U_{N-1}ᵀ‖`` over orthonormal factors, which
    minimises ``‖x − T‖``. Each sweep moves, mode by mode, ``U_n`` towards the leading
    ``R_n`` left singular vectors of ``Y_n = (x ×_{m ≠ n} U_mᵀ)_{(n)}`` by one step of
    subspace iteration,

    .. math::
        U_n \leftarrow \mathrm{qr}\big(Y_n Y_n^\top U_n\big),

    which never lowers ``‖U_nᵀ Y_n‖`` (so the error never rises) and has the same fixed
    points as the exact singular vectors, at the cost of thin GEMMs and one small QR.
    The core ``G = x ×_m U_mᵀ`` comes from the last projection of the sweep. The
    projections of a sweep share partial products (a dimension tree), so a sweep reads
    ``x`` twice. The start (``"svd"``) is the HOSVD. The
    error is ``sqrt(‖x‖² − ‖G‖²) / ‖x‖``, never a dense reconstruction.

    Args:
        x: tensor of at least 2 modes, float32 or float64.
        rank: an int for every mode, or one int per mode, each ``≤ I_n``.
        init: ``"svd"`` (HOSVD factors), ``"random"`` (needs ``key``) or a ``TuckerTensor``
            (its factors are used; its core is not).
        key: a ``jax.random`` key for ``"random"``.
        max_iter: the most sweeps; also the length of ``history``.
        tol: stop when ``|Δ rel_error|`` between two sweeps is below this.
        mask: boolean, shaped like ``x``; True marks an observed entry. Missing entries
            are imputed from the current model before each sweep (EM), and
            ``rel_error`` is taken over the observed entries.
        progress: ``progress(iteration, rel_error)`` is called on the host after each
            iteration (``jax.debug.callback``; a small transfer per iteration). Static:
            pass the same function object to reuse the compiled loop.
        diff: how ``jax.grad`` with respect to ``x`` goes through the fit: ``"implicit"``
            (default, at the optimum; see :func:`jaxtd.cp_als`) or ``"unroll"`` (through
            every sweep of a ``lax.scan`` of ``max_iter`` sweeps). The Tucker basis of
            each mode is only defined up to rotation: gradients of functions of the
            reconstruction are exact; those of individual factors are taken along
            directions orthogonal to that freedom.

    Returns:
        ``FitResult`` with a ``TuckerTensor`` whose factors are orthonormal.

    Example:
        >>> import jax, jaxtd
        >>> x = jax.random.normal(jax.random.key(0), (6, 7, 8))
        >>> res = jaxtd.tucker_hooi(x, 3)
        >>> res.model.core.shape
        (3, 3, 3)
    """
    x, max_iter, tol, mask = _validate.fit_args(x, max_iter, tol, mask)
    ranks = _validate.tucker_rank(rank, x.shape)
    kind, model = tucker_init_spec(init, x.shape, ranks, key, x.dtype)
    return _tucker_hooi(
        x,
        mask,
        model,
        key,
        tol,
        ranks=ranks,
        init=kind,
        max_iter=max_iter,
        progress=progress,
        diff=_validate.diff(diff),
    )


@partial(jax.jit, static_argnames=("ranks", "init", "max_iter", "progress", "diff"))
def _tucker_hooi(
    x, mask, init_model, key, tol, *, ranks, init, max_iter, progress, diff
) -> FitResult:
    x_input, x = x, loop_input(x, diff)  # derivatives come from the optimum (below)
    x_obs = x if mask is None else jnp.where(mask, x, 0)
    factors = initial_tucker_factors(x_obs, ranks, init, init_model, key)
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
        start = TuckerTensor(jnp.zeros(ranks, x.dtype), factors)
        model, stats = iterate(lambda tk: hooi_sweep(x, tk.factors, norm_x_sq), start, **loop)
    else:
        # EM fills from the model, so the start needs its core: x projected on the factors.
        start = TuckerTensor(multi_mode_dot(x_obs, factors, transpose=True), factors)
        sweep = lambda filled, tk: hooi_sweep(filled, tk.factors, jnp.vdot(filled, filled))[0]  # noqa: E731
        step = impute_step(sweep, tucker_to_tensor, x_obs, mask)
        (model, _), stats = iterate(step, (start, tucker_to_tensor(start)), **loop)
    if diff == "implicit":
        model = tucker_at_optimum(tucker_loss, model, (x_input, mask))
    return FitResult(model, *stats)


def _subspace_step(y: Array, u: Array) -> Array:
    """One subspace-iteration step towards the leading left singular vectors of ``y``.

    ``U ← qr(Y (Yᵀ U))``, signs fixed. For the PSD matrix ``Y Yᵀ`` this never decreases
    ``‖Uᵀ Y‖`` (Ritz values of subspace iteration rise monotonically), so HOOI stays
    monotone and has the same fixed points as with exact singular vectors. It costs
    two thin GEMMs and an ``I_n × R_n`` QR instead of an ``eigh`` of an ``I_n × I_n``
    (or ``∏R × ∏R``) Gram matrix: on CPU that large ``eigh`` goes to a multi-threaded
    LAPACK that fights XLA's own threads (272 ms against 12.6 ms per 200³ sweep).
    """
    q, _ = jnp.linalg.qr(y @ (y.T @ u))
    return fix_signs(q)


def hooi_sweep(x: Array, factors, norm_x_sq: Array) -> tuple[TuckerTensor, Array]:
    """One HOOI sweep over all modes; returns the new model and its relative error."""
    factors = list(factors)
    split = dimension_tree_split(x.shape, [f.shape[1] for f in factors])
    for block in (range(split), range(split, x.ndim)):
        # x projected on the factors outside the block serves every mode in it.
        outside = [m for m in range(x.ndim) if m not in block]
        partial_t = multi_mode_dot(x, [factors[m] for m in outside], outside, transpose=True)
        for n in block:
            inside = [m for m in block if m != n]
            y = multi_mode_dot(partial_t, [factors[m] for m in inside], inside, transpose=True)
            factors[n] = _subspace_step(unfold(y, n), factors[n])
    core = mode_dot(y, factors[-1].T, x.ndim - 1)
    return TuckerTensor(core, tuple(factors)), tucker_rel_error(norm_x_sq, core)
