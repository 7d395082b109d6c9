"""Multi-start fitting: many random starts at once under ``vmap``, keep the best."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from jaxtd import _validate
from jaxtd._result import FitResult


class MultiStart(NamedTuple):
    """The best of several fits, and how the others did.

    Attributes:
        best: the ``FitResult`` with the lowest finite ``rel_error``.
        index: which start it was (int32).
        rel_error: ``(n_starts,)``, the final error of every start (NaN where a start
            did not give finite numbers).
        converged: ``(n_starts,)`` bool.
    """

    best: FitResult
    index: Array
    rel_error: Array
    converged: Array


def multi_start(
    fit: Callable[..., FitResult], x, rank, *, key: Array, n_starts: int, **kwargs
) -> MultiStart:
    """Fit from ``n_starts`` random starts in one batched call, and keep the best.

    CP-ALS (and Tucker HOOI, less often) can stop in a local minimum or a swamp that
    depends on the start. This runs ``fit(x, rank, init="random", key=k_i, **kwargs)``
    for ``k_i`` in ``jax.random.split(key, n_starts)`` under ``jax.vmap`` (one compiled
    loop whose iterations run all starts together, until the slowest has stopped), and
    returns the one with the lowest finite ``rel_error``. Works inside ``jit``, and the
    best model is differentiable in ``x`` like any fit. Memory: ``n_starts`` times a
    single fit's working set, beside one copy of ``x``.

    Args:
        fit: a fitter: ``jaxtd.cp_als``, ``cp_opt``, ``tucker_hooi`` or ``tucker_opt``.
        x: the tensor (shared by every start).
        rank: passed to ``fit``.
        key: a ``jax.random`` key; the same key gives the same starts.
        n_starts: how many starts, ``≥ 1`` (static).
        **kwargs: passed to ``fit`` (``max_iter``, ``tol``, ``mask``, ...); not ``init``.

    Returns:
        ``MultiStart(best, index, rel_error, converged)``.

    Example:
        >>> import jax, jaxtd
        >>> x = jaxtd.datasets.load_aminoacids().tensor
        >>> ms = jaxtd.multi_start(jaxtd.cp_als, x, 3, key=jax.random.key(0), n_starts=4)
        >>> ms.rel_error.shape, round(1 - float(ms.best.rel_error), 3)
        ((4,), 0.975)
    """
    if "init" in kwargs:
        raise ValueError("multi_start draws random starts; do not pass init")
    n_starts = _validate.as_int(n_starts, "n_starts")
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    if key is None:
        raise ValueError("multi_start needs a key (jax.random.key(seed)) to draw its starts")
    keys = jax.random.split(key, n_starts)
    results = jax.vmap(lambda k: fit(x, rank, init="random", key=k, **kwargs))(keys)
    errors = jnp.where(jnp.isfinite(results.rel_error), results.rel_error, jnp.inf)
    index = jnp.argmin(errors).astype(jnp.int32)
    best = jax.tree_util.tree_map(lambda leaf: leaf[index], results)
    rel_error = jnp.where(jnp.isfinite(results.rel_error), results.rel_error, jnp.nan)
    return MultiStart(best, index, rel_error, results.converged)
