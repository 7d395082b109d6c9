"""Command line: ``python -m jaxtd demo``, ``compare`` and ``bench``."""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

AMINO_ACIDS = ("tryptophan", "tyrosine", "phenylalanine")
PROGRESS_EVERY_S = 2.0


class CLIError(Exception):
    """A problem with the command's input: printed as one line, exit status 2."""


class Progress:
    """Prints ``[label] iteration k  rel_error e`` to stderr at most every few seconds.

    Passed to a fitter as ``progress=``; it runs on the host after each iteration.
    """

    def __init__(self, label: str, every_s: float = PROGRESS_EVERY_S):
        self.label, self.every_s = label, every_s
        self.last = time.perf_counter()

    def __call__(self, iteration, rel_error) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            print(f"  [{self.label}] iteration {int(iteration)}  rel_error {float(rel_error):.4e}",
                  file=sys.stderr, flush=True)  # fmt: skip


def match_concentrations(sample_factor: np.ndarray, concentrations: np.ndarray):
    """Pair components with known concentrations to maximise Σ|r|; returns [(component, r)]."""
    k = concentrations.shape[1]
    n = sample_factor.shape[1]
    corr = np.corrcoef(sample_factor.T, concentrations.T)[:n, n:]
    best = max(
        itertools.permutations(range(n), k),
        key=lambda p: sum(abs(corr[p[j], j]) for j in range(k)),
    )
    return [(best[j], corr[best[j], j]) for j in range(k)]


def run_methods(x, rank, methods, *, quiet, model="cp", optimizers=None, **fit_kwargs):
    """``jaxtd.compare``, one method at a time so that each gets its own progress label."""
    import jaxtd

    runs = []
    for method in methods:
        progress = None if quiet else Progress(method)
        table = jaxtd.compare(
            x, rank, (method,), model=model, optimizers=optimizers, progress=progress, **fit_kwargs
        )
        runs.extend(table)
    return jaxtd.Comparison(runs)


def plot_comparison(comparison, path: str, title: str) -> None:
    """Error against iteration and against time (``(k + 1) · s_per_iter``), to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install 'jaxtd[examples]'") from None
    fig, (by_iter, by_time) = plt.subplots(1, 2, figsize=(10, 4))
    for run in comparison:
        hist = run.history[: run.n_iter]
        steps = np.arange(1, run.n_iter + 1)
        by_iter.semilogy(steps, hist, label=run.method)
        by_time.semilogy(steps * run.s_per_iter, hist, label=run.method)
    by_iter.set(xlabel="iteration", ylabel="relative error", title=title)
    by_time.set(xlabel="seconds (uniform time per iteration)", ylabel="relative error")
    by_iter.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise CLIError(f"cannot write the plot {path}: {e.strerror or e}") from None
    print(f"wrote {path}")


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
    fits = {f"CP-ALS rank {r}": (r, "cp", "als") for r in (1, 2, 3, 4)}
    fits["Tucker HOOI 3,3,3"] = ((3, 3, 3), "tucker", "hooi")
    runs = {}
    for name, (rank, model, method) in fits.items():
        (run,) = run_methods(
            x, rank, (method,), model=model, quiet=args.quiet, max_iter=args.max_iter, tol=1e-7
        )
        runs[name] = run
        print(
            f"{name:<18}{run.fit:8.4f}{run.n_iter:7d}{str(run.converged):>11}"
            f"{run.compile_s + run.run_s:12.3f}{run.run_s:9.3f}"
        )
    print("\nRank 3, ALS beside gradient fits (same svd start, same stopping rule):")
    side_by_side = run_methods(
        x, 3, ("als", "L-BFGS", "Adam lr=0.1"), quiet=args.quiet,
        optimizers={"L-BFGS": optax.lbfgs(), "Adam lr=0.1": optax.adam(0.1)},
        max_iter=4 * args.max_iter, tol=1e-7,
    )  # fmt: skip
    print(side_by_side)
    sample_factor = np.asarray(runs["CP-ALS rank 3"].result.model.factors[0])
    print("\nRank-3 sample factor against the known concentrations (Pearson r):")
    for (component, r), name in zip(
        match_concentrations(sample_factor, data.concentrations), AMINO_ACIDS
    ):
        print(f"  {name:<14} component {component}  r = {r:+.4f}")
    if args.plot:
        plot_comparison(side_by_side, args.plot, "amino acids, CP rank 3")
    return 0


def load_array(path: str, key: str | None, what: str) -> np.ndarray:
    """An array from a .npy file, or from a .npz file by ``key`` (or its only array)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CLIError(f"{what} file not found: {path}") from None
    except ValueError:
        raise CLIError(f"cannot read {what} file {path}: not a .npy or .npz array file") from None
    except OSError as e:
        raise CLIError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if key is None:
            if len(names) != 1:
                raise CLIError(f"{path} holds several arrays {names}: choose one with --{what}-key")
            key = names[0]
        if key not in names:
            raise CLIError(f"{path} has no array {key!r} (it has {names})")
        return loaded[key]


