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
* ``x roofline``: ``ms/iter`` over the larger of the bandwidth bound and the compute bound
  ``flops per iteration / GEMM GFLOP/s`` (``flop_bound_ms`` in the JSON). A case is
  compute-bound where ``flop_bound_ms > bound_ms``; then ``x roofline`` is the fairer
  measure of how far a fitter is from its roof.
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

Code: ``machine`` (versions, LAPACK threads, bandwidth and GEMM roofs), ``cases`` (byte and
flop models, timing, the grid), ``experiments`` (batched, memory, compile), ``report``
(targets, table, plot); this module holds the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from jaxtd._bench.cases import (
    METHODS,
    PEERS,
    case_tensor,
    flops_per_iter,
    grid_cases,
    jaxtd_fitter,
    peer_runners,
    prepare_jaxtd,
    prepare_peer,
    run_case,
    sample,
)
from jaxtd._bench.experiments import bench_batched, run_child
from jaxtd._bench.machine import (
    OPENBLAS_VARS,
    Clock,
    lapack_pools,
    limit_lapack_threads,
    machine_info,
    measure_bandwidth,
    measure_gemm,
)
from jaxtd._bench.report import (
    TARGET_CASE,
    TARGET_SPEEDUP,
    _finite_json,
    evaluate_targets,
    format_report,
    plot_report,
)

# What jaxtd/__main__.py, benchmarks/bench_core.py and benchmarks/profile_kernels.py use.
__all__ = [
    "add_arguments",
    "run",
    "main",
    "case_tensor",
    "flops_per_iter",
    "jaxtd_fitter",
    "lapack_pools",
    "limit_lapack_threads",
    "peer_runners",
    "prepare_jaxtd",
    "prepare_peer",
    "sample",
]

EXPERIMENTS = ("batched", "memory", "compile", "targets")

DEFAULT = dict(sizes="25,50,100,200", orders="3,4", ranks="5,10", max_elements=2e7, target_s=0.2)
QUICK = dict(sizes="30", orders="3", ranks="5", max_elements=2e7, target_s=0.05)


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
