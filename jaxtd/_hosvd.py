"""Truncated higher-order SVD (HOSVD), plain and sequentially truncated."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from jaxtd import _validate
from jaxtd._loop import status_code
from jaxtd._models import TuckerTensor
from jaxtd._result import FitResult, Status, input_status
from jaxtd._tensor import leading_mode_vectors, mode_dot, multi_mode_dot


def hosvd(x, rank, *, sequential: bool = False) -> FitResult:
    r"""Tucker model by truncated HOSVD: ``x ≈ G ×_0 U_0 ... ×_{N-1} U_{N-1}``.

    ``U_n`` holds the ``R_n`` leading left singular vectors of the mode-``n`` unfolding
    ``X_(n)``, and ``G = x ×_0 U_0ᵀ ... ×_{N-1} U_{N-1}ᵀ``. With ``sequential=True``
    (ST-HOSVD) each ``U_n`` comes from the unfolding of the tensor already projected on
    ``U_0 .. U_{n-1}``, which is cheaper and usually as accurate. With orthonormal
    factors ``‖x − T‖² = ‖x‖² − ‖G‖²``, so no dense reconstruction is needed.

    Singular vectors come from ``eigh`` of the smaller Gram matrix of each unfolding,
    ``O(size(x) · I_n)`` flops per mode (less for ST-HOSVD), never a full SVD.

    Args:
        x: tensor of at least 2 modes.
        rank: an int for every mode, or one int per mode, each ``≤ I_n``.
        sequential: ST-HOSVD instead of the truncated HOSVD.

    Returns:
        ``FitResult`` with a ``TuckerTensor``; ``n_iter`` is 1 and ``history`` has length 1.

    Example:
        >>> import jax, jaxtd
        >>> x = jax.random.normal(jax.random.key(0), (6, 7, 8))
        >>> res = jaxtd.hosvd(x, (6, 7, 8))
        >>> bool(res.rel_error < 1e-3)
        True
    """
    x = _validate.as_tensor(x)
    ranks = _validate.tucker_rank(rank, x.shape)
    return _hosvd(x, ranks=ranks, sequential=bool(sequential))


@partial(jax.jit, static_argnames=("ranks", "sequential"))
def _hosvd(x, *, ranks, sequential) -> FitResult:
    if sequential:
        core, factors = x, []
        for n, r in enumerate(ranks):
            u = leading_mode_vectors(core, n, r)
            core = mode_dot(core, u.T, n)
            factors.append(u)
    else:
        factors = [leading_mode_vectors(x, n, r) for n, r in enumerate(ranks)]
        core = multi_mode_dot(x, factors, transpose=True)
    rel_error = tucker_rel_error(jnp.vdot(x, x), core)
    data_status = input_status(x, None)
    rel_error = jnp.where(data_status == Status.SUCCESS, rel_error, jnp.nan)
    finite = jnp.isfinite(rel_error)
    return FitResult(
        model=TuckerTensor(core, tuple(factors)),
        rel_error=rel_error,
        n_iter=jnp.asarray(1, jnp.int32),
        converged=finite,
        history=rel_error[None],
        status=status_code(data_status, finite, finite),
    )


def tucker_rel_error(norm_x_sq: Array, core: Array) -> Array:
    """``‖x − T‖ / ‖x‖`` for orthonormal factors: ``sqrt(‖x‖² − ‖G‖²) / ‖x‖`` (0 when x = 0)."""
    safe = jnp.where(norm_x_sq > 0, norm_x_sq, 1)
    res_sq = jnp.maximum(norm_x_sq - jnp.vdot(core, core), 0)
    return jnp.where(norm_x_sq > 0, jnp.sqrt(res_sq / safe), 0)
