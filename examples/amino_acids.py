"""CP on the amino acid fluorescence data: error against rank, and the rank-3 components.

    pip install ".[examples]"
    python examples/amino_acids.py [--out amino_acids.png]

Top left: CP relative error against rank (the drop stops at rank 3, the number of
amino acids). Top right: the rank-3 sample factor against the known concentrations.
Bottom: the rank-3 emission and excitation loadings, the pure spectra of tryptophan,
tyrosine and phenylalanine.
"""

import argparse

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxtd  # noqa: E402
from jaxtd.__main__ import AMINO_ACIDS, match_concentrations  # noqa: E402


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="amino_acids.png")
    args = parser.parse_args()

    data = jaxtd.datasets.load_aminoacids()
    x = data.tensor.astype(np.float32)
    ranks = range(1, 7)
    # Ranks above the smallest mode (5 samples) draw their extra starting columns from a key.
    fits = {r: jaxtd.cp_als(x, r, max_iter=1000, tol=1e-7, key=jax.random.key(0)) for r in ranks}
    errors = [float(fits[r].rel_error) for r in ranks]
    for r, e in zip(ranks, errors):
        print(f"rank {r}: rel_error {e:.4f}  fit {1 - e:.4f}  iterations {int(fits[r].n_iter)}")

    model = fits[3].model
    weights = np.asarray(model.weights)
    samples, emission, excitation = (np.asarray(f) for f in model.factors)
    # CP fixes each component only up to signs that cancel across modes: make both spectra
    # mostly positive and move their signs into the sample factor.
    s_em, s_ex = np.sign(emission.sum(axis=0)), np.sign(excitation.sum(axis=0))
    emission, excitation, samples = emission * s_em, excitation * s_ex, samples * (s_em * s_ex)
    pairs = match_concentrations(samples, data.concentrations)
    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    ax[0, 0].plot(list(ranks), errors, "o-")
    ax[0, 0].set(
        xlabel="CP rank", ylabel="relative error", yscale="log", title="error against rank"
    )
    for (component, r), name in zip(pairs, AMINO_ACIDS):
        conc = data.concentrations[:, AMINO_ACIDS.index(name)]
        score = samples[:, component] * weights[component]
        ax[0, 1].plot(
            conc / conc.max(), score / np.abs(score).max(), "o", label=f"{name} (r = {r:+.4f})"
        )
        ax[1, 0].plot(data.emission_nm, emission[:, component], label=name)
        ax[1, 1].plot(data.excitation_nm, excitation[:, component], label=name)
    ax[0, 1].set(
        xlabel="known concentration (scaled)",
        ylabel="sample score (scaled)",
        title="rank-3 sample factor",
    )
    ax[1, 0].set(xlabel="emission (nm)", ylabel="loading", title="emission spectra")
    ax[1, 1].set(xlabel="excitation (nm)", ylabel="loading", title="excitation spectra")
    for a in ax.flat[1:]:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
