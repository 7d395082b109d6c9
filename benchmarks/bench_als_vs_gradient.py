"""Time for CP-ALS, L-BFGS and Adam to reach the fit ALS converges to, in float32.

    python benchmarks/bench_als_vs_gradient.py

Cases: the amino acid data at rank 3 (Adam learning rate 0.1), and a 100 x 100 x 100 rank-10
CP tensor whose factor columns have congruence 0.9 in every mode, plus 1% Gaussian noise
(Adam learning rate 0.01).

Each method is run by ``jaxtd.compare`` from the same SVD start for a fixed number of steps
(``tol=0``: in float32 the error repeats exactly by chance, so a small ``tol`` would stop runs
early): ALS and Adam 3000, L-BFGS 1000 (it stalls within a few hundred, after which its
failed line searches make each step several times dearer). The target is the final ALS fit
(``fit = 1 - rel_error``) minus 1e-4; a method reaches it at the first iteration ``k`` whose
fit is at least that. Time to target is measured: the method is compiled and timed again
with ``max_iter = k + 1`` (``run_s`` of ``compare``'s second call, so no compilation). The
column ``est. s`` is the cheaper estimate ``(k + 1) * s_per_iter``, which assumes a uniform
time per iteration over the whole run; it overstates L-BFGS, whose stalled steps cost more.
"""

from __future__ import annotations

import numpy as np
import optax

import jaxtd

LABELS = {"als": "ALS", "opt": "L-BFGS", "adam": "Adam"}
MAX_ITER = {"als": 3000, "opt": 1000, "adam": 3000}
GAP = 1e-4


def planted_tensor(shape, rank, congruence=0.9, noise=0.01, seed=0):
    """A rank-``rank`` CP tensor with collinear factors plus Gaussian noise, in float32."""
    x, _ = jaxtd.datasets.make_cp_tensor(shape, rank, congruence=congruence, noise=noise, seed=seed)
    return x.astype(np.float32)


def bench(name, x, rank, adam_lr):
    optimizers = {"adam": optax.adam(adam_lr)}  # built once: a new object compiles anew
    runs = {
        m: jaxtd.compare(x, rank, (m,), optimizers=optimizers, max_iter=n, tol=0.0)[m]
        for m, n in MAX_ITER.items()
    }
    target = runs["als"].fit - GAP
    print(f"\n{name}: shape {x.shape}, rank {rank}, Adam learning rate {adam_lr}")
    print(f"target fit {target:.5f} (final ALS fit {runs['als'].fit:.5f} - {GAP:g})")
    print(
        f"{'method':<8}{'max_iter':>9}{'iters':>7}{'time s':>9}{'x ALS':>8}{'est. s':>9}"
        f"{'final fit':>11}{'compile s':>11}"
    )
    als_s = None
    for m, run in runs.items():
        reached = np.flatnonzero(1 - run.history[: run.n_iter] >= target)
        head = f"{LABELS[m]:<8}{MAX_ITER[m]:>9}"
        tail = f"{run.fit:11.5f}{run.compile_s:11.2f}"
        if reached.size == 0:
            print(f"{head}{'not reached':>33}{tail}")
            continue
        k = int(reached[0])
        timed = jaxtd.compare(x, rank, (m,), optimizers=optimizers, max_iter=k + 1, tol=0.0)[m]
        als_s = timed.run_s if m == "als" else als_s
        print(
            f"{head}{k + 1:7d}{timed.run_s:9.4f}{timed.run_s / als_s:8.1f}"
            f"{(k + 1) * run.s_per_iter:9.4f}{tail}"
        )


def main():
    amino = jaxtd.datasets.load_aminoacids().tensor.astype(np.float32)
    bench("amino acids", amino, 3, 0.1)
    bench("collinear 100³, 1% noise", planted_tensor((100, 100, 100), 10), 10, 0.01)


if __name__ == "__main__":
    main()