def compare_cmd(args) -> int:
    import optax

    x = load_array(args.data, args.data_key, "data")
    mask = None if args.mask is None else load_array(args.mask, args.mask_key, "mask")
    if mask is not None and mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise CLIError(f"mask {args.mask} must be boolean or 0/1, got dtype {mask.dtype}")
        mask = mask.astype(bool)
    default = "als,opt" if args.model == "cp" else "hooi,opt"
    methods = tuple(m for m in (args.methods or default).split(",") if m)
    optimizers = {"adam": optax.adam(args.lr), "sgd": optax.sgd(args.lr)}
    if not args.quiet:
        print(f"fitting {args.model} rank {args.rank} to {args.data} {x.shape} with {methods}",
              file=sys.stderr)  # fmt: skip
    table = run_methods(
        x, args.rank, methods, model=args.model, optimizers=optimizers, quiet=args.quiet,
        mask=mask, max_iter=args.max_iter, tol=args.tol,
    )  # fmt: skip
    print(table)
    if args.plot:
        plot_comparison(table, args.plot, f"{args.model} rank {args.rank}: {args.data}")
    return 0


def _rank(text: str):
    """``3`` or ``3,4,5`` (a Tucker rank per mode)."""
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"rank must be an int or ints like 3,4,5, got {text!r}"
        ) from None
    return parts[0] if len(parts) == 1 else parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxtd", description="CP and Tucker decompositions in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_demo = sub.add_parser(
        "demo", help="fit the bundled amino acid data: CP ranks 1-4, Tucker, ALS vs gradient"
    )
    p_demo.add_argument(
        "--max-iter", type=int, default=500, help="most iterations per ALS fit (default 500)"
    )
    p_demo.add_argument(
        "--plot", metavar="PNG", help="draw error against iteration and time for rank 3"
    )
    p_demo.add_argument("--quiet", action="store_true", help="no progress lines")
    p_demo.set_defaults(func=demo)

    p_cmp = sub.add_parser("compare", help="fit your tensor with several methods side by side")
    p_cmp.add_argument(
        "--data", required=True, metavar="FILE", help=".npy, or .npz (see --data-key)"
    )
    p_cmp.add_argument("--data-key", help="array name in a .npz (default: its only array)")
    p_cmp.add_argument(
        "--rank", required=True, type=_rank, help="CP rank, or Tucker ranks like 3,4,5"
    )
    p_cmp.add_argument("--model", choices=("cp", "tucker"), default="cp")
    p_cmp.add_argument(
        "--methods",
        help="comma-separated among als (cp) or hooi (tucker), opt (L-BFGS), adam, sgd; "
        "default als,opt or hooi,opt",
    )
    p_cmp.add_argument(
        "--lr", type=float, default=0.1, help="learning rate of adam and sgd (default 0.1)"
    )
    p_cmp.add_argument("--mask", metavar="FILE", help="boolean .npy/.npz, True = observed")
    p_cmp.add_argument("--mask-key", help="array name in a mask .npz (default: its only array)")
    p_cmp.add_argument("--max-iter", type=int, default=500)
    p_cmp.add_argument("--tol", type=float, default=1e-7)
    p_cmp.add_argument("--plot", metavar="PNG", help="draw error against iteration and time")
    p_cmp.add_argument("--quiet", action="store_true", help="no progress lines")
    p_cmp.set_defaults(func=compare_cmd)

    from jaxtd import _bench

    p_bench = sub.add_parser(
        "bench", help="benchmark suite: speed against the bandwidth bound and peers, batch, memory"
    )
    _bench.add_arguments(p_bench)
    p_bench.set_defaults(func=_bench.run)

    args = parser.parse_args(argv)
    if getattr(args, "max_iter", 1) < 1:
        parser.error(f"--max-iter must be >= 1, got {args.max_iter}")
    try:
        return args.func(args)
    except (CLIError, ValueError, TypeError) as e:  # bad input, named in the message
        print(f"jaxtd: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
