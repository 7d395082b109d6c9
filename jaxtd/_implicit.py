r"""Gradients through a converged fit: implicit differentiation at the optimum.

A fit returns ``θ*`` with ``∇_θ L(θ*, x) = 0``. By the implicit function theorem

.. math::
    \partial θ^* / \partial x = −H^{-1}\, \partial^2 L / (\partial θ\, \partial x),
    \qquad H = \nabla^2_θ L(θ^*, x),

so a reverse-mode pass costs one linear solve with ``H`` (conjugate gradients on
Hessian-vector products, never a dense Hessian) instead of differentiating every
iteration of the loop. ``lax.custom_root`` wires this into JAX, for ``grad``, ``jvp``
and ``vmap``.

Gauge freedoms (CP column scaling, Tucker's invertible change of basis per mode) make
``H`` singular. Gauge-invariant quantities, such as any function of the reconstruction,
give right-hand sides orthogonal to the null space, so the system is consistent and its
solution is exact. A small ridge ``λ M`` (``M`` the block-diagonal Gauss–Newton metric,
also the CG preconditioner) keeps the solve well posed for gauge-dependent quantities
too (individual Tucker factors): their gradient is then the one along directions
orthogonal to the gauge.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from jaxtd._models import CPTensor, TuckerTensor, cp_normalize
from jaxtd._tensor import gram_hadamard, multi_mode_dot, psd_pinv, unfold

# A loss takes (params, data); a metric maker takes params and returns (M, M⁻¹) as maps.
Loss = Callable[[Any, Any], Array]
MetricMaker = Callable[[Any], tuple[Callable[[Any], Any], Callable[[Any], Any]]]


def _axpy(a, x, y):
    return jax.tree_util.tree_map(lambda xi, yi: a * xi + yi, x, y)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def at_optimum(loss: Loss, make_metric: MetricMaker, params: Any, data: Any) -> Any:
    """``params`` (a minimiser of ``loss(·, data)``), differentiable in ``data`` at the optimum.

    The forward value is ``params`` unchanged, so no iteration of the fit is
    differentiated. The backward pass solves ``(H + λ M) w = ḡ`` by conjugate gradients
    preconditioned with ``M⁻¹`` (``λ`` is ``1e-10`` in float64 and ``1e-5`` in float32,
    relative to ``M``), then returns ``−(∂²L/∂θ∂data)ᵀ w``. ``params`` get no
    cotangent: the fit's start does not matter at the optimum.
    """
    return params


def _at_optimum_fwd(loss, make_metric, params, data):
    return params, (params, data)


def _at_optimum_bwd(loss, make_metric, residuals, cotangent):
    params, data = residuals
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    ridge = 1e-10 if dtype == jnp.float64 else 1e-5
    cg_tol = 1e-11 if dtype == jnp.float64 else 1e-6
    grad_params = jax.grad(loss)
    metric, metric_inverse = make_metric(params)

    def ridged_hessian(v):
        hv = jax.jvp(lambda p: grad_params(p, data), (params,), (v,))[1]
        return _axpy(ridge, metric(v), hv)

    w = jax.scipy.sparse.linalg.cg(ridged_hessian, cotangent, tol=cg_tol, M=metric_inverse)[0]
    _, mixed_vjp = jax.vjp(lambda d: grad_params(params, d), data)
    (data_cotangent,) = mixed_vjp(w)
    data_cotangent = jax.tree_util.tree_map(
        lambda c: -c if jnp.issubdtype(c.dtype, jnp.inexact) else c, data_cotangent
    )
    return jax.tree_util.tree_map(jnp.zeros_like, params), data_cotangent


at_optimum.defvjp(_at_optimum_fwd, _at_optimum_bwd)


def _cp_metric(factors):
    """Gauss–Newton diagonal blocks ``δA_n ↦ δA_n (∗_{m≠n} A_mᵀA_m)`` and their inverses."""
    grams = [f.T @ f for f in factors]
    blocks = [gram_hadamard(grams[:n] + grams[n + 1 :]) for n in range(len(factors))]
    inverses = [psd_pinv(b) for b in blocks]
    return (
        lambda v: tuple(d @ b for d, b in zip(v, blocks)),
        lambda v: tuple(d @ b for d, b in zip(v, inverses)),
    )


def _scaled_identity_metric(params):
    """``c·I`` per leaf, ``c`` the mean square of the leaf plus one: a scale-aware fallback."""
    scale = jax.tree_util.tree_map(lambda p: jnp.mean(p * p) + 1, params)
    return (
        lambda v: jax.tree_util.tree_map(jnp.multiply, scale, v),
        lambda v: jax.tree_util.tree_map(jnp.divide, v, scale),
    )


def _tucker_metric(tucker: TuckerTensor):
    """Gauss–Newton diagonal blocks: ``G ↦ G ×_n U_nᵀU_n`` for the core and
    ``δU_n ↦ δU_n G_(n) (⊗_{m≠n} U_mᵀU_m) G_(n)ᵀ`` for each factor; and their inverses."""
    core, factors = tucker
    grams = [f.T @ f for f in factors]
    blocks = []
    for n in range(core.ndim):
        others = [m for m in range(core.ndim) if m != n]
        weighted = multi_mode_dot(core, [grams[m] for m in others], others)
        blocks.append(unfold(core, n) @ unfold(weighted, n).T)

    def apply(core_mats, factor_mats, v):
        return TuckerTensor(
            multi_mode_dot(v.core, core_mats), tuple(d @ b for d, b in zip(v.factors, factor_mats))
        )

    gram_inverses = [psd_pinv(g) for g in grams]
    block_inverses = [psd_pinv(b) for b in blocks]
    return partial(apply, grams, blocks), partial(apply, gram_inverses, block_inverses)


def loop_input(x: Array, diff: str) -> Array:
    """What the fitting loop sees: ``x`` without derivatives when they come from the optimum."""
    return jax.lax.stop_gradient(x) if diff == "implicit" else x


def residual_loss(normalized_loss: Callable, params: Any, data: tuple[Array, Array | None]):
    """``½ ‖W ∗ (x − M(params))‖²``, ``data = (x, mask)``, from a fitter's loss that is
    normalised by ``‖W ∗ x‖²`` (``normalized_loss(x_obs, mask, ‖W∗x‖², params)``)."""
    x, mask = data
    x_obs = x if mask is None else jnp.where(mask, x, 0)
    norm_x_sq = jnp.vdot(x_obs, x_obs)
    return normalized_loss(x_obs, mask, norm_x_sq, params) * norm_x_sq


def _squared(roots):
    return tuple(b * b for b in roots)


def _loss_of_squares(loss: Loss, roots, data) -> Array:
    return loss(_squared(roots), data)


def cp_at_optimum(
    normalized_loss: Callable, model: CPTensor, data: Any, nonnegative: bool
) -> CPTensor:
    """A fitted CP model, differentiable in ``data = (x, mask)`` at the optimum of the
    :func:`residual_loss` of ``normalized_loss`` (a loss of the factors, unit weights).

    The weights are spread over the factors (``A_n w^{1/N}``), the optimum is tied to
    ``loss``, and the model is normalised again: that removes the scaling gauge, so the
    backward system is consistent. With ``nonnegative`` the parameters are ``B`` with
    ``A = B ∗ B``: a KKT point of the constrained problem is a stationary point in ``B``.
    """
    loss = partial(residual_loss, normalized_loss)
    weights, factors = model
    spread = jnp.abs(weights) ** (1 / len(factors))
    factors = tuple(f * spread[None, :] for f in factors)
    if nonnegative:
        roots = tuple(jnp.sqrt(jnp.maximum(f, 0)) for f in factors)
        roots = at_optimum(partial(_loss_of_squares, loss), _scaled_identity_metric, roots, data)
        factors = _squared(roots)
    else:
        factors = at_optimum(loss, _cp_metric, factors, data)
    return cp_normalize(CPTensor(jnp.ones_like(weights), tuple(factors)))


def tucker_at_optimum(normalized_loss: Callable, model: TuckerTensor, data: Any) -> TuckerTensor:
    """A fitted Tucker model, differentiable in ``data = (x, mask)`` at the optimum of the
    :func:`residual_loss` of ``normalized_loss``."""
    loss = partial(residual_loss, normalized_loss)
    return at_optimum(loss, _tucker_metric, TuckerTensor(model.core, tuple(model.factors)), data)
