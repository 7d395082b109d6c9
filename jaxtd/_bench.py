r"""Benchmark suite behind ``python -m jaxtd bench``: speed, bandwidth, batching, memory, compile.

Run it as::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m jaxtd bench            # default grid
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m jaxtd bench --quick    # smoke, < 1 min

(unsetting the two OpenBLAS variables lets the NumPy-based peers run at their best; the
command warns when they are set). It prints a table on stdout, progress on stderr, and
writes every number to ``--json`` (default ``bench.json``) and a plot to ``--plot``
(default ``bench.png``, when matplotlib is installed).

What each column means
----------------------
A *case* is a cubic tensor ``I × ... × I`` of order ``N`` (uniform random entries, seed 0),
a rank ``R`` (the same Tucker rank in every mode) and a dtype.

* ``compile s``: the first call minus a warm call of the same shapes.
* ``ms/iter``: the best of ``--repeats`` warm runs of ``n_hi`` iterations, minus the best
  of as many runs of 2 iterations, divided by ``n_hi − 2``; init and call overhead
  cancel. Both counts run the *same* compiled loop: ``max_iter`` is ``n_hi``, and
  ``tol = 0`` forces every iteration while ``tol = 1e30`` stops it after exactly two (the
  first iteration is compared with ``+inf``); the counts are read back from
  ``FitResult.n_iter``. ``n_hi`` is chosen from the roofline so that one timed run takes
  about ``--target-s`` (or set with ``--iters``). The runs of jaxtd and of its peers in a
  case alternate (round-robin), so a slow spell of a shared machine hits them alike.
  Where the difference is not positive (timer noise on tiny cases) the total time per
  iteration is reported instead, flagged ``(unresolved)`` and ``resolved: false``.
* ``median``: the same difference between the median runs. A median far above the best
  (flagged ``unstable``) means that most runs are much slower than the lucky ones: a
  busy machine, or jaxlib's LAPACK fighting XLA for the cores (see ``--lapack-threads``).
* ``GB/s``: bytes of ``x`` that one iteration must read, over ``ms/iter``. Byte model:
  **two reads of x per iteration** for every jaxtd fitter and every order.
  ``cp_als`` and ``tucker_hooi`` split the modes in two blocks (a dimension tree): one
  pass over ``x`` contracts the modes outside the first block and serves all of its modes,
  one more pass serves the second block. ``cp_opt``/``tucker_opt`` read ``x`` once for the
  loss (one MTTKRP or projection) and once in its reverse pass, counted for one loss and
  gradient evaluation per step (L-BFGS's line search usually accepts its first step;
  extra evaluations show up as lower GB/s). Intermediates (``size(x) · R / I`` per block)
  and factors are not counted.
* ``GFLOP/s``: dominant flops over ``ms/iter``. Flop model: ``4 · size(x) · R`` per
  iteration, i.e. the two passes over ``x``, each a GEMM of ``size(x) · R`` multiply-adds
  (for Tucker ``R`` is the rank of the mode contracted first in each pass; for the gradient
  fitters, the forward contraction and the one in the reverse pass). Lower-order terms
  (``O(size(x) · R² / I)``, the ``R × R`` solves, the ``eigh`` of Gram matrices) are not
  counted.
* ``x bound``: ``ms/iter`` over the memory-bandwidth bound, ``bytes per iteration /
  bandwidth``, where the bandwidth is measured in the same run by jitted streaming
  kernels (``jnp.sum(x)`` and ``x @ v`` over ``--bandwidth-mb`` of data, best of
  several). 1.0 would be a fitter that only streams ``x``; the ``GEMM GFLOP/s`` line gives
  the compute roof for reference (a large square float matmul).
* Peers (TensorLy NumPy backend ``parafac``/``tucker``, pyttb ``cp_als``/``tucker_als``,
  optionally TensorLy's JAX backend) run the same tensor, rank and dtype for a fixed
  number of iterations (``tol=0``, random init); their ms/iter is the same difference of
  two iteration counts, and ``speed-up`` is the peer's ms/iter over jaxtd's. TensorLy
  skips its error computation when ``tol=0``; pyttb computes in float64 factors.

Fixed experiments
-----------------
* **batched**: ``jax.jit(jax.vmap(cp_als))`` fits 1024 tensors ``10 × 10 × 10`` at rank 3,
  50 iterations each (``tol=0``, svd init), against a Python loop of TensorLy ``parafac``
  on the first 64 of the same tensors (same iterations and init), scaled by 1024/64.
* **memory**: in a fresh subprocess, ``cp_als`` on a ``400³`` float32 tensor at rank 20 is
  compiled ahead of time, then ``x`` is created and the process's peak resident memory is
  reset (``/proc/self/clear_refs``) before one run; the peak minus the resident memory
  before ``x`` existed is compared with ``2 × (x + factors)``. XLA's own account
  (``compiled.memory_analysis()``: arguments + outputs + temporaries) is reported beside it.
  On a GPU the device allocator's peak is used instead.
* **compile**: in a fresh subprocess, the first call of a 3-way ``cp_als`` (trace, lower,
  compile, run) minus a warm call, and the number of XLA compilations a second call with
  new data and a new ``tol`` triggers (from ``jax.monitoring`` compile events; must be 0).

LAPACK threads
--------------
On CPU, jaxlib runs ``eigh``, ``qr``, Cholesky and triangular solves through SciPy's
LAPACK, whose OpenBLAS is multi-threaded. Called from inside a compiled loop, a call big
enough to be threaded (the ``eigh`` of a ``100 × 100`` Gram matrix in HOOI, those of the
svd start) then competes with XLA's own worker threads for the same cores and can take
tens of times longer. ``--lapack-threads 1`` limits that library (only it: NumPy's own
OpenBLAS, used by the NumPy-based peers, keeps its threads, unless the two are one library,
which the command then says) through threadpoolctl, for the whole run; the report records
which library it is and its thread count.

Targets (printed PASS/FAIL): ``cp_als`` ≥ 4× TensorLy at ``200³`` rank 10 float32;
``tucker_hooi`` ≥ 5× TensorLy at ``200³`` ranks ``(10, 10, 10)``; batched ≥ 50×; compile
≤ 3 s with no recompilation; peak memory < ``2 × (x + factors)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

METHODS = ("cp_als", "tucker_hooi", "cp_opt", "tucker_opt")
PEER_OF = {"cp_als": "parafac", "tucker_hooi": "tucker"}  # jaxtd method -> TensorLy name
PEERS = ("tensorly", "pyttb")
EXPERIMENTS = ("batched", "memory", "compile", "targets")
STOP_AFTER_TWO = 1e30  # a finite tol that stops the loop after exactly two iterations
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

DEFAULT = dict(sizes="25,50,100,200", orders="3,4", ranks="5,10", max_elements=2e7, target_s=0.2)
QUICK = dict(sizes="30", orders="3", ranks="5", max_elements=2e7, target_s=0.05)

# The targets, and the cases they are read from.
TARGET_CASE = dict(order=3, size=200, rank=10, dtype="float32")
TARGET_SPEEDUP = {"cp_als": 4.0, "tucker_hooi": 5.0}
TARGET_BATCHED = 50.0
TARGET_COMPILE_S = 3.0
TARGET_MEMORY = 2.0


class Clock:
    """Progress lines on stderr: ``[  12.3 s] message``."""

    def __init__(self, quiet: bool = False):
        self.start = time.perf_counter()
        self.quiet = quiet

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed():7.1f} s] {message}", file=sys.stderr, flush=True)


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be ints like 50,100, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{what} must be ints >= 1, got {text!r}")
    return values


def _parse_choices(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    values = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {unknown}; choose among {', '.join(allowed)}"
        )
    return values


# ---------------------------------------------------------------------------------------
# Machine, bandwidth and compute roof
# ---------------------------------------------------------------------------------------


def machine_info() -> dict:
    """Device, versions and the environment that affects the NumPy peers."""
    import jax

    dev = jax.devices()[0]
    info = dict(
        device_kind=dev.device_kind,
        platform=dev.platform,
        device_count=jax.device_count(),
        jax_version=jax.__version__,
        numpy_version=np.__version__,
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        x64=bool(jax.config.jax_enable_x64),
        openblas_env={v: os.environ[v] for v in OPENBLAS_VARS if v in os.environ},
    )
    for name in ("tensorly", "pyttb", "optax", "scipy"):
        try:
            info[f"{name}_version"] = __import__(name).__version__
        except Exception:  # not installed (or broken): recorded as absent
            info[f"{name}_version"] = None
    pools, shared = lapack_pools()
    info["jaxlib_lapack"] = [
        {k: p.get(k) for k in ("filepath", "internal_api", "version", "num_threads")} for p in pools
    ]
    info["jaxlib_lapack_shared_with_numpy"] = shared
    return info


def lapack_pools() -> tuple[list[dict], bool]:
    """The BLAS libraries behind jaxlib's CPU LAPACK kernels, as threadpoolctl reports them.

    jaxlib calls LAPACK (``eigh``, ``qr``, Cholesky, triangular solves) through SciPy's
    ``cython_lapack``, so these are SciPy's BLAS libraries; when SciPy has none of its own
    (a shared system or conda OpenBLAS) every BLAS library is returned and the second
    value is True. ``([], False)`` without threadpoolctl.

    Why it matters: a multi-threaded OpenBLAS called from inside an XLA computation
    competes for the cores with XLA's own worker threads. On CPU, LAPACK calls big enough
    to be threaded (an ``eigh`` of ``100 × 100``, a triangular solve against ``200 × 10``)
    then run many times slower; ``--lapack-threads 1`` shows the difference.
    """
    try:
        import scipy.linalg.cython_lapack  # noqa: F401  (loads SciPy's BLAS)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return [], False
    import scipy

    blas = [p for p in ThreadpoolController().info() if p.get("user_api") == "blas"]
    site = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    own = [
        p for p in blas if os.path.abspath(p["filepath"]).startswith(os.path.join(site, "scipy"))
    ]
    return (own, False) if own else (blas, bool(blas))


def limit_lapack_threads(n: int | None):
    """A context that limits the BLAS threads of jaxlib's LAPACK (see :func:`lapack_pools`)."""
    import contextlib

    pools, _ = lapack_pools()
    if n is None or not pools:
        return contextlib.nullcontext()
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(filepath=[p["filepath"] for p in pools]).limit(limits=n)


