"""Command line: ``python -m jaxtd demo``."""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

AMINO_ACIDS = ("tryptophan", "tyrosine", "phenylalanine")


def _timed(fit):
    """Run ``fit()`` twice: the first call compiles, the second reuses the compiled loop."""
    t0 = time.perf_counter()
    fit().rel_error.block_until_ready()
    t1 = time.perf_counter()
    res = fit()
    res.rel_error.block_until_ready()
    return res, t1 - t0, time.perf_counter() - t1


def match_concentrations(sample_factor: np.ndarray, concentrations: np.ndarray):
    """Pair components with known concentrations to maximise Σ|r|; returns [(component, r)]."""
    k = concentrations.shape[1]
    corr = np.corrcoef(sample_factor.T, concentrations.T)[
        : sample_factor.shape[1], sample_factor.shape[1] :
    ]
    best = max(
        itertools.permutations(range(sample_factor.shape[1]), k),
        key=lambda p: sum(abs(corr[p[j], j]) for j in range(k)),
    )
    return [(best[j], corr[best[j], j]) for j in range(k)]


def demo(args) -> int:
    import jax
    import optax

    import jaxtd

    data = jaxtd.datasets.load_aminoacids()
    x = jax.numpy.asarray(data.tensor, dtype=jax.numpy.float32)
    print(
        "jaxtd demo: amino acid fluorescence (Bro 1997), samples x emission x excitation =", x.shape
    )
    print(f"float32 on {jax.devices()[0].device_kind}; fit = 1 - ||x - model|| / ||x||\n")
    print(f"{'model':<18}{'fit':>8}{'iters':>7}{'converged':>11}{'1st call s':>12}{'warm s':>9}")
    rows = [
        (f"CP-ALS rank {r}", lambda r=r: jaxtd.cp_als(x, r, max_iter=args.max_iter, tol=1e-7))
        for r in (1, 2, 3, 4)
    ]
    rows.append(
        (
            "Tucker HOOI 3,3,3",
            lambda: jaxtd.tucker_hooi(x, (3, 3, 3), max_iter=args.max_iter, tol=1e-7),
        )
    )
    results = {}
    for name, fit in rows:
        res, first, warm = _timed(fit)
        results[name] = res
        print(
            f"{name:<18}{1 - float(res.rel_error):8.4f}{int(res.n_iter):7d}"
            f"{str(bool(res.converged)):>11}{first:12.3f}{warm:9.3f}"
        )
    print("\nRank 3, ALS beside gradient fits (same svd start, same stopping rule):")
    print(f"{'fitter':<18}{'fit':>8}{'iters':>7}{'converged':>11}{'1st call s':>12}{'warm s':>9}")
    adam = optax.adam(0.1)  # built once: a new optimizer object would compile a new loop
    fitters = (
        ("ALS", lambda: jaxtd.cp_als(x, 3, max_iter=args.max_iter, tol=1e-7)),
        ("L-BFGS", lambda: jaxtd.cp_opt(x, 3, max_iter=args.max_iter, tol=1e-7)),
        (
            "Adam lr=0.1",
            lambda: jaxtd.cp_opt(x, 3, optimizer=adam, max_iter=4 * args.max_iter, tol=1e-7),
        ),
    )
    for name, fit in fitters:
        res, first, warm = _timed(fit)
        print(
            f"{name:<18}{1 - float(res.rel_error):8.4f}{int(res.n_iter):7d}"
            f"{str(bool(res.converged)):>11}{first:12.3f}{warm:9.3f}"
        )
    rank3 = np.asarray(results["CP-ALS rank 3"].model.factors[0])
    print("\nRank-3 sample factor against the known concentrations (Pearson r):")
    for (component, r), name in zip(match_concentrations(rank3, data.concentrations), AMINO_ACIDS):
        print(f"  {name:<14} component {component}  r = {r:+.4f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxtd", description="CP and Tucker decompositions in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo", help="fit CP ranks 1-4 and Tucker (3,3,3) to the bundled amino acid data"
    )
    p_demo.add_argument(
        "--max-iter", type=int, default=500, help="most iterations per fit (default 500)"
    )
    p_demo.set_defaults(func=demo)
    args = parser.parse_args(argv)
    if getattr(args, "max_iter", 1) < 1:
        parser.error(f"--max-iter must be >= 1, got {args.max_iter}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
