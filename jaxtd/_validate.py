"""Checks on arguments whose problems show in shapes, dtypes and types.

They run in Python before tracing, so they raise at call time under ``jit`` too.
Messages name the argument and show the offending values.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

# One object, so that calls with the default optimizer share their compiled loop.
DEFAULT_OPTIMIZER = optax.lbfgs()


def as_tensor(x, name: str = "x", ndim: int | None = None) -> Array:
    """``x`` as a floating JAX array, none of its axes empty.

    With ``ndim=None`` it needs at least 2 modes (a tensor to fit); otherwise exactly
    ``ndim`` axes. Integers and booleans become the default float dtype (float32, or
    float64 under x64). Complex and half-precision input raise ``TypeError``. Messages
    call the argument ``name``.
    """
    if not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{name} must be an array, got {type(x).__name__}: {e}") from None
    dtype = np.dtype(x.dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} has complex dtype {dtype}; jaxtd fits real tensors only")
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        x = jnp.asarray(x, dtype=jnp.result_type(float))
    elif dtype in (np.float32, np.float64):
        x = jnp.asarray(x)
    elif dtype.itemsize < 4 and dtype.kind in "fV":
        raise TypeError(f"{name} has dtype {dtype}; use float32 or float64 (cast with .astype)")
    else:
        raise TypeError(f"{name} has unsupported dtype {dtype}; use float32 or float64")
    if ndim is None and x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 modes, got shape {tuple(x.shape)}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {tuple(x.shape)}")
    if 0 in x.shape:
        raise ValueError(f"{name} has an empty mode: shape {tuple(x.shape)}")
    return x


def as_int(value, name: str) -> int:
    """An int (not a bool), or ``TypeError`` naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


def cp_rank(rank) -> int:
    """A CP rank: an int ≥ 1."""
    rank = as_int(rank, "rank")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    return rank


def tucker_rank(rank, shape: Sequence[int]) -> tuple[int, ...]:
    """A Tucker rank: an int for every mode, or one int per mode, each in ``[1, I_n]``."""
    if isinstance(rank, Sequence) or (hasattr(rank, "ndim") and np.ndim(rank) == 1):
        ranks = tuple(as_int(r, "rank") for r in rank)
        if len(ranks) != len(shape):
            raise ValueError(
                f"rank has {len(ranks)} entries {ranks} but x has {len(shape)} modes {tuple(shape)}"
            )
    else:
        ranks = (as_int(rank, "rank"),) * len(shape)
    if min(ranks) < 1:
        raise ValueError(f"rank must be >= 1 in every mode, got {ranks}")
    too_big = [n for n, (r, i) in enumerate(zip(ranks, shape)) if r > i]
    if too_big:
        raise ValueError(
            f"Tucker rank {ranks} exceeds the mode sizes {tuple(shape)} in modes {too_big}"
        )
    return ranks


def max_iter(value) -> int:
    value = as_int(value, "max_iter")
    if value < 1:
        raise ValueError(f"max_iter must be >= 1, got {value}")
    return value


def tol(value):
    """``tol`` as given; a concrete number must be finite and ≥ 0 (traced values pass)."""
    try:
        concrete = float(value)
    except jax.errors.ConcretizationTypeError:  # traced: used as is
        return value
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a real number, got {value!r}") from None
    if not np.isfinite(concrete) or concrete < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {value!r}")
    return value


def mask(value, shape: Sequence[int]) -> Array | None:
    """A boolean mask shaped like ``x`` (True = observed), or None.

    A concrete mask that observes nothing raises; a traced one is reported in ``status``.
    """
    if value is None:
        return None
    if not hasattr(value, "dtype"):
        value = np.asarray(value)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"mask has shape {tuple(value.shape)} but x has shape {tuple(shape)}")
    if value.dtype != bool:
        raise TypeError(f"mask must be boolean (True = observed), got dtype {value.dtype}")
    if not isinstance(value, jax.core.Tracer) and not np.any(np.asarray(value)):
        raise ValueError(f"mask observes no entry of x (all {int(np.prod(shape))} are False)")
    return jnp.asarray(value)


def fit_args(x, max_iter_value, tol_value, mask_value):
    """The arguments every iterative fitter shares, checked: ``(x, max_iter, tol, mask)``."""
    x = as_tensor(x)
    return x, max_iter(max_iter_value), tol(tol_value), mask(mask_value, x.shape)


def optimizer(value):
    """An optax ``GradientTransformation``; None means L-BFGS with its line search."""
    if value is None:
        return DEFAULT_OPTIMIZER
    if not isinstance(value, optax.GradientTransformation):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-2)), "
            f"got {type(value).__name__}"
        )
    return value


def choice(value, name: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


DIFF_MODES = ("implicit", "unroll")


def diff(value) -> str:
    """How gradients go through a fit: ``"implicit"`` (at the optimum) or ``"unroll"``."""
    return choice(value, "diff", DIFF_MODES)