def measure_bandwidth(nbytes: int, dtype: str = "float32", repeats: int = 7) -> dict:
    """Streaming read bandwidth in GB/s: jitted ``jnp.sum(x)`` and ``x @ v``, best of each.

    ``x`` holds ``nbytes`` (choose it well above the last-level cache). Each kernel reads
    ``x`` once and writes almost nothing, so ``nbytes / time`` is the read bandwidth.
    """
    import jax
    import jax.numpy as jnp

    cols = 1024
    rows = max(1, nbytes // (np.dtype(dtype).itemsize * cols))
    x = jax.device_put(random_array((rows, cols), dtype, seed=1))
    v = jnp.ones((cols,), dtype)
    kernels = {"sum": (jax.jit(jnp.sum), (x,)), "matvec": (jax.jit(jnp.matmul), (x, v))}
    out = {}
    for name, (fn, args) in kernels.items():
        call = lambda fn=fn, args=args: fn(*args).block_until_ready()  # noqa: E731
        call()
        best = min(_timed(call) for _ in range(repeats))
        out[name] = x.nbytes / best / 1e9
    return dict(gb_s=max(out.values()), kernels_gb_s=out, bytes=int(x.nbytes))


def measure_gemm(n: int, dtype: str = "float32", repeats: int = 5) -> float:
    """GFLOP/s of a jitted ``n × n`` matmul, best of ``repeats``: the compute roof."""
    import jax

    a = jax.device_put(random_array((n, n), dtype, seed=2))
    mm = jax.jit(lambda a: a @ a)
    mm(a).block_until_ready()
    best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------------------------------
# Byte and flop models
# ---------------------------------------------------------------------------------------


def tucker_ranks(order: int, rank: int) -> tuple[int, ...]:
    return (rank,) * order


def bytes_per_iter(method: str, shape: Sequence[int], itemsize: int) -> int:
    """Bytes of ``x`` one iteration reads: two passes over ``x`` (see the module docstring)."""
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
        frac_of_bandwidth=bound_s / sec,
    )
    for lib, timer in list(timers.items())[1:]:
        peer = timer.result()
        peer_sec = peer.pop("s_per_iter")
        rows.append(dict(base, library=lib, ms_per_iter=peer_sec * 1e3, **peer,
                         jaxtd_speedup=peer_sec / sec))  # fmt: skip
    return [row] + rows


