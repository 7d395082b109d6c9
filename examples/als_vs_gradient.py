"""CP by ALS against gradient fitting (L-BFGS, Adam): error against iterations and time.

    pip install ".[examples]"
    python examples/als_vs_gradient.py [--out als_vs_gradient.png]

Each data set is fitted by ``jaxtd.compare`` with ALS, L-BFGS and Adam from the same SVD
start, in float32:

* top: the amino acid fluorescence data at rank 3 (Adam learning rate 0.1);
* bottom: a hard synthetic case, a 50 x 50 x 50 rank-5 CP tensor whose factor columns have
  congruence 0.9 in every mode, plus 1% Gaussian noise (Adam learning rate 0.01, the lowest
  error after 3000 steps among 0.003 to 0.03: smaller rates are slower, larger ones end up
  oscillating; 0.01 still spikes now and then but recovers).

Every method runs all ``max_iter`` steps (``tol=0``): in float32 the error is resolved only to
about 1e-5, so it repeats exactly by chance and a small ``tol`` stops runs early. Time is
approximated as ``(k + 1) * s_per_iter`` (run time / iterations of the timed call). L-BFGS
stalls once float32 precision runs out, and then each of its failed line searches costs
several steps' worth of time, so its curve is cut where it stops improving and timed from a
run of that length.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxtd  # noqa: E402

LABELS = {"als": "ALS", "opt": "L-BFGS", "adam": "Adam"}


def planted_tensor(shape, rank, congruence=0.9, noise=0.01, seed=0):
    """A rank-``rank`` CP tensor with collinear factors plus Gaussian noise, in float32."""
    x, _ = jaxtd.datasets.make_cp_tensor(shape, rank, congruence=congruence, noise=noise, seed=seed)
    return x.astype(np.float32)


def last_improvement(history, eps=1e-6):
    """Iterations until the best error so far last dropped by more than ``eps``."""
    best = np.minimum.accumulate(history)
    return int(np.flatnonzero(best[:-1] - best[1:] > eps).max(initial=-1)) + 2


def curves(x, rank, adam_lr, max_iter):
    """``{method: (history, seconds per iteration)}``; L-BFGS cut and re-timed at its stall."""
    table = jaxtd.compare(
        x,
        rank,
        ("als", "opt", "adam"),
        optimizers={"adam": optax.adam(adam_lr)},
        max_iter=max_iter,
        tol=0.0,
    )
    print(table)
    out = {run.method: (run.history[: run.n_iter], run.s_per_iter) for run in table}
    n = last_improvement(out["opt"][0])
    timed = jaxtd.compare(x, rank, ("opt",), max_iter=n, tol=0.0)["opt"]
    print(f"L-BFGS stops improving after {n} iterations: {timed.s_per_iter * 1e3:.3f} ms/iter\n")
    out["opt"] = (out["opt"][0][:n], timed.s_per_iter)
    return out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="als_vs_gradient.png")
    args = parser.parse_args()

    amino = jaxtd.datasets.load_aminoacids().tensor.astype(np.float32)
    cases = {
        "amino acids, rank 3": (amino, 3, 0.1, 1500),
        "collinear 50³, rank 5, 1% noise": (planted_tensor((50, 50, 50), 5), 5, 0.01, 3000),
    }
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for row, (title, (x, rank, adam_lr, max_iter)) in zip(ax, cases.items()):
        print(f"{title} (Adam learning rate {adam_lr})")
        for method, (history, s_per_iter) in curves(x, rank, adam_lr, max_iter).items():
            label = LABELS[method] + (f" (lr {adam_lr})" if method == "adam" else "")
            k = np.arange(len(history))
            row[0].plot(k + 1, history, label=label)
            row[1].plot((k + 1) * s_per_iter, history, label=label)
        row[0].set(xlabel="iteration")
        row[1].set(xlabel="time (s), approximated as (k + 1) · s_per_iter", xscale="log")
        for a in row:
            a.set(ylabel="relative error", yscale="log", title=title)
            a.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
