"""The fixed experiments: batched fits under ``vmap``, and peak memory and compile time,
each of the last two measured in a fresh Python process (see the package docstring).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from jaxtd._bench.machine import Clock, _timed, limit_lapack_threads, random_array

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
    import jaxtd

    # the folder that holds this jaxtd, so that the child imports the same copy
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(jaxtd.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    code = "from jaxtd._bench.experiments import child_main; child_main()"
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