def random_array(shape, dtype: str, seed: int = 0) -> np.ndarray:
    """Uniform ``[0, 1)`` entries, drawn directly in ``dtype`` (no float64 copy)."""
    return np.random.default_rng(seed).random(shape, dtype=np.dtype(dtype).type)


def case_tensor(order: int, size: int, dtype: str) -> np.ndarray:
    return random_array((size,) * order, dtype)


# ---------------------------------------------------------------------------------------
# Batched fits
# ---------------------------------------------------------------------------------------


def bench_batched(args, clock: Clock) -> dict:
    """``vmap`` of ``cp_als`` over ``--batch`` tensors against a loop of TensorLy ``parafac``.

    Also a Python loop of warm single ``cp_als`` calls (the dispatch cost a loop pays).
    The three are timed round-robin, best of ``--repeats``; the loops run over the first
    ``--batch-loop`` tensors and are scaled to the whole batch.
    """
    import jax

    import jaxtd

    n, shape, rank, iters = args.batch, (10, 10, 10), 3, 50
    n_loop = min(args.batch_loop, n)
    xs_np = random_array((n, *shape), args.dtype, seed=3)
    xs = jax.device_put(xs_np)
    fit = jax.jit(jax.vmap(lambda x: jaxtd.cp_als(x, rank, max_iter=iters, tol=0.0)))

    def run_batch():
        res = fit(xs)
        res.rel_error.block_until_ready()
        return res

    def single(x):
        return jaxtd.cp_als(x, rank, max_iter=iters, tol=0.0).rel_error.block_until_ready()

    first = _timed(run_batch)
    singles = [xs[i] for i in range(n_loop)]
    single(singles[0])
    runs = {"vmap": run_batch, "jaxtd_loop": lambda: [single(x) for x in singles]}
    models: list = []
    tl = None
    if "tensorly" in args.peers:
        try:
            import tensorly as tl
            from tensorly.decomposition import parafac
        except ImportError:
            tl = None
    if tl is not None:

        def loop():
            models.clear()
            with tl.backend_context("numpy"):
                for i in range(n_loop):
                    models.append(parafac(xs_np[i], rank, n_iter_max=iters, tol=0.0))

        runs["tensorly_loop"] = loop
        clock(f"    with loops over {n_loop} of the {n} tensors (jaxtd, TensorLy), scaled")
    best = {k: float("inf") for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            best[k] = min(best[k], _timed(fn))
    res = run_batch()
    warm = best["vmap"]
    out = dict(
        n_fits=n,
        shape=list(shape),
        rank=rank,
        iterations=iters,
        dtype=args.dtype,
        jaxtd_compile_s=max(first - warm, 0.0),
        jaxtd_s=warm,
        jaxtd_ms_per_fit=warm / n * 1e3,
        jaxtd_all_iterations=bool(np.all(np.asarray(res.n_iter) == iters)),
        jaxtd_median_rel_error=float(np.median(np.asarray(res.rel_error))),
        jaxtd_loop_ms_per_fit=best["jaxtd_loop"] / n_loop * 1e3,
        loop_fits_timed=n_loop,
    )
    if tl is not None:
        t_fits = best["tensorly_loop"]
        errs = [
            np.linalg.norm(xs_np[i] - tl.cp_to_tensor(cp)) / np.linalg.norm(xs_np[i])
            for i, cp in enumerate(models)
        ]
        out.update(
            tensorly_loop_fits_timed=n_loop,
            tensorly_loop_s_timed=t_fits,
            tensorly_ms_per_fit=t_fits / n_loop * 1e3,
            tensorly_s_scaled=t_fits * n / n_loop,
            tensorly_median_rel_error=float(np.median(errs)),
            speedup=t_fits * n / n_loop / warm,
        )
    return out


# ---------------------------------------------------------------------------------------
# Subprocess experiments: memory and compile time
# ---------------------------------------------------------------------------------------


def _current_rss() -> int:
    """Resident bytes now (Linux ``/proc/self/statm``), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return _maxrss()


def _maxrss() -> int:
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _hwm() -> int | None:
    """Peak resident bytes since the last reset (Linux ``VmHWM``), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_child(spec: dict) -> dict:
    import gc

    import jax
    import jax.numpy as jnp

    import jaxtd

    size, rank, dtype, init = spec["size"], spec["rank"], spec["dtype"], spec["init"]
    shape = (size,) * 3
    key = jax.random.key(0) if init == "random" else None
    fit = jax.jit(
        lambda x: jaxtd.cp_als(x, rank, init=init, key=key, max_iter=spec["iters"], tol=0.0)
    )
    compiled = fit.lower(jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))).compile()
    ma = compiled.memory_analysis()
    xla = None
    if ma is not None:
        xla = {
            k: int(getattr(ma, k))
            for k in (
                "argument_size_in_bytes",
                "output_size_in_bytes",
                "alias_size_in_bytes",
                "temp_size_in_bytes",
            )  # fmt: skip
        }
        xla["total_bytes"] = (
            xla["argument_size_in_bytes"] + xla["output_size_in_bytes"]
            + xla["temp_size_in_bytes"] - xla["alias_size_in_bytes"]
        )  # fmt: skip
    dev = jax.devices()[0]
    stats0 = dev.memory_stats() if dev.platform != "cpu" else None
    gc.collect()
    rss0 = _current_rss()
    x_np = random_array(shape, dtype)
    x = jax.device_put(x_np)
    x.block_until_ready()
    del x_np
    gc.collect()
    rss_x = _current_rss()
    reset = _reset_hwm()
    maxrss_before = _maxrss()
    t = time.perf_counter()
    res = compiled(x)
    res.rel_error.block_until_ready()
    run_s = time.perf_counter() - t
    hwm = _hwm() if reset else None
    out = dict(
        spec,
        tensor_bytes=int(x.nbytes),
        factor_bytes=int(sum(f.nbytes for f in res.model.factors) + res.model.weights.nbytes),
        rss_before_x=rss0,
        rss_with_x=rss_x,
        run_s=run_s,
        xla=xla,
        peak_reset=reset,
        maxrss_before_run=maxrss_before,
        maxrss_after_run=_maxrss(),
        rel_error=float(res.rel_error),
    )
    if stats0 is not None:  # accelerator: the allocator's own peak
        stats = dev.memory_stats()
        out["device_peak_bytes"] = int(stats.get("peak_bytes_in_use", 0))
        out["device_bytes_before_x"] = int(stats0.get("bytes_in_use", 0))
        out["peak_bytes"] = out["device_peak_bytes"] - out["device_bytes_before_x"]
        out["peak_source"] = "device memory_stats peak_bytes_in_use"
    elif hwm is not None:
        out["peak_bytes"] = hwm - rss0
        out["peak_source"] = "VmHWM after clear_refs, minus RSS before x"
    else:
        out["peak_bytes"] = out["maxrss_after_run"] - rss0
        out["peak_source"] = "ru_maxrss minus RSS before x (includes creating x)"
    return out


