"""ms per iteration of cp_als and tucker_hooi against TensorLy (NumPy backend), same run.

    python benchmarks/bench_core.py [--size 200] [--rank 10]

Per-iteration time is the difference between runs of ``k_hi`` and ``k_lo`` iterations
divided by ``k_hi - k_lo`` (init and call overhead cancel; tol=0 forces every
iteration). Compile time is the first call minus a warm call of the same size.
For TensorLy at its best, unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in this
command only: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import jaxtd


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def per_iter(run, k_lo, k_hi, repeats):
    """Seconds per iteration of ``run(k)``, from the difference of two iteration counts."""
    return (best_of(lambda: run(k_hi), repeats) - best_of(lambda: run(k_lo), repeats)) / (
        k_hi - k_lo
    )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    n, r = args.size, args.rank
    rng = np.random.default_rng(0)
    x_np = rng.random((n, n, n), dtype=np.float32)
    x = jax.device_put(x_np)
    k_lo, k_hi = 5, 25

    def jax_run(fit, k):
        fit(x, r, max_iter=k, tol=0.0).rel_error.block_until_ready()

    rows = []
    for name, fit in (("cp_als", jaxtd.cp_als), ("tucker_hooi", jaxtd.tucker_hooi)):
        t0 = time.perf_counter()
        jax_run(fit, k_lo)
        first = time.perf_counter() - t0
        warm = best_of(lambda fit=fit: jax_run(fit, k_lo), args.repeats)
        sec = per_iter(lambda k, fit=fit: jax_run(fit, k), k_lo, k_hi, args.repeats)
        rows.append((name, "jaxtd", sec, first - warm))

    try:
        import tensorly as tl
        from tensorly.decomposition import parafac, tucker
    except ImportError:
        tl = None
    if tl is not None:
        tl.set_backend("numpy")
        peers = (
            (
                "cp_als",
                lambda k: parafac(x_np, r, n_iter_max=k, tol=0.0, init="random", random_state=0),
            ),
            (
                "tucker_hooi",
                lambda k: tucker(
                    x_np, (r,) * 3, n_iter_max=k, tol=0.0, init="random", random_state=0
                ),
            ),
        )
        for name, run in peers:
            rows.append((name, "tensorly-numpy", per_iter(run, 2, 7, args.repeats), float("nan")))

    print(f"{n}x{n}x{n} float32, rank {r}, device {jax.devices()[0].device_kind}")
    print(f"{'algorithm':<12} {'library':<16} {'ms/iter':>9} {'compile s':>10} {'speed-up':>9}")
    ref = {name: sec for name, lib, sec, _ in rows if lib == "tensorly-numpy"}
    for name, lib, sec, comp in rows:
        ratio = ref.get(name, float("nan")) / sec
        print(f"{name:<12} {lib:<16} {sec * 1e3:9.2f} {comp:10.2f} {ratio:8.2f}x")


if __name__ == "__main__":
    main()
