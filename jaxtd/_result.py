"""The result type shared by every fitter, and its status codes."""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

from jaxtd._models import CPTensor, TuckerTensor


class Status(enum.IntEnum):
    """Why a fit stopped. ``FitResult.status`` holds the integer code.

    Example:
        >>> Status(0).message
        'converged: the change in rel_error fell below tol'
    """

    SUCCESS = 0
    MAX_ITER = 1
    NONFINITE_INPUT = 2
    NONFINITE_ITER = 3
    NO_OBSERVED = 4

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @classmethod
    def describe(cls, code) -> str:
        """Readable message for a status code (an int or a scalar array)."""
        return cls(int(code)).message


_MESSAGES = {
    Status.SUCCESS: "converged: the change in rel_error fell below tol",
    Status.MAX_ITER: "stopped at max_iter before the change in rel_error fell below tol",
    Status.NONFINITE_INPUT: "the input tensor contains NaN or Inf; nothing was fitted",
    Status.NONFINITE_ITER: "a NaN or Inf appeared during the iterations; the fit stopped there",
    Status.NO_OBSERVED: "the mask observes no entry of x; nothing was fitted",
}


def input_status(x: Array, mask: Array | None) -> Array:
    """``Status`` code of the data alone (int32): NaN/Inf among the observed entries, or
    a mask that observes nothing, stop a fit before its first iteration."""
    if mask is None:
        return jnp.where(jnp.all(jnp.isfinite(x)), Status.SUCCESS, Status.NONFINITE_INPUT).astype(
            jnp.int32
        )
    finite = jnp.all(jnp.isfinite(x) | ~mask)
    code = jnp.where(finite, Status.SUCCESS, Status.NONFINITE_INPUT)
    return jnp.where(jnp.any(mask), code, Status.NO_OBSERVED).astype(jnp.int32)


class FitResult(NamedTuple):
    """What every fitter returns.

    Attributes:
        model: the fitted ``CPTensor`` or ``TuckerTensor``.
        rel_error: ``‖x − model‖_F / ‖x‖_F`` (0 for an all-zero ``x``). Fit is ``1 − rel_error``.
        n_iter: iterations performed, int32 scalar.
        converged: bool scalar: the tolerance was reached with finite numbers.
        history: ``(max_iter,)``: rel_error after each iteration, NaN after ``n_iter``.
        status: int32 code; ``Status.describe(status)`` reads it.
    """

    model: CPTensor | TuckerTensor
    rel_error: Array
    n_iter: Array
    converged: Array
    history: Array
    status: Array
