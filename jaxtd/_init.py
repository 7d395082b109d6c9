"""Initial models: ``"svd"``, ``"random"`` (needs ``key``), or one the user gives.

``"svd"``: factor ``n`` is the ``R_n`` leading left singular vectors of the mode-``n``
unfolding, from the eigenvectors of its smaller Gram matrix (never a full SVD; see
``leading_left_singular_vectors``). CP weights start at one. When a CP rank exceeds
``I_n``, there are only ``I_n`` singular vectors: the remaining ``R − I_n`` columns
are standard normal draws from ``key``, so ``key`` is then required.

``"random"``: standard normal factors from ``key`` (orthonormalised by QR for
Tucker), CP weights one.

A user model is checked against the shapes, cast to the dtype of ``x`` as new
arrays, and never modified.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxtd import _validate
from jaxtd._models import CPTensor, TuckerTensor
from jaxtd._tensor import leading_mode_vectors

INIT_KINDS = ("svd", "random")


def cp_init_spec(init, shape: Sequence[int], rank: int, key, dtype) -> tuple[str, CPTensor | None]:
    """Check ``init`` for a CP fit: ``(kind, model)``, with ``model`` only for kind "model"."""
    if isinstance(init, CPTensor):
        weights, factors = init
        if not isinstance(factors, Sequence) or len(factors) != len(shape):
            raise ValueError(
                f"init has {len(factors) if isinstance(factors, Sequence) else factors!r} "
                f"factors but x has {len(shape)} modes"
            )
        expected = [(i, rank) for i in shape]
        got = [tuple(np.shape(f)) for f in factors]
        if got != expected or np.shape(weights) != (rank,):
            raise ValueError(
                f"init shapes do not fit x {tuple(shape)} at rank {rank}: expected weights "
                f"{(rank,)} and factors {expected}, "
                f"got weights {np.shape(weights)} and factors {got}"
            )
        cast = CPTensor(
            jnp.asarray(weights, dtype=dtype), tuple(jnp.asarray(f, dtype=dtype) for f in factors)
        )
        return "model", cast
    if isinstance(init, TuckerTensor):
        raise TypeError("init is a TuckerTensor but a CP fit needs a CPTensor")
    kind = _validate.choice(init, "init", INIT_KINDS + ("a CPTensor",))
    if kind == "random" and key is None:
        raise ValueError('init="random" needs a key, e.g. key=jax.random.key(0)')
    if kind == "svd" and rank > min(shape) and key is None:
        raise ValueError(
            f'init="svd" at rank {rank} above the mode size {min(shape)} of x {tuple(shape)} draws '
            "the extra columns at random: pass key=jax.random.key(...)"
        )
    return kind, None


def tucker_init_spec(
    init, shape: Sequence[int], ranks: tuple[int, ...], key, dtype
) -> tuple[str, TuckerTensor | None]:
    """Check ``init`` for a Tucker fit; returns ``(kind, model)`` as :func:`cp_init_spec`."""
    if isinstance(init, TuckerTensor):
        core, factors = init
        expected = [(i, r) for i, r in zip(shape, ranks)]
        got = [tuple(np.shape(f)) for f in factors] if isinstance(factors, Sequence) else factors
        if got != expected or tuple(np.shape(core)) != ranks:
            raise ValueError(
                f"init shapes do not fit x {tuple(shape)} at rank {ranks}: expected core {ranks} "
                f"and factors {expected}, got core {tuple(np.shape(core))} and factors {got}"
            )
        cast = TuckerTensor(
            jnp.asarray(core, dtype=dtype), tuple(jnp.asarray(f, dtype=dtype) for f in factors)
        )
        return "model", cast
    if isinstance(init, CPTensor):
        raise TypeError("init is a CPTensor but a Tucker fit needs a TuckerTensor")
    kind = _validate.choice(init, "init", INIT_KINDS + ("a TuckerTensor",))
    if kind == "random" and key is None:
        raise ValueError('init="random" needs a key, e.g. key=jax.random.key(0)')
    return kind, None


def initial_cp(x: Array, rank: int, kind: str, model: CPTensor | None, key) -> CPTensor:
    """The starting CP model (traceable)."""
    if kind == "model":
        return model
    keys = jax.random.split(key, x.ndim) if key is not None else [None] * x.ndim
    factors = []
    for n, size in enumerate(x.shape):
        if kind == "random":
            factors.append(jax.random.normal(keys[n], (size, rank), x.dtype))
            continue
        u = leading_mode_vectors(x, n, min(rank, size))
        if rank > size:
            extra = jax.random.normal(keys[n], (size, rank - size), x.dtype)
            u = jnp.concatenate([u, extra], axis=1)
        factors.append(u)
    return CPTensor(jnp.ones((rank,), x.dtype), tuple(factors))


def initial_tucker_factors(
    x: Array, ranks: tuple[int, ...], kind: str, model: TuckerTensor | None, key
) -> tuple[Array, ...]:
    """The starting Tucker factors (traceable); orthonormal for "svd" and "random"."""
    if kind == "model":
        return model.factors
    if kind == "random":
        keys = jax.random.split(key, x.ndim)
        return tuple(
            jnp.linalg.qr(jax.random.normal(k, (size, r), x.dtype))[0]
            for k, size, r in zip(keys, x.shape, ranks)
        )
    return tuple(leading_mode_vectors(x, n, r) for n, r in enumerate(ranks))