def _compile_child(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import monitoring

    import jaxtd
    from jaxtd import _cp_als

    events: list[tuple[str, float]] = []

    def listener(name, secs, **kwargs):
        events.append((name, secs))

    monitoring.register_event_duration_secs_listener(listener)
    jnp.zeros(1).block_until_ready()  # the runtime is up before the clock starts
    size, rank, dtype = spec["size"], spec["rank"], spec["dtype"]
    x1 = jax.device_put(random_array((size,) * 3, dtype, seed=0))
    x2 = jax.device_put(random_array((size,) * 3, dtype, seed=1))
    n0 = len(events)
    t = time.perf_counter()
    jaxtd.cp_als(x1, rank).rel_error.block_until_ready()
    first = time.perf_counter() - t
    first_events = events[n0:]
    cache_first = _cp_als._cp_als._cache_size()
    n1 = len(events)
    t = time.perf_counter()
    jaxtd.cp_als(x2, rank, tol=1e-5).rel_error.block_until_ready()  # new data, new tol
    second = time.perf_counter() - t
    second_events = events[n1:]
    warm = min(
        _timed(lambda: jaxtd.cp_als(x1, rank).rel_error.block_until_ready()) for _ in range(3)
    )

    def total(evs, suffix):
        return sum(s for n, s in evs if n.endswith(suffix))

    return dict(
        spec,
        first_call_s=first,
        warm_call_s=warm,
        compile_s=max(first - warm, 0.0),
        second_call_s=second,
        trace_s=total(first_events, "jaxpr_trace_duration"),
        lower_s=total(first_events, "jaxpr_to_mlir_module_duration"),
        backend_compile_s=total(first_events, "backend_compile_duration"),
        backend_compiles_first_call=sum(
            n.endswith("backend_compile_duration") for n, _ in first_events
        ),
        backend_compiles_second_call=sum(
            n.endswith("backend_compile_duration") for n, _ in second_events
        ),
        jit_cache_size_after_first=int(cache_first),
        jit_cache_size_after_second=int(_cp_als._cp_als._cache_size()),
    )


CHILDREN = {"memory": _memory_child, "compile": _compile_child}


def child_main() -> None:
    """Entry point of a measuring subprocess: ``kind`` and a JSON spec on the command line."""
    kind, spec = sys.argv[1], json.loads(sys.argv[2])
    if spec.get("dtype") == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    with limit_lapack_threads(spec.get("lapack_threads")):
        print(json.dumps(CHILDREN[kind](spec)))


def run_child(kind: str, spec: dict, timeout_s: float = 900) -> dict:
    """Run :func:`child_main` in a fresh Python; its JSON result, or ``{"error": ...}``."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    code = "from jaxtd._bench import child_main; child_main()"
    cmd = [sys.executable, "-c", code, kind, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"timed out after {timeout_s} s")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["?"]
        errors = [ln for ln in lines if ln[:1].isalpha() and ("Error" in ln or "error" in ln)]
        tail = (errors or lines)[-1]
        return dict(spec, error=f"exit status {proc.returncode}: {tail}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return dict(spec, error=f"no result from the subprocess: {proc.stdout[-200:]!r}")


# ---------------------------------------------------------------------------------------
# Targets, table, JSON, plot
# ---------------------------------------------------------------------------------------


def _find(rows, library, method, order, size, rank, dtype):
    for r in rows:
        if (r["library"], r["method"], r["order"], r["size"], r["rank"], r["dtype"]) == (
            library, method, order, size, rank, dtype,
        ):  # fmt: skip
            return r
    return None


def evaluate_targets(report: dict) -> list[dict]:
    """PASS/FAIL (or SKIP, with the reason) for each target."""
    out = []
    rows = report["cases"]
    c = TARGET_CASE
    for method, need in TARGET_SPEEDUP.items():
        name = f"{method} >= {need:g}x TensorLy at {c['size']}^3 r{c['rank']} {c['dtype']}"
        peer = _find(rows, "tensorly", method, c["order"], c["size"], c["rank"], c["dtype"])
        if peer is None or "jaxtd_speedup" not in peer:
            why = peer.get("error") if peer else "case not run or TensorLy not installed"
            out.append(dict(name=name, status="SKIP", detail=why))
            continue
        ours = _find(rows, "jaxtd", method, c["order"], c["size"], c["rank"], c["dtype"])
        ratio = peer["jaxtd_speedup"]
        out.append(
            dict(
                name=name,
                status="PASS" if ratio >= need else "FAIL",
                value=ratio,
                threshold=need,
                detail=f"{ratio:.2f}x: jaxtd {ours['ms_per_iter']:.2f} ms/iter, "
                f"TensorLy {peer['ms_per_iter']:.2f} ms/iter",
            )
        )
    b = report.get("batched")
    name = f"batched vmap >= {TARGET_BATCHED:g}x a TensorLy loop"
    if not b:
        out.append(dict(name=name, status="SKIP", detail="not run"))
    elif "speedup" not in b:
        out.append(dict(name=name, status="SKIP", detail=b.get("error", "TensorLy not installed")))
    else:
        out.append(
            dict(
                name=name,
                status="PASS" if b["speedup"] >= TARGET_BATCHED else "FAIL",
                value=b["speedup"],
                threshold=TARGET_BATCHED,
                detail=f"{b['speedup']:.1f}x: {b['n_fits']} fits in {b['jaxtd_s']:.3f} s vs "
                f"{b['tensorly_s_scaled']:.2f} s (TensorLy: {b['tensorly_loop_fits_timed']} "
                f"fits timed, scaled)",
            )
        )
    comp = report.get("compile")
    name = f"3-way cp_als compiles in <= {TARGET_COMPILE_S:g} s, no recompilation"
    if not comp:
        out.append(dict(name=name, status="SKIP", detail="not run"))
    elif "error" in comp:
        out.append(dict(name=name, status="FAIL", detail=comp["error"]))
    else:
        ok = comp["compile_s"] <= TARGET_COMPILE_S and comp["backend_compiles_second_call"] == 0
        out.append(
            dict(
                name=name,
                status="PASS" if ok else "FAIL",
                value=comp["compile_s"],
                threshold=TARGET_COMPILE_S,
                detail=f"{comp['compile_s']:.2f} s (first {comp['first_call_s']:.2f} s, warm "
                f"{comp['warm_call_s']:.3f} s); second call: "
                f"{comp['backend_compiles_second_call']} compilations, "
                f"{comp['second_call_s']:.3f} s",
            )
        )
    mem = (report.get("memory") or {}).get("svd")
    name = f"cp_als peak memory < {TARGET_MEMORY:g} x (tensor + factors)"
    if not mem:
        out.append(dict(name=name, status="SKIP", detail="not run"))
    elif "error" in mem:
        out.append(dict(name=name, status="FAIL", detail=mem["error"]))
    else:
        ratio = mem["peak_bytes"] / (mem["tensor_bytes"] + mem["factor_bytes"])
        xla = mem.get("xla")
        xla_ratio = xla["total_bytes"] / mem["tensor_bytes"] if xla else float("nan")
        out.append(
            dict(
                name=name,
                status="PASS" if ratio < TARGET_MEMORY else "FAIL",
                value=ratio,
                threshold=TARGET_MEMORY,
                detail=f"{ratio:.2f}x measured ({mem['peak_bytes'] / 2**20:.0f} MiB for a "
                f"{mem['tensor_bytes'] / 2**20:.0f} MiB tensor, {mem['size']}^3 r{mem['rank']}); "
                f"XLA memory_analysis {xla_ratio:.2f}x",
            )
        )
    return out


def _fmt(v, spec, width):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"{'-':>{width}}"
    return f"{v:{width}{spec}}"


def format_report(report: dict) -> str:
    m, roof = report["machine"], report["roof"]
    lines = [
        f"jaxtd bench on {m['device_kind']} ({m['platform']}), {m['cpu_count']} CPUs, "
        f"jax {m['jax_version']}",
        f"memory bandwidth {roof['bandwidth_gb_s']:.1f} GB/s (best of jnp.sum "
        f"{roof['bandwidth_kernels_gb_s']['sum']:.1f}, x @ v "
        f"{roof['bandwidth_kernels_gb_s']['matvec']:.1f}, over "
        f"{roof['bandwidth_bytes'] / 2**20:.0f} MiB); GEMM {roof['gemm_gflop_s']:.0f} GFLOP/s",
        "byte model: 2 reads of x per iteration; flop model: 4 size(x) R per iteration; "
        "x bound = ms/iter / (bytes / bandwidth)",
        "jaxlib LAPACK BLAS: "
        + (
            ", ".join(
                f"{os.path.basename(p['filepath'])} ({p['internal_api']}, "
                f"{p['num_threads']} threads)"
                for p in m["jaxlib_lapack"]
            )
            or "unknown"
        )
        + (
            f"; limited to {lt} thread(s) for this run"
            if (lt := report["settings"].get("lapack_threads"))
            else ""
        ),
        "",
    ]
    head = (
        f"{'case':<22}{'method':<13}{'library':<14}{'compile s':>10}{'ms/iter':>10}"
        f"{'median':>10}{'GB/s':>8}{'GFLOP/s':>9}{'x bound':>9}{'speed-up':>10}"
    )
    lines += [head, "-" * len(head)]
    for r in report["cases"]:
        case = f"{r['order']}-way {r['size']} r{r['rank']} {r['dtype']}"
        if "error" in r:
            lines.append(f"{case:<22}{r['method']:<13}{r['library']:<14}  error: {r['error']}")
            continue
        flag = "" if r.get("resolved", True) else " (unresolved)"
        if r.get("ms_per_iter_median", 0) > 2 * r["ms_per_iter"]:
            flag += " (unstable: median > 2x best)"
        speed = r.get("jaxtd_speedup")
        lines.append(
            f"{case:<22}{r['method']:<13}{r['library']:<14}"
            f"{_fmt(r.get('compile_s'), '.2f', 10)}{_fmt(r['ms_per_iter'], '.3f', 10)}"
            f"{_fmt(r.get('ms_per_iter_median'), '.3f', 10)}"
            f"{_fmt(r.get('gb_s'), '.1f', 8)}{_fmt(r.get('gflop_s'), '.1f', 9)}"
            f"{_fmt(r.get('x_bound'), '.2f', 9)}"
            f"{(f'{speed:.2f}x' if speed else '-'):>10}{flag}"
        )
    for note in report.get("skipped", []):
        lines.append(f"skipped: {note}")
    b = report.get("batched")
    if b:
        lines += ["", f"batched: {b['n_fits']} CP fits of {'x'.join(map(str, b['shape']))} "
                  f"rank {b['rank']}, {b['iterations']} iterations, {b['dtype']}"]  # fmt: skip
        lines.append(
            f"  jaxtd vmap     {b['jaxtd_s']:9.3f} s  ({b['jaxtd_ms_per_fit']:.3f} ms/fit, "
            f"compile {b['jaxtd_compile_s']:.2f} s)"
        )
        lines.append(
            f"  jaxtd loop     {b['jaxtd_loop_ms_per_fit'] * b['n_fits'] / 1e3:9.3f} s  "
            f"({b['jaxtd_loop_ms_per_fit']:.3f} ms/fit, one call per tensor, scaled)"
        )
        if "speedup" in b:
            lines.append(
                f"  TensorLy loop  {b['tensorly_s_scaled']:9.3f} s  "
                f"({b['tensorly_ms_per_fit']:.3f} ms/fit; {b['tensorly_loop_fits_timed']} fits "
                f"timed, scaled to {b['n_fits']})  speed-up {b['speedup']:.1f}x"
            )
    mem = report.get("memory")
    if mem:
        lines.append("")
        for init, r in mem.items():
            if "error" in r:
                lines.append(f"memory (init={init}): error: {r['error']}")
                continue
            budget = r["tensor_bytes"] + r["factor_bytes"]
            xla = r.get("xla")
            xla_txt = (
                f"XLA args+out+temp {xla['total_bytes'] / 2**20:.0f} MiB "
                f"({xla['total_bytes'] / budget:.2f}x; temp {xla['temp_size_in_bytes'] / 2**20:.0f}"
                " MiB)"
                if xla
                else "XLA memory_analysis n/a"
            )
            lines.append(
                f"memory cp_als {r['size']}^3 r{r['rank']} {r['dtype']} init={init}: peak "
                f"{r['peak_bytes'] / 2**20:.0f} MiB = {r['peak_bytes'] / budget:.2f}x "
                f"(tensor + factors {budget / 2**20:.0f} MiB); {xla_txt}"
            )
    comp = report.get("compile")
    if comp:
        lines.append("")
        if "error" in comp:
            lines.append(f"compile: error: {comp['error']}")
        else:
            lines.append(
                f"compile cp_als {comp['size']}^3 r{comp['rank']}: first call "
                f"{comp['first_call_s']:.2f} s, warm {comp['warm_call_s']:.3f} s "
                f"(trace {comp['trace_s']:.2f} + lower {comp['lower_s']:.2f} + XLA "
                f"{comp['backend_compile_s']:.2f} s, {comp['backend_compiles_first_call']} "
                f"compilations); second call {comp['second_call_s']:.3f} s, "
                f"{comp['backend_compiles_second_call']} compilations"
            )
    if report.get("targets"):
        lines += ["", "targets:"]
        for t in report["targets"]:
            lines.append(f"  {t['status']:<5} {t['name']}: {t['detail']}")
    return "\n".join(lines)


def plot_report(report: dict, path: str) -> bool:
    """ms/iter and GB/s against the number of entries, one panel per method; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in report["cases"] if "ms_per_iter" in r]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    if not methods:
        return False
    fig, axes = plt.subplots(2, len(methods), figsize=(4.2 * len(methods), 7), squeeze=False)
    bw = report["roof"]["bandwidth_gb_s"]
    for j, method in enumerate(methods):
        top, bottom = axes[0, j], axes[1, j]
        lines: dict[tuple, list] = {}
        for r in rows:
            if r["method"] == method:
                key = (r["library"], r["order"], r["rank"], r["dtype"])
                lines.setdefault(key, []).append(r)
        for (lib, order, rank, _), rs in sorted(lines.items()):
            rs = sorted(rs, key=lambda r: r["size"])
            n = [r["size"] ** r["order"] for r in rs]
            style = "-o" if lib == "jaxtd" else "--x"
            label = f"{lib} {order}-way r{rank}"
            top.loglog(n, [r["ms_per_iter"] for r in rs], style, label=label, ms=4)
            if lib == "jaxtd":
                bottom.semilogx(n, [r["gb_s"] for r in rs], style, label=label, ms=4)
        bottom.axhline(bw, color="k", lw=0.8, ls=":", label=f"bandwidth {bw:.0f} GB/s")
        top.set(title=method, xlabel="entries of x", ylabel="ms per iteration")
        bottom.set(xlabel="entries of x", ylabel="GB/s (2 reads of x per iteration)")
        top.legend(fontsize=6)
        bottom.legend(fontsize=6)
    m = report["machine"]
    fig.suptitle(f"jaxtd bench: {m['device_kind']} ({m['platform']}), jax {m['jax_version']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _finite_json(obj):
    """JSON with NaN/Inf as null (strict JSON readers reject them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m jaxtd bench``."""
    ints = {
        name: (lambda s, name=name: _parse_ints(s, name)) for name in ("sizes", "orders", "ranks")
    }
    add = p.add_argument
    add(
        "--quick",
        action="store_true",
        help="smoke run, under a minute: sizes "
        f"{QUICK['sizes']}, order {QUICK['orders']}, rank {QUICK['ranks']}, smaller experiments",
    )
    add(
        "--sizes", type=ints["sizes"], help=f"mode length I of the I^N tensors ({DEFAULT['sizes']})"
    )
    add("--orders", type=ints["orders"], help=f"tensor orders N ({DEFAULT['orders']})")
    add("--ranks", type=ints["ranks"], help=f"CP rank, Tucker rank per mode ({DEFAULT['ranks']})")
    add(
        "--methods",
        type=lambda s: _parse_choices(s, METHODS, "method"),
        default=METHODS,
        help=f"comma-separated among {','.join(METHODS)} (default all)",
    )
    add("--dtype", choices=("float32", "float64"), default="float32")
    add("--max-elements", type=float, help="skip larger tensors (default 2e7 entries)")
    add(
        "--peers",
        type=lambda s: _parse_choices(s, PEERS, "peer"),
        default=PEERS,
        help="comma-separated among tensorly,pyttb (default: both, when installed)",
    )
    add("--no-peers", action="store_true", help="time jaxtd only")
    add("--tensorly-jax", action="store_true", help="also TensorLy's JAX backend (eager)")
    add(
        "--skip",
        type=lambda s: _parse_choices(s, EXPERIMENTS, "experiment"),
        default=(),
        help=f"comma-separated among {','.join(EXPERIMENTS)}",
    )
    add("--repeats", type=int, help="timed runs per iteration count, best kept (default 5)")
    add("--iters", type=int, help="iterations of the long timed run, >= 3 (default: per case)")
    add("--target-s", type=float, help="seconds per timed run when --iters is not given")
    add("--batch", type=int, help="fits in the batched experiment (default 1024)")
    add("--batch-loop", type=int, help="of those, fits the TensorLy loop times (default 64)")
    add("--memory-size", type=int, help="I of the I^3 memory case (default 400; --quick 200)")
    add("--bandwidth-mb", type=float, help="MiB streamed for the bandwidth (default 512)")
    add("--json", default="bench.json", metavar="PATH", help="every number ('' for none)")
    add("--plot", default="bench.png", metavar="PATH", help="ms/iter, GB/s vs size ('' for none)")
    add(
        "--lapack-threads",
        type=int,
        metavar="N",
        help="limit the BLAS threads of jaxlib's "
        "LAPACK (SciPy's OpenBLAS) to N for the whole run; needs threadpoolctl",
    )
    add("--quiet", action="store_true", help="no progress lines on stderr")


def _settle(args) -> None:
    """Fill defaults that depend on ``--quick``, and check the numbers."""
    preset = QUICK if args.quick else DEFAULT
    if args.sizes is None:
        args.sizes = _parse_ints(preset["sizes"], "--sizes")
    if args.orders is None:
        args.orders = _parse_ints(preset["orders"], "--orders")
    if args.ranks is None:
        args.ranks = _parse_ints(preset["ranks"], "--ranks")
    if args.max_elements is None:
        args.max_elements = preset["max_elements"]
    if args.target_s is None:
        args.target_s = preset["target_s"]
    defaults = dict(repeats=(3, 5), batch=(1024, 1024), batch_loop=(16, 64),
                    memory_size=(200, 400), bandwidth_mb=(128, 512))  # fmt: skip
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if min(args.orders) < 2:
        raise ValueError(f"--orders must be >= 2, got {args.orders}")
    if args.lapack_threads is not None and args.lapack_threads < 1:
        raise ValueError(f"--lapack-threads must be >= 1, got {args.lapack_threads}")
    for name in ("repeats", "batch", "batch_loop", "memory_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.iters is not None and args.iters < 3:
        raise ValueError(f"--iters must be >= 3 (the short run is 2 iterations), got {args.iters}")
    if args.target_s <= 0 or args.bandwidth_mb <= 0:
        raise ValueError("--target-s and --bandwidth-mb must be > 0")
    peers = () if args.no_peers else tuple(args.peers)
    if args.tensorly_jax and not args.no_peers:
        peers += ("tensorly-jax",)
    args.peers = peers


def run(args) -> int:
    """Run the suite for parsed ``args`` (see :func:`add_arguments`); exit status."""
    import jax

    _settle(args)
    clock = Clock(args.quiet)
    set_vars = [f"{v}={os.environ[v]}" for v in OPENBLAS_VARS if v in os.environ]
    if set_vars:
        print(f"jaxtd bench: warning: {' '.join(set_vars)} set; NumPy-based peers may run "
              "below their best. Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
              "python -m jaxtd bench ...", file=sys.stderr)  # fmt: skip
    if args.dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)  # a program's choice, for this process
    report: dict = dict(schema="jaxtd-bench/1", machine=machine_info())
    report["settings"] = {k: v for k, v in vars(args).items() if k != "func"}
    m = report["machine"]
    clock(f"jaxtd bench on {m['device_kind']} ({m['platform']}), jax {m['jax_version']}")
    if args.lapack_threads is not None:
        if not m["jaxlib_lapack"]:
            raise ValueError("--lapack-threads needs threadpoolctl: pip install threadpoolctl")
        if m["jaxlib_lapack_shared_with_numpy"]:
            print("jaxtd bench: warning: jaxlib's LAPACK shares its BLAS with NumPy here, so "
                  "--lapack-threads limits the NumPy-based peers too", file=sys.stderr)  # fmt: skip
    with limit_lapack_threads(args.lapack_threads):
        suite(args, report, clock)
    report["targets"] = [] if "targets" in args.skip else evaluate_targets(report)
    report["wall_s"] = clock.elapsed()

    print(format_report(report))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(_finite_json(report), f, indent=1)
        except OSError as e:
            raise ValueError(f"cannot write --json {args.json}: {e.strerror or e}") from None
        print(f"wrote {args.json}")
    if args.plot:
        try:
            drawn = plot_report(report, args.plot)
        except OSError as e:
            raise ValueError(f"cannot write --plot {args.plot}: {e.strerror or e}") from None
        if drawn:
            print(f"wrote {args.plot}")
        else:
            print("no plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    clock(f"done in {report['wall_s']:.0f} s")
    return 0


def suite(args, report: dict, clock: Clock) -> None:
    """The measurements, into ``report``: roof, grid, batched, memory, compile."""
    clock(f"measuring memory bandwidth over {args.bandwidth_mb:g} MiB and the GEMM roof")
    bw = measure_bandwidth(int(args.bandwidth_mb * 2**20), args.dtype)
    gemm_n = 2048 if args.bandwidth_mb >= 256 else 1024 if args.bandwidth_mb >= 64 else 256
    gemm = measure_gemm(gemm_n, args.dtype)
    report["roof"] = dict(
        bandwidth_gb_s=bw["gb_s"],
        bandwidth_kernels_gb_s=bw["kernels_gb_s"],
        bandwidth_bytes=bw["bytes"],
        gemm_gflop_s=gemm,
    )
    clock(f"  bandwidth {bw['gb_s']:.1f} GB/s, GEMM {gemm:.0f} GFLOP/s")

    cases, skipped = grid_cases(args)
    if "targets" not in args.skip and "tensorly" in args.peers:
        for method in TARGET_SPEEDUP:  # the target cases run even when the grid lacks them
            case = dict(method=method, order=TARGET_CASE["order"], size=TARGET_CASE["size"],
                        rank=TARGET_CASE["rank"])  # fmt: skip
            if case not in cases or args.dtype != TARGET_CASE["dtype"]:
                cases.append(dict(case, dtype=TARGET_CASE["dtype"], peers=("tensorly",)))
    report["skipped"] = skipped
    rows: list[dict] = []
    tensors: dict[tuple, np.ndarray] = {}
    for i, case in enumerate(cases):
        dtype, peers = case.pop("dtype", args.dtype), case.pop("peers", args.peers)
        key = (case["order"], case["size"], dtype)
        if key not in tensors:
            tensors.clear()  # one tensor alive at a time
            tensors[key] = case_tensor(case["order"], case["size"], dtype)
        clock(f"({i + 1}/{len(cases)}) {case['method']} {case['order']}-way {case['size']} "
              f"rank {case['rank']} {dtype}")  # fmt: skip
        try:
            rows += run_case(case, tensors[key], report["roof"], args, clock, peers)
        except Exception as e:  # one failing case is reported, the suite goes on
            rows.append(dict(case, dtype=dtype, library="jaxtd", error=f"{type(e).__name__}: {e}"))
    tensors.clear()
    report["cases"] = rows

    if "batched" not in args.skip:
        clock(f"batched: vmap of cp_als over {args.batch} tensors 10x10x10, rank 3, 50 iterations")
        try:
            report["batched"] = bench_batched(args, clock)
        except Exception as e:
            report["batched"] = dict(error=f"{type(e).__name__}: {e}")
    if "memory" not in args.skip:
        report["memory"] = {}
        for init in ("svd",) if args.quick else ("svd", "random"):
            clock(f"memory: cp_als {args.memory_size}^3 rank 20 float32 init={init} (subprocess)")
            spec = dict(size=args.memory_size, rank=20, dtype="float32", init=init, iters=5,
                        lapack_threads=args.lapack_threads)  # fmt: skip
            report["memory"][init] = run_child("memory", spec)
    if "compile" not in args.skip:
        clock("compile: first and second call of a 3-way cp_als (subprocess)")
        spec = dict(size=100, rank=10, dtype=args.dtype, lapack_threads=args.lapack_threads)
        report["compile"] = run_child("compile", spec)


def main(argv=None) -> int:
    """``python -m jaxtd._bench [options]``: the same as ``python -m jaxtd bench``."""
    p = argparse.ArgumentParser(prog="python -m jaxtd bench", description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"jaxtd: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
