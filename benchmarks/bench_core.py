"""ms per iteration of cp_als and tucker_hooi against TensorLy (NumPy backend), same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_core.py \
        [--size 200] [--rank 10] [--repeats 5] [--lapack-threads 1]

One case of ``python -m jaxtd bench`` (whose module docstring, ``jaxtd/_bench/__init__.py``,
explains the measurements), built from the same pieces: per-iteration time is the
difference between warm runs of two iteration counts divided by their difference (init
and call overhead cancel; ``tol=0`` forces every iteration), jaxtd and TensorLy runs
alternate, and the best of ``--repeats`` is kept (the median is shown beside it).
Compile time is the first call minus a warm call of the same size. Unsetting
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in this command only lets NumPy run at its best.
"""

from __future__ import annotations

import argparse

import jax

from jaxtd import _bench


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--target-s", type=float, default=0.3, help="seconds per timed run")
    p.add_argument("--lapack-threads", type=int, help="limit jaxlib's LAPACK BLAS threads")
    args = p.parse_args()
    n, r = args.size, args.rank
    x_np = _bench.case_tensor(3, n, "float32")
    x = jax.device_put(x_np)
    rows = []
    with _bench.limit_lapack_threads(args.lapack_threads):
        for method in ("cp_als", "tucker_hooi"):
            fit = _bench.jaxtd_fitter(method, 3, r)
            # about 3x the GEMM roof per iteration; 50 GFLOP/s is a conservative CPU figure
            n_hi = 2 + max(8, round(args.target_s / (3 * _bench.flops_per_iter(method, x.shape, r)
                                                     / 50e9)))  # fmt: skip
            timers = {"jaxtd": _bench.prepare_jaxtd(fit, x, min(n_hi, 400))}
            for lib, run in _bench.peer_runners(x_np, method, r, ("tensorly",)).items():
                timers[lib] = _bench.prepare_peer(run, args.target_s)
            _bench.sample(list(timers.values()), args.repeats)
            for lib, timer in timers.items():
                res = timer.result()
                compile_s = res["first_call_s"] - res["warm_s"] if lib == "jaxtd" else None
                rows.append((method, lib, res["s_per_iter"], res["ms_per_iter_median"], compile_s))

    print(f"{n}x{n}x{n} float32, rank {r}, device {jax.devices()[0].device_kind}")
    print(f"{'algorithm':<12} {'library':<10} {'ms/iter':>9} {'median':>9} {'compile s':>10} "
          f"{'jaxtd speed-up':>15}")  # fmt: skip
    ours = {m: sec for m, lib, sec, _, _ in rows if lib == "jaxtd"}
    for method, lib, sec, median, comp in rows:
        comp_txt = f"{comp:10.2f}" if comp is not None else f"{'-':>10}"
        speed = f"{sec / ours[method]:14.2f}x" if lib != "jaxtd" else f"{'-':>15}"
        print(f"{method:<12} {lib:<10} {sec * 1e3:9.2f} {median:9.2f} {comp_txt} {speed}")


if __name__ == "__main__":
    main()
