"""The bounded iteration loop every iterative fitter runs: one ``lax.while_loop``.

Stopping rule: ``|rel_error_k − rel_error_{k−1}| < tol`` (converged), or ``max_iter``
iterations, or a non-finite value (in the error or in the iterate). The first
iteration is compared with ``+inf``, so at least two run.

``minimize`` drives any optax optimizer through the same loop, for the gradient fitters;
``impute_step`` turns a full-data sweep into an EM step for missing data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
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
    input_status: Array,
    dtype,
    checked: Callable[[Any], Any] = lambda state: state,
    progress: Callable[[Array, Array], None] | None = None,
    unroll: bool = False,
) -> tuple[Any, LoopStats]:
    """Run ``state, rel_error = step(state)`` until the stopping rule holds.

    ``checked(state)`` is the part of the state that must stay finite (all of it by
    default). ``progress(iteration, rel_error)``, when given, runs on the host after
    every iteration through ``jax.debug.callback``: one small transfer per iteration.
    ``unroll=True`` runs a ``lax.scan`` of exactly ``max_iter`` steps instead, each one
    a no-op once the rule holds, so that reverse-mode differentiation can go through
    every iteration (at ``max_iter`` steps of cost and memory).
    Returns the final state and its ``LoopStats``; ``rel_error`` is NaN when
    no iteration ran (non-finite input). When an iteration gives a NaN or Inf, the loop
    stops and returns the iterate before it (the start, if it was the first) with that
    iterate's error (NaN for the start); ``history`` records the non-finite value.
    """

    def cond(c: _Carry) -> Array:
        return (c.i < max_iter) & ~c.converged & c.finite

    def body(c: _Carry) -> _Carry:
        new_state, err = step(c.state)
        finite = jnp.isfinite(err) & all_finite(checked(new_state))
        converged = finite & (jnp.abs(err - c.rel_error) < tol)
        if progress is not None and not unroll:
            jax.debug.callback(progress, c.i + 1, err)
        # On a NaN/Inf, keep the last finite iterate and its error (the loop stops there).
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new_state, c.state)
        err_kept = jnp.where(finite, err, c.rel_error)
        return _Carry(c.i + 1, state, err_kept, c.history.at[c.i].set(err), converged, finite)

    init = _Carry(
        i=jnp.asarray(0, jnp.int32),
        state=state,
        rel_error=jnp.asarray(jnp.inf, dtype),
        history=jnp.full((max_iter,), jnp.nan, dtype),
        converged=jnp.asarray(False),
        finite=input_status == Status.SUCCESS,
    )
    if unroll:

        def masked_body(c: _Carry, _) -> tuple[_Carry, None]:
            active = cond(c)
            new = body(c)
            if progress is not None:
                lax.cond(active, lambda: jax.debug.callback(progress, new.i, new.rel_error),
                         lambda: None)  # fmt: skip
            return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, c), None

        c, _ = lax.scan(masked_body, init, length=max_iter)
    else:
        c = lax.while_loop(cond, body, init)
    rel_error = jnp.where(jnp.isfinite(c.rel_error), c.rel_error, jnp.nan)  # inf: none ran
    status = status_code(input_status, c.finite, c.converged)
    return c.state, LoopStats(rel_error, c.i, c.converged, c.history, status)


def status_code(input_status: Array, finite: Array, converged: Array) -> Array:
    """The ``Status`` code, as int32, from the input's status and the loop's final flags."""
    loop_status = jnp.where(
        ~finite, Status.NONFINITE_ITER, jnp.where(converged, Status.SUCCESS, Status.MAX_ITER)
    )
    return jnp.where(input_status != Status.SUCCESS, input_status, loop_status).astype(jnp.int32)


def impute_step(
    sweep: Callable[[Array, Any], Any], to_tensor: Callable[[Any], Array], x: Array, mask: Array
) -> Callable[[tuple[Any, Array]], tuple[tuple[Any, Array], Array]]:
    """EM for missing data: fill the unobserved entries from the current model, then sweep.

    The step's state is ``(model, dense model)``; its error is
    ``‖W ∗ (x − M)‖ / ‖W ∗ x‖`` over the observed entries (``x`` is zero elsewhere). EM
    needs the dense model, so this costs one reconstruction per sweep.
    """
    norm_x_sq = jnp.vdot(x, x)
    safe = jnp.where(norm_x_sq > 0, norm_x_sq, 1)

    def step(state):
        model, dense = state
        model = sweep(jnp.where(mask, x, dense), model)
        dense = to_tensor(model)
        residual = jnp.where(mask, x - dense, 0)
        return (model, dense), jnp.sqrt(jnp.vdot(residual, residual) / safe)

    return step


class _OptState(NamedTuple):
    params: Any
    opt_state: Any
    value: Array
    grad: Any


def minimize(
    loss: Callable[[Any], Array],
    params: Any,
    optimizer: optax.GradientTransformation,
    *,
    max_iter: int,
    tol: Array,
    input_status: Array,
    dtype,
    progress: Callable[[Array, Array], None] | None = None,
    unroll: bool = False,
) -> tuple[Any, LoopStats]:
    """Minimise ``loss(params) = ½ rel_error²`` with an optax optimizer inside :func:`iterate`.

    Each iteration applies one update and evaluates the loss and gradient at the new
    parameters, so ``history`` holds the error of each new iterate. Optimizers that
    keep the value and gradient in their state (L-BFGS and its line search) are driven
    through ``optax.value_and_grad_from_state``, which reuses them.
    """
    opt = optax.with_extra_args_support(optimizer)
    stores_value = optax.tree.get(jax.eval_shape(opt.init, params), "value") is not None
    if stores_value:
        value_and_grad = optax.value_and_grad_from_state(loss)
    else:

        def value_and_grad(p, state):
            return jax.value_and_grad(loss)(p)

    opt_state = opt.init(params)
    value, grad = value_and_grad(params, state=opt_state)

    def step(s: _OptState) -> tuple[_OptState, Array]:
        # optax mixes dtypes internally; keep a caller's strict promotion mode out of it.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = opt.update(
                s.grad, s.opt_state, s.params, value=s.value, grad=s.grad, value_fn=loss
            )
        new_params = optax.apply_updates(s.params, updates)
        value, grad = value_and_grad(new_params, state=opt_state)
        return _OptState(new_params, opt_state, value, grad), jnp.sqrt(2 * jnp.maximum(value, 0))

    state, stats = iterate(
        step,
        _OptState(params, opt_state, value, grad),
        max_iter=max_iter,
        tol=tol,
        input_status=input_status,
        dtype=dtype,
        checked=lambda s: (s.params, s.grad),
        progress=progress,
        unroll=unroll,
    )
    return state.params, stats
