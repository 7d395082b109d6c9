"""Compress a small CNN's conv layers by CP and Tucker-2, from the weights and from data.

    pip install ".[examples]"
    python examples/compress_cnn.py [--out compress_cnn.png]

A three-layer CNN (pure JAX + optax, HWIO kernels, NHWC activations) is trained on
scikit-learn's bundled 8×8 digits (no download) to ≥ 97 % test accuracy. Its two
larger conv layers (3×3, 32→64 with stride 2, and 3×3, 64→64) are then replaced by
factorized chains from ``jaxtd.nn.decompose_conv`` at several ranks:

* **weight fit**: CP-ALS / Tucker-2 HOOI of the kernels alone;
* **data-aware**: the same, then fitted to each layer's outputs on 256 training images
  (the feature-map error is a quadratic form in the kernel error, so no convolution
  runs in that fit);
* **fine-tuned**: the data-aware model trained end to end for a few epochs with optax.

Each layer's data-aware fit uses the original network's activations as its inputs. At
the lowest ranks that can cost accuracy even as the layer errors fall: conv3 then sees
inputs from a badly compressed conv2, which its fit never saw; fine-tuning recovers.

The first table is per layer: parameters and FLOPs before → after, the mean squared
error of the layer's output against the original layer on the test images (inputs
from the original network), and the range of those outputs. The second is per
network: test accuracy of each variant. The figure plots accuracy and feature-map
error against rank.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from jax import lax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from jaxtd import nn  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
# (name, kernel shape, strides); the dense head reads the 4×4×64 map.
CONVS = (("conv1", (3, 3, 1, 32), 1), ("conv2", (3, 3, 32, 64), 2), ("conv3", (3, 3, 64, 64), 1))
COMPRESSED = ("conv2", "conv3")
RANKS = (2, 4, 8, 16, 32)
N_CALIBRATION = 256
TARGET_ACCURACY = 0.97


def load_data():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # (N, 8, 8, 1), NHWC
    return train_test_split(x, digits.target, test_size=0.3, random_state=0, stratify=digits.target)


def init_params(key):
    keys = jax.random.split(key, len(CONVS) + 1)
    params = {}
    for k, (name, shape, _) in zip(keys, CONVS):
        fan_in = shape[0] * shape[1] * shape[2]
        w = jax.random.normal(k, shape, jnp.float32) * np.sqrt(2.0 / fan_in)
        params[name] = {"w": w, "b": jnp.zeros((shape[3],), jnp.float32)}
    w = jax.random.normal(keys[-1], (4 * 4 * 64, 10), jnp.float32) * np.sqrt(1.0 / 1024)
    params["dense"] = {"w": w, "b": jnp.zeros((10,), jnp.float32)}
    return params


def conv_layer(p, x, strides):
    """A conv layer (pre-activation): dense HWIO kernel or a factorized chain, plus bias."""
    if isinstance(p["w"], (nn.CPConv, nn.Tucker2Conv)):
        y = nn.factorized_conv(x, p["w"], strides=strides, padding="SAME")
    else:
        y = lax.conv_general_dilated(x, p["w"], (strides, strides), "SAME", dimension_numbers=DN)
    return y + p["b"]


def activations(params, x):
    """Inputs and (pre-activation) outputs of every conv layer, and the logits."""
    inputs, outputs = {}, {}
    for name, _, strides in CONVS:
        inputs[name] = x
        outputs[name] = conv_layer(params[name], x, strides)
        x = jax.nn.relu(outputs[name])
    logits = x.reshape(x.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]
    return inputs, outputs, logits


def logits_fn(params, x):
    return activations(params, x)[2]


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()


def accuracy(params, x, y):
    return float(jnp.mean(jnp.argmax(jax.jit(logits_fn)(params, x), axis=1) == y))


def train(params, x, y, *, epochs, learning_rate, seed):
    """Adam on minibatches of 64; the step is one compiled function."""
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        grads = jax.grad(loss_fn)(params, xb, yb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    n_batches = len(x) // 64
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for b in range(n_batches):
            idx = order[b * 64 : (b + 1) * 64]
            params, opt_state = step(params, opt_state, x[idx], y[idx])
    return params


def compress(params, kind, rank, calibration):
    """Weight-fit and data-aware copies of ``params`` with conv2 and conv3 factorized."""
    fitted = {"weight": dict(params), "data": dict(params)}
    for name, shape, strides in CONVS:
        if name not in COMPRESSED:
            continue
        kernel = params[name]["w"]
        r = rank if kind == "cp" else (min(rank, shape[3]), min(rank, shape[2]))
        weight = nn.decompose_conv(kernel, r, kind=kind)
        data = nn.decompose_conv(kernel, r, kind=kind, inputs=calibration[name], strides=strides)
        fitted["weight"][name] = {"w": weight, "b": params[name]["b"]}
        fitted["data"][name] = {"w": data, "b": params[name]["b"]}
    return fitted


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="compress_cnn.png")
    args = parser.parse_args()
    start = time.perf_counter()

    x_train, x_test, y_train, y_test = load_data()
    params = train(
        init_params(jax.random.key(0)), x_train, y_train, epochs=40, learning_rate=2e-3, seed=0
    )
    base_accuracy = accuracy(params, x_test, y_test)
    print(f"original CNN: test accuracy {base_accuracy:.4f} ({len(x_test)} test images)")
    if base_accuracy < TARGET_ACCURACY:
        print(f"accuracy below {TARGET_ACCURACY:.0%}: stopping", file=sys.stderr)
        sys.exit(1)

    act = jax.jit(activations)
    calibration, _, _ = act(params, x_train[:N_CALIBRATION])
    test_inputs, test_outputs, _ = act(params, x_test)
    original_params = sum(int(np.prod(shape)) for name, shape, _ in CONVS if name in COMPRESSED)

    layer_rows, net_rows = [], []
    curves = {}
    for kind in ("cp", "tucker2"):
        for rank in RANKS:
            fitted = compress(params, kind, rank, calibration)
            mse = {}
            for name, shape, strides in CONVS:
                if name not in COMPRESSED:
                    continue
                ref = test_outputs[name]
                row = [kind, rank, name]
                before = nn.conv_costs(
                    shape, (8, 8) if name == "conv2" else (4, 4), strides=strides
                )
                after = nn.conv_costs(
                    fitted["data"][name]["w"],
                    (8, 8) if name == "conv2" else (4, 4),
                    strides=strides,
                )
                row += [before, after]
                ranges = [(float(ref.min()), float(ref.max()))]
                for variant in ("weight", "data"):
                    out = conv_layer(fitted[variant][name], test_inputs[name], strides)
                    mse[variant, name] = float(jnp.mean((out - ref) ** 2))
                    ranges.append((float(out.min()), float(out.max())))
                row += [mse["weight", name], mse["data", name], float(jnp.mean(ref**2)), ranges]
                layer_rows.append(row)
            tuned = train(fitted["data"], x_train, y_train, epochs=3, learning_rate=5e-4, seed=1)
            n_params = sum(nn.conv_costs(fitted["data"][name]["w"]).params for name in COMPRESSED)
            accs = [accuracy(p, x_test, y_test) for p in (fitted["weight"], fitted["data"], tuned)]
            net_rows.append([kind, rank, n_params, *accs])
            curves[kind, rank] = dict(
                accs=accs,
                mse_weight=np.mean(
                    [mse["weight", n] / float(jnp.mean(test_outputs[n] ** 2)) for n in COMPRESSED]
                ),  # fmt: skip
                mse_data=np.mean(
                    [mse["data", n] / float(jnp.mean(test_outputs[n] ** 2)) for n in COMPRESSED]
                ),  # fmt: skip
                params=n_params,
            )

    print("\nPer layer (test images; inputs from the original network; MSE of the conv output")
    print("before bias and ReLU, and its share of the output's mean square):")
    header = (
        f"{'kind':8}{'rank':>5} {'layer':6}{'params':>14}{'MFLOPs':>15}"
        f"{'MSE weight':>17}{'MSE data':>17}   {'range original | weight | data'}"
    )
    print(header)
    for kind, rank, name, before, after, mse_w, mse_d, power, ranges in layer_rows:
        rng_text = " | ".join(f"[{lo:6.2f},{hi:6.2f}]" for lo, hi in ranges)
        print(
            f"{kind:8}{rank:>5} {name:6}{before.params:>6} → {after.params:<5}"
            f"{before.flops / 1e6:>6.2f} → {after.flops / 1e6:<5.2f}"
            f"{mse_w:>9.4f} ({mse_w / power:4.0%}){mse_d:>9.4f} ({mse_d / power:4.0%})   {rng_text}"
        )
    print(f"\nPer network (conv2 + conv3 have {original_params} parameters; original accuracy "
          f"{base_accuracy:.4f}):")  # fmt: skip
    print(
        f"{'kind':8}{'rank':>5}{'params':>8}{'weight fit':>12}{'data-aware':>12}{'fine-tuned':>12}"
    )
    for kind, rank, n_params, acc_w, acc_d, acc_t in net_rows:
        print(f"{kind:8}{rank:>5}{n_params:>8}{acc_w:>12.4f}{acc_d:>12.4f}{acc_t:>12.4f}")

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"cp": "-", "tucker2": "--"}
    for kind in ("cp", "tucker2"):
        ls = styles[kind]
        accs = np.array([curves[kind, r]["accs"] for r in RANKS])
        for j, (label, color) in enumerate(
            [("weight fit", "C0"), ("data-aware", "C1"), ("fine-tuned", "C2")]
        ):
            ax[0].plot(RANKS, accs[:, j], ls, color=color, marker="o", label=f"{kind} {label}")
        ax[1].plot(RANKS, [curves[kind, r]["mse_weight"] for r in RANKS], ls, color="C0",
                   marker="o", label=f"{kind} weight fit")  # fmt: skip
        ax[1].plot(RANKS, [curves[kind, r]["mse_data"] for r in RANKS], ls, color="C1",
                   marker="o", label=f"{kind} data-aware")  # fmt: skip
        ax[2].plot([curves[kind, r]["params"] for r in RANKS], accs[:, 2], ls, color="C2",
                   marker="o", label=f"{kind} fine-tuned")  # fmt: skip
        ax[2].plot([curves[kind, r]["params"] for r in RANKS], accs[:, 1], ls, color="C1",
                   marker="o", label=f"{kind} data-aware")  # fmt: skip
    ax[0].axhline(base_accuracy, color="k", lw=0.8, label="original")
    ax[2].axhline(base_accuracy, color="k", lw=0.8, label="original")
    ax[0].set(xscale="log", xlabel="rank", ylabel="test accuracy", title="Accuracy against rank")
    ax[1].set(xscale="log", yscale="log", xlabel="rank", ylabel="relative feature-map MSE",
              title="Layer output error (mean of conv2, conv3)")  # fmt: skip
    ax[2].set(xscale="log", xlabel="parameters in conv2 + conv3", ylabel="test accuracy",
              title=f"Accuracy against size (original {original_params})")  # fmt: skip
    for a in ax[:2]:
        a.minorticks_off()
        a.set_xticks(RANKS, [str(r) for r in RANKS])
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
