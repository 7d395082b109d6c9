"""Image compression: SVD of a grayscale image against CP and Tucker of the colour image.

    pip install ".[examples]"
    python examples/image_compression.py [--out-dir .]

The image is scikit-learn's bundled sample photo ``china.jpg`` (427 × 640 × 3; read from
the installed package, nothing is downloaded). The grayscale version is compressed by a
truncated SVD at ranks 1, 10, 20, 30, 50 and 100. The colour image, an H × W × 3 tensor,
is compressed by CP (``jaxtd.cp_als``) and Tucker (``jaxtd.tucker_hooi``) at the same
numbers of stored values as each SVD (scales absorbed into the factors):

    SVD rank k:              k (H + W)
    CP rank R:               R (H + W + 3)
    Tucker ranks (a, b, c):  H a + W b + 3 c + a b c

The CP rank is the one whose count is closest to the SVD's. Many Tucker ranks come
close; among those within 1 % of the SVD's count (or the closest one, if none is), the
script takes the ranks whose truncated HOSVD is most accurate, read off one full HOSVD
core, and then refines them by HOOI. Quality is the PSNR, 10 log10(1 / MSE), of the
reconstruction clipped to [0, 1]. Note that the SVD compresses one channel (gray) and
CP/Tucker three (colour), so the SVD curve is a reference for the budget rather than
the same task.

Writes ``image_compression_psnr.png`` (PSNR against stored values) and
``image_compression_grid.png`` (the reconstructions) to ``--out-dir``.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_sample_image  # noqa: E402

import jaxtd  # noqa: E402

SVD_RANKS = (1, 10, 20, 30, 50, 100)
# Stop when rel_error falls by less than this in a sweep: CP-ALS on a photo keeps creeping
# down for hundreds of sweeps, but by ~0.001 dB a sweep by then (see --max-iter).
TOL = 1e-5


def svd_params(shape, k):
    return k * (shape[0] + shape[1])


def cp_params(shape, r):
    return r * sum(shape)


def tucker_params(shape, ranks):
    return sum(i * r for i, r in zip(shape, ranks)) + int(np.prod(ranks))


def psnr(image, approx):
    mse = np.mean((np.asarray(image, np.float64) - np.clip(np.asarray(approx), 0, 1)) ** 2)
    return 10 * np.log10(1 / mse)


def closest_cp_rank(shape, budget):
    return max(1, round(budget / sum(shape)))


def hosvd_energy(image):
    """``E[a-1, b-1, c-1] = ‖C[:a, :b, :c]‖²`` for the full HOSVD core ``C`` of ``image``.

    With the full HOSVD (orthogonal ``U_n`` of every mode, core ``C = x ×_n U_nᵀ``), the
    truncated HOSVD at ranks ``(a, b, c)`` keeps the block ``C[:a, :b, :c]``, so its
    squared error is ``‖x‖² − E[a-1, b-1, c-1]``: one cumulative sum scores all ranks.
    """
    full = jaxtd.hosvd(image, image.shape).model.core
    return np.cumsum(np.cumsum(np.cumsum(np.asarray(full, np.float64) ** 2, 0), 1), 2)


def choose_tucker_ranks(shape, energy, budget, slack=0.01):
    """Tucker ranks within ``slack`` of ``budget`` stored values, most accurate by HOSVD."""
    candidates = []
    for c in range(1, shape[2] + 1):
        for a in range(1, shape[0] + 1):
            # The b closest to the budget for this (a, c): the count is linear in b.
            b = round((budget - shape[0] * a - shape[2] * c) / (shape[1] + a * c))
            if 1 <= b <= shape[1]:
                ranks = (a, b, c)
                gap = abs(tucker_params(shape, ranks) - budget)
                candidates.append((gap, -energy[a - 1, b - 1, c - 1], ranks))
    near = [cand for cand in candidates if cand[0] <= slack * budget]
    if not near:  # nothing within the slack: the closest count
        return min(candidates)[2]
    return min(near, key=lambda cand: cand[1])[2]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", default=".")
    parser.add_argument("--max-iter", type=int, default=50, help="most CP-ALS / HOOI sweeps")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    colour = load_sample_image("china.jpg").astype(np.float32) / 255  # (H, W, 3) in [0, 1]
    gray = colour @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
    shape = colour.shape
    print(f"image: china.jpg {shape[0]} x {shape[1]} x {shape[2]}")

    # One SVD serves every rank.
    u, s, vt = (np.asarray(a) for a in jnp.linalg.svd(jnp.asarray(gray), full_matrices=False))
    key = jax.random.key(0)  # CP ranks above 3 (the colour mode) draw extra start columns
    energy = hosvd_energy(colour)
    rows = []
    images = {"svd": [], "cp": [], "tucker": []}
    start = time.perf_counter()
    for k in SVD_RANKS:
        budget = svd_params(gray.shape, k)
        svd_img = (u[:, :k] * s[:k]) @ vt[:k]
        r_cp = closest_cp_rank(shape, budget)
        cp_fit = jaxtd.cp_als(colour, r_cp, key=key, max_iter=args.max_iter, tol=TOL)
        cp_img = np.asarray(jaxtd.cp_to_tensor(cp_fit.model))
        r_tk = choose_tucker_ranks(shape, energy, budget)
        tk_fit = jaxtd.tucker_hooi(colour, r_tk, max_iter=args.max_iter, tol=TOL)
        tk_img = np.asarray(jaxtd.tucker_to_tensor(tk_fit.model))
        rows.append(
            dict(
                k=k,
                svd=(budget, psnr(gray, svd_img)),
                cp=(r_cp, cp_params(shape, r_cp), psnr(colour, cp_img), int(cp_fit.n_iter)),
                tucker=(r_tk, tucker_params(shape, r_tk), psnr(colour, tk_img)),
            )
        )
        for name, img in (("svd", svd_img), ("cp", cp_img), ("tucker", tk_img)):
            images[name].append(np.clip(img, 0, 1))
    elapsed = time.perf_counter() - start

    header = (
        f"{'SVD rank':>8} {'params':>7} {'PSNR':>6} | {'CP rank':>7} {'params':>7} {'PSNR':>6}"
        f" {'sweeps':>6} | {'Tucker ranks':>13} {'params':>7} {'PSNR':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        (p_svd, q_svd), (r_cp, p_cp, q_cp, it), (r_tk, p_tk, q_tk) = (
            row["svd"],
            row["cp"],
            row["tucker"],
        )
        print(
            f"{row['k']:>8} {p_svd:>7} {q_svd:>6.2f} | {r_cp:>7} {p_cp:>7} {q_cp:>6.2f} {it:>6}"
            f" | {str(r_tk):>13} {p_tk:>7} {q_tk:>6.2f}"
        )
    print(f"(PSNR in dB; SVD on the grayscale image, CP and Tucker on colour; {elapsed:.1f} s)")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot([r["svd"][0] for r in rows], [r["svd"][1] for r in rows], "o-", label="SVD (gray)")
    ax.plot([r["cp"][1] for r in rows], [r["cp"][2] for r in rows], "s-", label="CP (colour)")
    ax.plot(
        [r["tucker"][1] for r in rows],
        [r["tucker"][2] for r in rows],
        "^-",
        label="Tucker (colour)",
    )
    ax.set(xscale="log", xlabel="stored values", ylabel="PSNR (dB)", title="china.jpg")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    psnr_path = os.path.join(args.out_dir, "image_compression_psnr.png")
    fig.savefig(psnr_path, dpi=120)

    n = len(SVD_RANKS)
    fig, axes = plt.subplots(3, n + 1, figsize=(2.2 * (n + 1), 2.2 * 3 * shape[0] / shape[1]))
    originals = {"svd": gray, "cp": colour, "tucker": colour}
    for i, name in enumerate(("svd", "cp", "tucker")):
        cmap = "gray" if name == "svd" else None
        axes[i, 0].imshow(originals[name], cmap=cmap, vmin=0, vmax=1)
        axes[i, 0].set_title("original", fontsize=8)
        axes[i, 0].set_ylabel(name.upper() if name != "tucker" else "Tucker", fontsize=9)
        for j, (row, img) in enumerate(zip(rows, images[name])):
            label = {
                "svd": f"rank {row['k']}",
                "cp": f"rank {row['cp'][0]}",
                "tucker": f"ranks {row['tucker'][0]}",
            }[name]
            quality = row[name][1] if name == "svd" else row[name][2]
            axes[i, j + 1].imshow(img, cmap=cmap, vmin=0, vmax=1)
            axes[i, j + 1].set_title(f"{label}\n{quality:.1f} dB", fontsize=7)
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    grid_path = os.path.join(args.out_dir, "image_compression_grid.png")
    fig.savefig(grid_path, dpi=120)
    print(f"wrote {psnr_path} and {grid_path}")


if __name__ == "__main__":
    main()
