"""Side-by-side runs of several fitters on the same data, from the same start."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxtd import _validate
from jaxtd._cp_als import cp_als
from jaxtd._cp_opt import cp_opt
from jaxtd._result import FitResult, Status
from jaxtd._tucker_hooi import tucker_hooi
from jaxtd._tucker_opt import tucker_opt

_FITTERS = {
    "cp": {"als": cp_als, "opt": cp_opt},
    "tucker": {"hooi": tucker_hooi, "opt": tucker_opt},
}


class MethodRun(NamedTuple):
    """One method's outcome in a :class:`Comparison`: host numbers, and the full ``result``."""

    method: str
    rel_error: float
    fit: float
    n_iter: int
    converged: bool
    status: str
    compile_s: float
    run_s: float
    s_per_iter: float
    history: np.ndarray
    result: FitResult


class Comparison:
    """The runs of :func:`compare`, one per method; prints as a table.

    Iterate over it for the :class:`MethodRun` rows, or index it by method name.
    """

    def __init__(self, runs: Sequence[MethodRun]):
        self.runs = tuple(runs)

    def __iter__(self):
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __repr__(self) -> str:
        return f"Comparison(methods={[r.method for r in self.runs]})"

    def __str__(self) -> str:
        head = (
            f"{'method':<12}{'fit':>9}{'rel_error':>11}{'iters':>7}{'converged':>11}"
            f"{'compile s':>11}{'run s':>9}{'ms/iter':>9}"
        )
        lines = [head]
        for r in self.runs:
            lines.append(
                f"{r.method:<12}{r.fit:9.5f}{r.rel_error:11.3e}{r.n_iter:7d}{str(r.converged):>11}"
                f"{r.compile_s:11.3f}{r.run_s:9.3f}{r.s_per_iter * 1e3:9.3f}"
            )
        return "\n".join(lines)

    def __getitem__(self, method: str) -> MethodRun:
        """``comparison["als"]`` is that method's run."""
        for r in self.runs:
            if r.method == method:
                return r
        raise KeyError(f"no method {method!r}; have {[r.method for r in self.runs]}")

    def to_dict(self) -> dict:
        """``{method: {field: value}}``, histories as lists cut at ``n_iter``, no ``result``."""
        out = {}
        for r in self.runs:
            row = r._asdict()
            row.pop("method")
            row.pop("result")
            row["history"] = r.history[: r.n_iter].tolist()
            out[r.method] = row
        return out


def compare(
    x,
    rank,
    methods: Sequence[str] = ("als", "opt"),
    *,
    model: str = "cp",
    optimizers: Mapping | None = None,
    **fit_kwargs,
) -> Comparison:
    """Fit ``x`` with several methods from the same start and report them side by side.

    Each method is called twice with the same arguments: the first call compiles (its
    excess over the second is ``compile_s``), the second is timed (``run_s``, and
    ``s_per_iter = run_s / n_iter``). All methods share ``init``, ``key``, ``max_iter``,
    ``tol`` and ``mask`` from ``fit_kwargs``, so with a string ``init`` they start from
    the same model and stop by the same rule.

    Args:
        x: the tensor.
        rank: the rank, as the fitters take it.
        methods: names among ``"als"``/``"hooi"`` (the ALS-type fitter of ``model``),
            ``"opt"`` (the gradient fitter with its default L-BFGS), and any key of
            ``optimizers`` (the gradient fitter with that optax optimizer).
        model: ``"cp"`` or ``"tucker"``.
        optimizers: ``{name: optax.GradientTransformation}`` for extra gradient methods,
            e.g. ``{"adam": optax.adam(0.1)}``.
        **fit_kwargs: passed to every fitter.

    Returns:
        A :class:`Comparison`; ``print`` it, index it by method name, or ``to_dict()`` it.
        It runs eagerly (it times things), so it is not for use inside ``jit``.

    Example:
        >>> import optax, jaxtd
        >>> x = jaxtd.datasets.load_aminoacids().tensor
        >>> table = jaxtd.compare(x, 3, ("als", "opt"), max_iter=300)
        >>> abs(table["als"].fit - table["opt"].fit) < 1e-3
        True
    """
    model = _validate.choice(model, "model", tuple(_FITTERS))
    fitters = _FITTERS[model]
    optimizers = dict(optimizers or {})
    runs = []
    for method in methods:
        if method in fitters:
            fit, extra = fitters[method], {}
        elif method in optimizers:
            fit, extra = fitters["opt"], {"optimizer": optimizers[method]}
        else:
            known = sorted(fitters) + sorted(optimizers)
            raise ValueError(f"unknown method {method!r} for model {model!r}; known: {known}")
        runs.append(
            _timed_run(method, lambda fit=fit, extra=extra: fit(x, rank, **extra, **fit_kwargs))
        )
    return Comparison(runs)


def _timed_run(method: str, fit) -> MethodRun:
    t0 = time.perf_counter()
    fit().rel_error.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = fit()
    res.rel_error.block_until_ready()
    run_s = time.perf_counter() - t0
    n_iter = int(res.n_iter)
    return MethodRun(
        method=method,
        rel_error=float(res.rel_error),
        fit=1 - float(res.rel_error),
        n_iter=n_iter,
        converged=bool(res.converged),
        status=Status.describe(res.status),
        compile_s=max(first - run_s, 0.0),
        run_s=run_s,
        s_per_iter=run_s / max(n_iter, 1),
        history=np.asarray(res.history),
        result=res,
    )
