"""The machine the suite runs on: versions, jaxlib's LAPACK threads, the bandwidth and GEMM roofs.

Also the small helpers every part of the suite shares: :class:`Clock` (progress on stderr),
:func:`_timed` (seconds of one call) and :func:`random_array` (the data).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


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


def random_array(shape, dtype: str, seed: int = 0) -> np.ndarray:
    """Uniform ``[0, 1)`` entries, drawn directly in ``dtype`` (no float64 copy)."""
    return np.random.default_rng(seed).random(shape, dtype=np.dtype(dtype).type)
