"""Choosing a rank: the error over a list of ranks, and CORCONDIA for CP models."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxtd import _validate
from jaxtd._api import cp, tucker
from jaxtd._models import CPTensor, cp_normalize
from jaxtd._result import FitResult
from jaxtd._tensor import multi_mode_dot

_METHODS = {"cp": ("als", "opt"), "tucker": ("hooi", "hosvd", "opt")}


class RankSweep(NamedTuple):
    """What :func:`rank_sweep` returns: one entry per rank, in the order given.

    Attributes:
        ranks: the ranks fitted: ints for CP, tuples of ``N`` ints for Tucker.
        rel_error: ``(K,)`` ``‖x − model‖_F / ‖x‖_F`` per rank, in the dtype of ``x``.
        n_iter: ``(K,)`` int32 iterations per rank.
        converged: ``(K,)`` bool per rank.
        results: tuple of the ``K`` ``FitResult`` s (models, histories, status codes).
        corcondia: ``(K,)`` CORCONDIA per CP rank in percent, or None when not asked.
    """

    ranks: tuple
    rel_error: Array
    n_iter: Array
    converged: Array
    results: tuple[FitResult, ...]
    corcondia: Array | None


def rank_sweep(
    x,
    ranks: Sequence,
    *,
    model: str = "cp",
    method: str | None = None,
    key: Array | None = None,
    corcondia: bool = False,
    **fit_kwargs,
) -> RankSweep:
    r"""Fit a CP or Tucker model at each rank in ``ranks``, and collect the errors.

    For each rank ``R_k`` the fit minimises ``‖x − M_k‖_F`` over models of that rank, and
    the sweep reports ``e_k = ‖x − M_k‖_F / ‖x‖_F`` side by side (fit is ``1 − e_k``).
    The usual reading: the rank where ``e_k`` stops falling sharply (the "elbow") and,
    for CP, where CORCONDIA is still high (near 100) before it drops.

    The models of different ranks have different shapes, so this is a Python loop over
    the jit-compiled fitters: each distinct rank compiles once, and a second sweep with
    the same shapes, dtype and arguments reuses every compiled fit. Cost is the sum of
    the fits' costs.

    Args:
        x: tensor of at least 2 modes, float32 or float64.
        ranks: a non-empty sequence of ranks: ints ``≥ 1`` for CP; for Tucker, ints (the
            same for every mode) or sequences of ``N`` ints, each in ``[1, I_n]``.
        model: ``"cp"`` or ``"tucker"``.
        method: the fitter: ``"als"`` (default) or ``"opt"`` for CP; ``"hooi"``
            (default), ``"hosvd"`` or ``"opt"`` for Tucker.
        key: a ``jax.random`` key, passed to every fit (needed for ``init="random"``, and
            for the CP ``"svd"`` start at a rank above a mode size). Each rank uses the
            same key.
        corcondia: also compute :func:`corcondia` of each CP model (CP only, no mask).
        **fit_kwargs: passed to the fitter (``max_iter``, ``tol``, ``mask``, ...).

    Returns:
        A ``RankSweep``.

    Example:
        >>> import jax, jaxtd
        >>> keys = jax.random.split(jax.random.key(0), 3)
        >>> a, b, c = (jax.random.normal(k, (n, 2)) for k, n in zip(keys, (4, 5, 6)))
        >>> x = jaxtd.cp_to_tensor(jaxtd.CPTensor(jax.numpy.ones(2), (a, b, c)))
        >>> sweep = rank_sweep(x, [1, 2], key=keys[0], max_iter=300, tol=1e-10, corcondia=True)
        >>> bool(sweep.rel_error[0] > 0.05), bool(sweep.rel_error[1] < 1e-2)
        (True, True)
        >>> bool(sweep.corcondia[1] > 99)
        True
    """
    x = _validate.as_tensor(x)
    model = _validate.choice(model, "model", tuple(_METHODS))
    if method is None:
        method = _METHODS[model][0]
    method = _validate.choice(method, "method", _METHODS[model])
    ranks = _sweep_ranks(ranks, model, x.shape)
    if corcondia and model != "cp":
        raise ValueError(f'corcondia=True needs model="cp", got model={model!r}')
    if corcondia and fit_kwargs.get("mask") is not None:
        raise ValueError(
            "corcondia=True is not available with a mask: its least-squares core needs every "
            "entry of x"
        )
    if key is not None and method != "hosvd":  # the HOSVD is deterministic: no key
        fit_kwargs["key"] = key
    fit = cp if model == "cp" else tucker
    results = tuple(fit(x, rank, method=method, **fit_kwargs) for rank in ranks)
    cc = jnp.stack([_corcondia(x, r.model) for r in results]) if corcondia else None
    return RankSweep(
        ranks=ranks,
        rel_error=jnp.stack([r.rel_error for r in results]),
        n_iter=jnp.stack([r.n_iter for r in results]),
        converged=jnp.stack([r.converged for r in results]),
        results=results,
        corcondia=cc,
    )


def _sweep_ranks(ranks, model: str, shape: Sequence[int]) -> tuple:
    """``ranks`` checked and normalised: a tuple of ints (CP) or of int tuples (Tucker)."""
    if isinstance(ranks, (str, bytes)) or not (
        isinstance(ranks, Sequence) or (hasattr(ranks, "ndim") and np.ndim(ranks) >= 1)
    ):
        raise TypeError(
            f"ranks must be a sequence of ranks, e.g. [1, 2, 3], got {type(ranks).__name__} "
            f"{ranks!r}"
        )
    ranks = list(ranks)
    if not ranks:
        raise ValueError("ranks is empty: give at least one rank")
    out = []
    for i, rank in enumerate(ranks):
        try:
            if model == "cp":
                out.append(_validate.cp_rank(rank))
            else:
                out.append(_validate.tucker_rank(rank, shape))
        except (TypeError, ValueError) as e:
            raise type(e)(f"ranks[{i}]: {e}") from None
    return tuple(out)


def corcondia(x, cp_model: CPTensor) -> Array:
    r"""Core consistency diagnostic (CORCONDIA) of a CP model of ``x``, in percent.

    With the CP factors ``B_n`` (``I_n × R``, the weights absorbed), the least-squares
    Tucker core of ``x`` given those factors is

    .. math::
        G = \arg\min_G \|x - G \times_0 B_0 \cdots \times_{N-1} B_{N-1}\|_F
          = x \times_0 B_0^+ \times_1 B_1^+ \cdots \times_{N-1} B_{N-1}^+,

    since the pseudo-inverse of a Kronecker product is the Kronecker product of the
    pseudo-inverses. A CP model is the Tucker model whose core is the superdiagonal
    ``T`` (``T_{r…r} = 1``), so CORCONDIA measures how far the data pull ``G`` from it:

    .. math::
        \mathrm{CORCONDIA} = 100 \Big(1 - \frac{\sum (G - T)^2}{R}\Big).

    Values near 100 say the CP model is appropriate; a sharp drop (to 50 or below, or
    negative) at rank ``R`` suggests ``R`` is too high (Bro & Kiers 2003).

    The weights are absorbed as in Bro's N-way toolbox (``corcond.m``): every factor
    column is scaled to the same norm ``|w_r|^{1/N}`` (the sign of ``w_r`` goes to the
    first mode). The off-diagonal part of ``G`` depends on how the scale is spread over
    the modes, so this convention matters when comparing with other software. Each
    ``B_n^+`` (``R × I_n``) comes from a thin SVD of ``B_n``, dropping singular values
    below ``max(I_n, R) · eps · σ_max``; no Khatri–Rao or Kronecker product is formed.
    Cost: ``O(size(x) · R)`` for the mode products plus ``O(Σ I_n R²)`` for the SVDs.

    Jit-compatible and usable under ``vmap`` (over ``x`` and the model); the result has
    the dtype of ``x`` (the model is cast to it). The shapes are checked at call time.

    Args:
        x: tensor of at least 2 modes, float32 or float64.
        cp_model: a ``CPTensor`` with weights ``(R,)`` and factors ``(I_n, R)``.

    Returns:
        Scalar CORCONDIA in percent (100 for an exact CP model at its true rank; it may
        be negative).

    Example:
        >>> import jax, jaxtd
        >>> keys = jax.random.split(jax.random.key(0), 3)
        >>> a, b, c = (jax.random.normal(k, (n, 2)) for k, n in zip(keys, (4, 5, 6)))
        >>> model = jaxtd.CPTensor(jax.numpy.array([1.0, 3.0]), (a, b, c))
        >>> round(float(corcondia(jaxtd.cp_to_tensor(model), model)), 3)
        100.0

    References:
        R. Bro and H. A. L. Kiers, "A new efficient method for determining the number of
        components in PARAFAC models", Journal of Chemometrics 17 (2003) 274–286.
    """
    x = _validate.as_tensor(x)
    cp_model = _cp_model_for(x, cp_model)
    return _corcondia(x, cp_model)


def _cp_model_for(x: Array, cp_model) -> CPTensor:
    """``cp_model`` checked against ``x`` and cast to its dtype."""
    if not isinstance(cp_model, CPTensor):
        raise TypeError(f"cp_model must be a jaxtd.CPTensor, got {type(cp_model).__name__}")
    weights, factors = cp_model
    if not isinstance(factors, Sequence) or len(factors) != x.ndim:
        n = len(factors) if isinstance(factors, Sequence) else type(factors).__name__
        raise ValueError(f"cp_model has {n} factors but x has {x.ndim} modes {tuple(x.shape)}")
    got = [tuple(np.shape(f)) for f in factors]
    rank = got[0][1] if len(got[0]) == 2 else None
    expected = [(i, rank) for i in x.shape]
    if rank is None or rank < 1 or got != expected or np.shape(weights) != (rank,):
        raise ValueError(
            f"cp_model shapes do not fit x {tuple(x.shape)}: expected weights (R,) and factors "
            f"{[(i, 'R') for i in x.shape]} with R >= 1, got weights {np.shape(weights)} and "
            f"factors {got}"
        )
    return CPTensor(
        jnp.asarray(weights, dtype=x.dtype), tuple(jnp.asarray(f, dtype=x.dtype) for f in factors)
    )


@partial(jax.jit, inline=True)
def _corcondia(x: Array, cp_model: CPTensor) -> Array:
    weights, factors = cp_normalize(cp_model)
    n_modes = len(factors)
    rank = weights.shape[0]
    # Same norm |w_r|^(1/N) for every column of component r, the sign on the first mode.
    scale = jnp.abs(weights) ** (1.0 / n_modes)
    sign = jnp.where(weights < 0, -1, 1).astype(x.dtype)
    scaled = [f * scale[None, :] for f in factors]
    scaled[0] = scaled[0] * sign[None, :]
    core = multi_mode_dot(x, [_pinv(b) for b in scaled])
    idx = jnp.arange(rank)
    target = jnp.zeros((rank,) * n_modes, x.dtype).at[(idx,) * n_modes].set(1)
    return 100 * (1 - jnp.sum((core - target) ** 2) / rank)


def _pinv(b: Array) -> Array:
    """Pseudo-inverse ``V S⁺ Uᵀ`` (``R × I``) of an ``I × R`` matrix from its thin SVD."""
    u, s, vt = jnp.linalg.svd(b, full_matrices=False)
    cutoff = max(b.shape) * jnp.finfo(b.dtype).eps * s[0]
    inv = jnp.where(s > cutoff, 1 / jnp.where(s > cutoff, s, 1), 0)
    return (vt.T * inv[None, :]) @ u.T
