"""The bounded iteration loop every iterative fitter runs: one ``lax.while_loop``.

Stopping rule: ``|rel_error_k − rel_error_{k−1}| < tol`` (converged), or ``max_iter``
iterations, or a non-finite value (in the error or in the iterate). The first
iteration is compared with ``+inf``, so at least two run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from jaxtd._result import Status


class LoopStats(NamedTuple):
    """The diagnostics half of a ``FitResult``: ``FitResult(model, *stats)``."""

    rel_error: Array
    n_iter: Array
    converged: Array
    history: Array
    status: Array


class _Carry(NamedTuple):
    i: Array
    state: Any
    rel_error: Array
    history: Array
    converged: Array
    finite: Array


def all_finite(tree) -> Array:
    """True when every leaf of ``tree`` holds only finite numbers."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def iterate(
    step: Callable[[Any], tuple[Any, Array]],
    state: Any,
    *,
    max_iter: int,
    tol: Array,
    input_finite: Array,
    dtype,
) -> tuple[Any, LoopStats]:
    """Run ``state, rel_error = step(state)`` until the stopping rule holds.

    Returns the final state and its ``LoopStats``; ``rel_error`` is NaN when no
    iteration ran (non-finite input).
    """

    def cond(c: _Carry) -> Array:
        return (c.i < max_iter) & ~c.converged & c.finite

    def body(c: _Carry) -> _Carry:
        new_state, err = step(c.state)
        finite = jnp.isfinite(err) & all_finite(new_state)
        converged = finite & (jnp.abs(err - c.rel_error) < tol)
        return _Carry(c.i + 1, new_state, err, c.history.at[c.i].set(err), converged, finite)

    init = _Carry(
        i=jnp.asarray(0, jnp.int32),
        state=state,
        rel_error=jnp.asarray(jnp.inf, dtype),
        history=jnp.full((max_iter,), jnp.nan, dtype),
        converged=jnp.asarray(False),
        finite=jnp.asarray(input_finite),
    )
    c = lax.while_loop(cond, body, init)
    rel_error = jnp.where(c.i > 0, c.rel_error, jnp.nan)
    status = status_code(input_finite, c.finite, c.converged)
    return c.state, LoopStats(rel_error, c.i, c.converged, c.history, status)


def status_code(input_finite: Array, finite: Array, converged: Array) -> Array:
    """The ``Status`` code, as int32, from the loop's final flags."""
    return jnp.where(
        ~input_finite,
        Status.NONFINITE_INPUT,
        jnp.where(
            ~finite, Status.NONFINITE_ITER, jnp.where(converged, Status.SUCCESS, Status.MAX_ITER)
        ),
    ).astype(jnp.int32)
