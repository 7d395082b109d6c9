"""The grid of cases: byte and flop models, how jaxtd and its peers are run and timed.

:func:`run_case` gives the rows of one case. The measurement (two iteration counts of the
same compiled loop, round-robin with the peers) is described under ``ms/iter`` in the
package docstring (:mod:`jaxtd._bench`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from jaxtd._bench.machine import Clock, _timed, random_array

METHODS = ("cp_als", "tucker_hooi", "cp_opt", "tucker_opt")
PEER_OF = {"cp_als": "parafac", "tucker_hooi": "tucker"}  # jaxtd method -> TensorLy name
PEERS = ("tensorly", "pyttb")
STOP_AFTER_TWO = 1e30  # a finite tol that stops the loop after exactly two iterations


# ---------------------------------------------------------------------------------------
# Byte and flop models
# ---------------------------------------------------------------------------------------


def tucker_ranks(order: int, rank: int) -> tuple[int, ...]:
    return (rank,) * order


def bytes_per_iter(method: str, shape: Sequence[int], itemsize: int) -> int:
    """Bytes of ``x`` one iteration reads: two passes over ``x`` (see the package docstring)."""
    return 2 * math.prod(shape) * itemsize


def flops_per_iter(method: str, shape: Sequence[int], rank: int) -> int:
    """Dominant flops of one iteration: two GEMM passes over ``x``, ``2 · size(x) · R`` each."""
    return 4 * math.prod(shape) * rank


# ---------------------------------------------------------------------------------------
# Timing: jaxtd fitters and peers
# ---------------------------------------------------------------------------------------


def jaxtd_fitter(method: str, order: int, rank: int):
    """``fit(x, max_iter, tol) -> FitResult`` for one of :data:`METHODS`."""
    import jaxtd

    fn = getattr(jaxtd, method)
    r = rank if method.startswith("cp") else tucker_ranks(order, rank)
    return lambda x, max_iter, tol: fn(x, r, max_iter=max_iter, tol=tol)


class Timed:
    """A short and a long run of one fitter, timed together with others (see :func:`sample`).

    ``short()`` and ``long()`` run ``k_lo`` and ``k_hi`` iterations from the same start;
    ``s_per_iter`` is the difference of their best times over ``k_hi − k_lo``.
    """

    def __init__(self, short, long, k_lo: int, k_hi: int, **extra):
        self.runs = {"lo": short, "hi": long}
        self.k_lo, self.k_hi, self.extra = k_lo, k_hi, extra
        self.times: dict[str, list[float]] = {"lo": [], "hi": []}

    def result(self) -> dict:
        """Best-of and median-of s/iter, and the counts; ``resolved`` is False when the
        best times do not differ (the total per iteration is then reported)."""
        t_lo, t_hi = min(self.times["lo"]), min(self.times["hi"])
        dk = self.k_hi - self.k_lo
        resolved = dk > 0 and t_hi > t_lo
        sec = (t_hi - t_lo) / dk if resolved else t_hi / max(self.k_hi, 1)
        m_lo, m_hi = float(np.median(self.times["lo"])), float(np.median(self.times["hi"]))
        median = (m_hi - m_lo) / dk if dk > 0 and m_hi > m_lo else m_hi / max(self.k_hi, 1)
        return dict(s_per_iter=sec, ms_per_iter_median=median * 1e3, n_iter_lo=self.k_lo,
                    n_iter_hi=self.k_hi, resolved=resolved, warm_s=t_hi, **self.extra)  # fmt: skip


def sample(timers: Sequence[Timed], repeats: int) -> None:
    """Time every run of every timer ``repeats`` times, round-robin.

    On a shared machine a slow spell then hits jaxtd and its peers alike, so the
    ratios measured in one case stay fair; the best time of each run is kept.
    """
    for _ in range(repeats):
        for timer in timers:
            for name, run in timer.runs.items():
                timer.times[name].append(_timed(run))


def prepare_jaxtd(fit, x, n_hi: int) -> Timed:
    """Compile ``fit`` (timing the first call) and read back the two iteration counts.

    Both runs use the same compiled loop (``max_iter = n_hi``): ``tol = 0`` forces every
    iteration, ``tol = STOP_AFTER_TWO`` stops after two.
    """

    def run(tol):
        res = fit(x, n_hi, tol)
        res.rel_error.block_until_ready()
        return res

    t0 = time.perf_counter()
    res_hi = run(0.0)
    first = time.perf_counter() - t0
    res_lo = run(STOP_AFTER_TWO)
    return Timed(
        lambda: run(STOP_AFTER_TWO),
        lambda: run(0.0),
        int(res_lo.n_iter),
        int(res_hi.n_iter),
        first_call_s=first,
        rel_error=float(res_hi.rel_error),
    )


def prepare_peer(run: Callable[[int], object], target_s: float) -> Timed:
    """Choose the long count of ``run(k)`` (``k`` iterations) so that it takes ~``target_s``."""
    k_lo = 2
    t_lo = _timed(lambda: run(k_lo))
    t_4 = _timed(lambda: run(k_lo + 2))
    est = (t_4 - t_lo) / 2 if t_4 > t_lo else t_4 / (k_lo + 2)
    k_hi = k_lo + int(min(max(round(target_s / max(est, 1e-6)), 3), 200))
    return Timed(lambda: run(k_lo), lambda: run(k_hi), k_lo, k_hi)


def peer_runners(x_np: np.ndarray, method: str, rank: int, peers: Sequence[str]) -> dict:
    """``{library: run(k)}`` for the peers of ``method`` that are installed."""
    runners = {}
    order = x_np.ndim
    if method not in PEER_OF:
        return runners
    if "tensorly" in peers or "tensorly-jax" in peers:
        try:
            import tensorly as tl
            from tensorly.decomposition import parafac, tucker
        except ImportError:
            tl = None
        if tl is not None:

            def tensorly_run(backend, data):
                def run(k):
                    with tl.backend_context(backend):
                        if method == "cp_als":
                            out = parafac(data, rank, n_iter_max=k, tol=0.0, init="random",
                                          random_state=0)  # fmt: skip
                        else:
                            out = tucker(data, tucker_ranks(order, rank), n_iter_max=k, tol=0.0,
                                         init="random", random_state=0)  # fmt: skip
                        np.asarray(out[1][0])  # waits for an asynchronous backend
                    return out

                return run

            if "tensorly" in peers:
                runners["tensorly"] = tensorly_run("numpy", x_np)
            if "tensorly-jax" in peers:
                import jax

                runners["tensorly-jax"] = tensorly_run("jax", jax.device_put(x_np))
    if "pyttb" in peers:
        try:
            import pyttb as ttb
        except ImportError:
            ttb = None
        if ttb is not None:
            t = ttb.tensor(x_np)  # Fortran-ordered copy, made once

            def pyttb_run(k):
                import logging

                level = logging.root.level
                logging.root.setLevel(logging.ERROR)  # pyttb logs about copies and init
                try:
                    if method == "cp_als":
                        return ttb.cp_als(t, rank, stoptol=0.0, maxiters=k, printitn=0)
                    return ttb.tucker_als(t, list(tucker_ranks(order, rank)), stoptol=0.0,
                                          maxiters=k, printitn=0)  # fmt: skip
                finally:
                    logging.root.setLevel(level)

            runners["pyttb"] = pyttb_run
    return runners


# ---------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------


def grid_cases(args) -> tuple[list[dict], list[str]]:
    """The cases of the grid, and a note for each one skipped."""
    cases, skipped = [], []
    for order in args.orders:
        for size in args.sizes:
            if size**order > args.max_elements:
                skipped.append(f"{order}-way {size}: {size**order:.3g} elements > --max-elements")
                continue
            for rank in args.ranks:
                for method in args.methods:
                    if method.startswith("tucker") and rank > size:
                        skipped.append(f"{method} {order}-way {size} r{rank}: rank > size")
                        continue
                    cases.append(dict(method=method, order=order, size=size, rank=rank))
    return cases, skipped


def _iters_for(case: dict, itemsize: int, roof: dict, args) -> int:
    if args.iters:
        return args.iters
    shape = (case["size"],) * case["order"]
    est = max(
        bytes_per_iter(case["method"], shape, itemsize) / (roof["bandwidth_gb_s"] * 1e9),
        flops_per_iter(case["method"], shape, case["rank"]) / (roof["gemm_gflop_s"] * 1e9),
    )
    est = 3 * est + 100e-6  # jaxtd runs within a few times the roof; a floor for small cases
    if case["method"].endswith("opt"):
        est *= 2
    return int(min(max(round(args.target_s / est), 8), 400)) + 2


def run_case(case: dict, x_np: np.ndarray, roof: dict, args, clock: Clock, peers) -> list[dict]:
    """jaxtd's row for one case, and one row per peer in ``peers``."""
    import jax

    method, order, rank = case["method"], case["order"], case["rank"]
    x = jax.device_put(x_np)
    itemsize = x_np.dtype.itemsize
    n_hi = _iters_for(case, itemsize, roof, args)
    ours = prepare_jaxtd(jaxtd_fitter(method, order, rank), x, n_hi)
    base = dict(case, shape=list(x_np.shape), dtype=str(x_np.dtype))
    rows, timers = [], {"jaxtd": ours}
    for lib, run in peer_runners(x_np, method, rank, peers).items():
        try:
            timers[lib] = prepare_peer(run, args.target_s)
        except Exception as e:  # a peer's failure is reported, not fatal
            rows.append(dict(base, library=lib, error=f"{type(e).__name__}: {e}"))
    if len(timers) > 1:
        clock(f"    with {', '.join(list(timers)[1:])}, {args.repeats} rounds")
    sample(list(timers.values()), args.repeats)
    timing = ours.result()
    sec = timing.pop("s_per_iter")
    timing["compile_s"] = max(timing["first_call_s"] - timing["warm_s"], 0.0)
    nbytes = bytes_per_iter(method, x_np.shape, itemsize)
    flops = flops_per_iter(method, x_np.shape, rank)
    bound_s = nbytes / (roof["bandwidth_gb_s"] * 1e9)
    flop_bound_s = flops / (roof["gemm_gflop_s"] * 1e9)
    row = dict(
        base,
        library="jaxtd",
        ms_per_iter=sec * 1e3,
        **timing,
        bytes_per_iter=nbytes,
        flops_per_iter=flops,
        gb_s=nbytes / sec / 1e9,
        gflop_s=flops / sec / 1e9,
        bound_ms=bound_s * 1e3,
        x_bound=sec / bound_s,
        flop_bound_ms=flop_bound_s * 1e3,
        x_roofline=sec / max(bound_s, flop_bound_s),
        frac_of_bandwidth=bound_s / sec,
    )
    for lib, timer in list(timers.items())[1:]:
        peer = timer.result()
        peer_sec = peer.pop("s_per_iter")
        rows.append(dict(base, library=lib, ms_per_iter=peer_sec * 1e3, **peer,
                         jaxtd_speedup=peer_sec / sec))  # fmt: skip
    return [row] + rows


def case_tensor(order: int, size: int, dtype: str) -> np.ndarray:
    return random_array((size,) * order, dtype)
