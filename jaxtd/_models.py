"""The two models, their dense forms, and their norms and inner products.

Norms and inner products never build the dense model: for a CP model
``M = [[w; A_0, ..., A_{N-1}]]``

    ‖M‖² = wᵀ (G_0 ⊙ ... ⊙ G_{N-1}) w,      G_n = A_nᵀ A_n,
    ⟨x, M⟩ = Σ_r w_r Σ_i MTTKRP(x, n)[i, r] A_n[i, r],

and for a Tucker model ``T = G ×_0 U_0 ... ×_{N-1} U_{N-1}``

    ⟨x, T⟩ = ⟨x ×_0 U_0ᵀ ... ×_{N-1} U_{N-1}ᵀ, G⟩,   ‖T‖² = ⟨G, G ×_n (U_nᵀ U_n)⟩.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

from jaxtd._tensor import factor_gram, gram_hadamard, khatri_rao, mttkrp, multi_mode_dot


class CPTensor(NamedTuple):
    """CP (PARAFAC) model ``Σ_r w_r a⁽⁰⁾_r ∘ ... ∘ a⁽ᴺ⁻¹⁾_r``.

    Attributes:
        weights: ``(R,)``.
        factors: tuple of ``N`` arrays ``(I_n, R)``.
    """

    weights: Array
    factors: tuple[Array, ...]


class TuckerTensor(NamedTuple):
    """Tucker model ``G ×_0 U_0 ×_1 U_1 ... ×_{N-1} U_{N-1}``.

    Attributes:
        core: ``(R_0, ..., R_{N-1})``.
        factors: tuple of ``N`` arrays ``(I_n, R_n)``.
    """

    core: Array
    factors: tuple[Array, ...]


def cp_to_tensor(cp: CPTensor) -> Array:
    """Dense tensor of a CP model, ``(I_0, ..., I_{N-1})``.

    Computed as ``(khatri_rao(A_0..A_{N-2}) * w) @ A_{N-1}ᵀ``: the largest
    intermediate is ``size / I_{N-1} * R``.

    Example:
        >>> import jax.numpy as jnp
        >>> cp = CPTensor(jnp.ones(2), (jnp.ones((3, 2)), jnp.ones((4, 2))))
        >>> cp_to_tensor(cp).shape
        (3, 4)
    """
    weights, factors = cp
    shape = tuple(f.shape[0] for f in factors)
    return ((khatri_rao(factors[:-1]) * weights[None, :]) @ factors[-1].T).reshape(shape)


def tucker_to_tensor(tucker: TuckerTensor) -> Array:
    """Dense tensor of a Tucker model: ``G ×_0 U_0 ... ×_{N-1} U_{N-1}``."""
    core, factors = tucker
    return multi_mode_dot(core, factors)


def cp_normalize(cp: CPTensor) -> CPTensor:
    """Scale every factor column to unit norm, carrying the scale in the weights.

    Zero columns stay zero and give a zero weight (no NaN).
    """
    weights, factors = cp
    out = []
    for f in factors:
        sq = jnp.sum(f * f, axis=0)
        # sqrt through where, so that a zero column has a zero (not NaN) derivative
        norms = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)
        out.append(f / jnp.where(sq > 0, norms, 1)[None, :])
        weights = weights * norms
    return CPTensor(weights, tuple(out))


def cp_norm_sq(cp: CPTensor) -> Array:
    """Squared Frobenius norm ``wᵀ (⊙_n A_nᵀ A_n) w`` of a CP model, in ``O(Σ I_n R²)``.

    Smooth everywhere, unlike :func:`cp_norm`, so losses use this one.
    """
    weights, factors = cp
    return weights @ gram_hadamard([factor_gram(f) for f in factors]) @ weights


def cp_norm(cp: CPTensor) -> Array:
    """Frobenius norm of a CP model: ``sqrt(cp_norm_sq(cp))``."""
    return jnp.sqrt(jnp.maximum(cp_norm_sq(cp), 0))


def cp_inner(x: Array | CPTensor, cp: CPTensor) -> Array:
    """Inner product ``⟨x, M⟩`` of a dense tensor or CP model ``x`` with a CP model ``M``.

    Dense ``x``: one MTTKRP, ``O(size(x) R)``. CP ``x``: ``w_xᵀ (⊙_n A_nᵀ B_n) w``.
    """
    weights, factors = cp
    if isinstance(x, CPTensor):
        cross = gram_hadamard([a.T @ b for a, b in zip(x.factors, factors)])
        return x.weights @ cross @ weights
    last = x.ndim - 1
    return jnp.sum(mttkrp(x, factors, last) * factors[last] * weights[None, :])


def tucker_norm_sq(tucker: TuckerTensor) -> Array:
    """Squared Frobenius norm of a Tucker model from its core and factor Grams.

    Factors need not be orthonormal: ``‖T‖² = ⟨G, G ×_n (U_nᵀ U_n)⟩``.
    """
    core, factors = tucker
    return jnp.vdot(core, multi_mode_dot(core, [f.T @ f for f in factors]))


def tucker_norm(tucker: TuckerTensor) -> Array:
    """Frobenius norm of a Tucker model: ``sqrt(tucker_norm_sq(tucker))``."""
    return jnp.sqrt(jnp.maximum(tucker_norm_sq(tucker), 0))


def tucker_inner(x: Array | TuckerTensor, tucker: TuckerTensor) -> Array:
    """Inner product ``⟨x, T⟩`` of a dense tensor or Tucker model with a Tucker model.

    Dense ``x``: ``⟨x ×_n U_nᵀ, G⟩``. Tucker ``x``: ``⟨G_x ×_n (V_nᵀ U_n)ᵀ..., G⟩``.
    """
    core, factors = tucker
    if isinstance(x, TuckerTensor):
        cross = [v.T @ u for v, u in zip(x.factors, factors)]  # (R_x, R)
        return jnp.vdot(multi_mode_dot(x.core, cross, transpose=True), core)
    return jnp.vdot(multi_mode_dot(x, factors, transpose=True), core)
