r"""Compressing conv and dense layers: CP, Tucker-2 and SVD factorisations as pure functions.

No neural-network framework is assumed. A factorized layer is a ``NamedTuple`` of
arrays (so a pytree that ``jax.grad`` and optax train directly), and it is applied by a
pure function:

* a conv kernel ``(k_h, k_w, C_in, C_out)`` becomes a :class:`CPConv` or a
  :class:`Tucker2Conv` (:func:`decompose_conv`), applied by :func:`factorized_conv`;
* a dense weight ``(in, out)`` becomes an :class:`SVDDense`, :class:`CPDense` or
  :class:`TuckerDense` (:func:`decompose_dense`), applied by :func:`factorized_dense`.

**Layout.** Kernels are HWIO and activations NHWC: the layout of
``jax.lax.conv_general_dilated(x, kernel, ..., dimension_numbers=("NHWC", "HWIO",
"NHWC"))`` and of Flax's ``nn.Conv``. A PyTorch ``Conv2d`` weight is OIHW and its
activations NCHW; convert with ``kernel = weight.transpose(2, 3, 1, 0)`` and
``x = x_nchw.transpose(0, 2, 3, 1)`` (and back with ``dense_kernel(layer).transpose(3,
2, 0, 1)``). A dense weight is ``(in, out)`` with ``y = x @ W``; PyTorch's ``Linear``
stores ``W.T``. Biases are not factorized: keep the layer's bias and add it after the
chain.

**CP** (``kind="cp"``, Lebedev et al. 2015): the rank-``R`` CP model of the 4-way kernel

.. math::
    K[h, w, i, o] ≈ \sum_r V[h, r]\, H[w, r]\, F[i, r]\, L[r, o]

is the chain 1×1 conv ``C_in → R`` (``F``), a ``k_h × 1`` depthwise conv (``V``), a
``1 × k_w`` depthwise conv (``H``), and a 1×1 conv ``R → C_out`` (``L``). The stride,
padding and dilation of the original layer split between the two depthwise convs,
so the chain computes exactly ``conv(x, dense_kernel(layer))``.

**Tucker-2** (``kind="tucker2"``, Kim et al. 2016): Tucker on the two channel modes only,

.. math::
    K[h, w, i, o] ≈ \sum_{a, b} G[h, w, a, b]\, F[i, a]\, L[b, o],

is the chain 1×1 conv ``C_in → R_in``, the ``k_h × k_w`` conv ``R_in → R_out`` with
the original stride, padding and dilation, and a 1×1 conv ``R_out → C_out``.

**Data-aware fitting.** A conv layer is linear in its kernel: its output at one
position is ``pᵀ K`` for the input patch ``p`` (length ``D = k_h k_w C_in``, ordered
like ``kernel.reshape(D, C_out)``). Over calibration inputs the squared feature-map
error of a kernel error ``ΔK`` is therefore

.. math::
    \sum_{\text{patches}} \|p^\top ΔK\|^2 = \mathrm{tr}(ΔK^\top S\, ΔK),
    \qquad S = \sum_{\text{patches}} p\, p^\top \in \mathbb{R}^{D \times D}

(:func:`patch_moment`), a quadratic form that needs no convolution. Given ``inputs``,
:func:`decompose_conv` starts from the weight fit and minimises it over the factors.

**Costs.** :func:`conv_costs` and :func:`dense_costs` give parameters and FLOPs
(2 per multiply–add), and :func:`rank_for_budget` the largest rank within a budget.
:func:`evbmf_ranks` picks Tucker-2 ranks by empirical variational Bayesian matrix
factorisation, as Kim et al. do.

References:
    V. Lebedev, Y. Ganin, M. Rakhuba, I. Oseledets, V. Lempitsky, "Speeding-up
    convolutional neural networks using fine-tuned CP-decomposition", ICLR 2015.

    Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang, D. Shin, "Compression of deep
    convolutional neural networks for fast and low power mobile applications",
    ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from jaxtd import _validate
from jaxtd._cp_als import cp_als
from jaxtd._evbmf import EVBMFResult, evbmf
from jaxtd._loop import minimize
from jaxtd._models import CPTensor
from jaxtd._result import Status
from jaxtd._tensor import (
    contract_shared_rank,
    multi_mode_dot,
)
from jaxtd._tucker_hooi import tucker_hooi

__all__ = [
    "CPConv",
    "CPDense",
    "Costs",
    "EVBMFResult",
    "SVDDense",
    "Tucker2Conv",
    "TuckerDense",
    "conv_costs",
    "decompose_conv",
    "decompose_dense",
    "dense_costs",
    "dense_kernel",
    "dense_matrix",
    "evbmf",
    "evbmf_ranks",
    "factorized_conv",
    "factorized_dense",
    "max_cp_rank",
    "patch_moment",
    "rank_for_budget",
]

_DN = ("NHWC", "HWIO", "NHWC")
_PAD_NAMES = ("SAME", "SAME_LOWER", "VALID")
_CONV_KINDS = ("cp", "tucker2")
_DENSE_KINDS = ("svd", "cp", "tucker")
# Patches are formed this many elements at a time when accumulating the moment matrix.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- layers


class CPConv(NamedTuple):
    """A conv kernel as a CP chain: 1×1, ``k_h×1`` depthwise, ``1×k_w`` depthwise, 1×1.

    ``K[h, w, i, o] = Σ_r vertical[h, r] horizontal[w, r] first[i, r] last[r, o]``.

    Attributes:
        first: ``(C_in, R)``, the 1×1 conv ``C_in → R``.
        vertical: ``(k_h, R)``, one ``k_h × 1`` filter per channel.
        horizontal: ``(k_w, R)``, one ``1 × k_w`` filter per channel.
        last: ``(R, C_out)``, the 1×1 conv ``R → C_out``.
    """

    first: Array
    vertical: Array
    horizontal: Array
    last: Array


class Tucker2Conv(NamedTuple):
    """A conv kernel as a Tucker-2 chain: 1×1, ``k_h×k_w``, 1×1.

    ``K[h, w, i, o] = Σ_{a,b} core[h, w, a, b] first[i, a] last[b, o]``.

    Attributes:
        first: ``(C_in, R_in)``, the 1×1 conv ``C_in → R_in``.
        core: ``(k_h, k_w, R_in, R_out)``, an HWIO kernel.
        last: ``(R_out, C_out)``, the 1×1 conv ``R_out → C_out``.
    """

    first: Array
    core: Array
    last: Array


class SVDDense(NamedTuple):
    """A dense weight as two matrices: ``W ≈ first @ last``.

    Attributes:
        first: ``(in, R)``.
        last: ``(R, out)``.
    """

    first: Array
    last: Array


class CPDense(NamedTuple):
    """A dense weight reshaped to ``(i_1..i_a, o_1..o_b)`` as a CP model (unit weights).

    ``W[(i_1..i_a), (o_1..o_b)] = Σ_r Π_k in_factors[k][i_k, r] Π_k out_factors[k][o_k, r]``,
    with the flat indices in C order.

    Attributes:
        in_factors: ``a`` arrays ``(i_k, R)``.
        out_factors: ``b`` arrays ``(o_k, R)``.
    """

    in_factors: tuple[Array, ...]
    out_factors: tuple[Array, ...]


class TuckerDense(NamedTuple):
    """A dense weight reshaped to ``(i_1..i_a, o_1..o_b)`` as a Tucker model.

    Attributes:
        core: ``(r_1..r_a, s_1..s_b)``.
        in_factors: ``a`` arrays ``(i_k, r_k)``.
        out_factors: ``b`` arrays ``(o_k, s_k)``.
    """

    core: Array
    in_factors: tuple[Array, ...]
    out_factors: tuple[Array, ...]


ConvLayer = CPConv | Tucker2Conv
DenseLayer = SVDDense | CPDense | TuckerDense


class Costs(NamedTuple):
    """Size and arithmetic of a layer.

    Attributes:
        params: number of weights (biases are not counted).
        flops: floating-point operations for one input (one image for a conv, one row
            for a dense layer), counting a multiply–add as 2.
    """

    params: int
    flops: int


# ----------------------------------------------------------------------- validation


def _kernel(kernel) -> Array:
    return _validate.as_tensor(kernel, "kernel", ndim=4)


def _check_finite(value: Array, name: str) -> None:
    """Raise on NaN/Inf in a concrete array; traced arrays pass (their NaN shows in results)."""
    if isinstance(value, jax.core.Tracer):
        return
    if not bool(jnp.all(jnp.isfinite(value))):
        raise ValueError(f"{name} contains NaN or Inf")


def _nonnegative(value, name: str):
    """A finite number ≥ 0 (a traced value passes as is)."""
    try:
        concrete = float(value)
    except jax.errors.ConcretizationTypeError:
        return value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not np.isfinite(concrete) or concrete < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints, each ≥ 1 (strides, dilations, kernel sizes)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (_validate.as_int(value[0], name), _validate.as_int(value[1], name))
    else:
        v = _validate.as_int(value, name)
        pair = (v, v)
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair


def _padding(value):
    """``"SAME"``, ``"SAME_LOWER"``, ``"VALID"``, or two ``(low, high)`` pairs of ints ≥ 0."""
    if isinstance(value, str):
        if value not in _PAD_NAMES:
            raise ValueError(
                f"padding must be one of {_PAD_NAMES} or two (low, high) pairs, got {value!r}"
            )
        return value
    bad = ValueError(
        f"padding must be one of {_PAD_NAMES} or two (low, high) pairs of ints >= 0, got {value!r}"
    )
    if not isinstance(value, Sequence) or len(value) != 2:
        raise bad
    pads = []
    for pair in value:
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise bad
        lo, hi = (_validate.as_int(p, "padding") for p in pair)
        if lo < 0 or hi < 0:
            raise bad
        pads.append((lo, hi))
    return tuple(pads)


def _conv_args(strides, padding, rhs_dilation):
    return _pair(strides, "strides"), _padding(padding), _pair(rhs_dilation, "rhs_dilation")


def _geometry(in_hw, kernel_hw, strides, padding, dilation, name: str = "x"):
    """Explicit ``(low, high)`` pads and the output size ``(H', W')`` of a conv."""
    window = tuple((k - 1) * d + 1 for k, d in zip(kernel_hw, dilation))
    if isinstance(padding, str):
        pads = tuple(tuple(p) for p in lax.padtype_to_pads(in_hw, window, strides, padding))
    else:
        pads = padding
    out = tuple(
        (i + lo + hi - w) // s + 1 if i + lo + hi >= w else 0
        for i, (lo, hi), w, s in zip(in_hw, pads, window, strides)
    )
    if min(out) < 1:
        raise ValueError(
            f"{name} of spatial size {tuple(in_hw)} is smaller than the dilated kernel "
            f"{window} with padding {pads}: the conv output would be empty"
        )
    return pads, out


def _layer_shape(layer) -> tuple[int, int, int, int]:
    """``(k_h, k_w, C_in, C_out)`` of a factorized conv layer."""
    if isinstance(layer, CPConv):
        return (
            layer.vertical.shape[0],
            layer.horizontal.shape[0],
            layer.first.shape[0],
            layer.last.shape[1],
        )
    if isinstance(layer, Tucker2Conv):
        return tuple(layer.core.shape[:2]) + (layer.first.shape[0], layer.last.shape[1])
    raise TypeError(f"layer must be a CPConv or a Tucker2Conv, got {type(layer).__name__}")


def max_cp_rank(shape: Sequence[int]) -> int:
    """The largest CP rank accepted for a tensor of this shape.

    A CP model of rank ``R`` has ``R · Σ_n I_n`` parameters; past
    ``⌊Π_n I_n / Σ_n I_n⌋`` it would be larger than the dense tensor, which defeats
    compression. (Any tensor has an exact CP model below the product of all but its
    largest size, which is larger still.) For a conv kernel ``(k_h, k_w, C_in, C_out)``
    this keeps the CP chain no larger than the kernel.

    Example:
        >>> max_cp_rank((3, 3, 64, 64))
        275
    """
    shape = tuple(int(s) for s in shape)
    return max(1, math.prod(shape) // sum(shape))


def _conv_rank(rank, kind: str, shape) -> tuple[int, ...]:
    """The rank of a conv factorization: ``(R,)`` for CP, ``(R_out, R_in)`` for Tucker-2."""
    kh, kw, cin, cout = shape
    if kind == "cp":
        r = _validate.as_int(rank, "rank")
        bound = max_cp_rank(shape)
        if r < 1 or r > bound:
            raise ValueError(
                f"rank must be in [1, {bound}] for a CP conv of kernel {tuple(shape)} "
                f"(beyond {bound} the chain has more parameters than the kernel), got {r}"
            )
        return (r,)
    if isinstance(rank, Sequence) or np.ndim(rank) == 1:
        if len(rank) != 2:
            raise ValueError(f"rank for tucker2 must be an int or (R_out, R_in), got {rank!r}")
        r_out, r_in = (_validate.as_int(r, "rank") for r in rank)
    else:
        r_out = r_in = _validate.as_int(rank, "rank")
    if min(r_out, r_in) < 1 or r_out > cout or r_in > cin:
        raise ValueError(
            f"rank (R_out, R_in) = {(r_out, r_in)} for tucker2 must satisfy "
            f"1 <= R_out <= C_out = {cout} and 1 <= R_in <= C_in = {cin} "
            f"(kernel {tuple(shape)})"
        )
    return (r_out, r_in)


# --------------------------------------------------------------------- conv: apply


def factorized_conv(
    x,
    layer: ConvLayer,
    *,
    strides=(1, 1),
    padding="SAME",
    rhs_dilation=(1, 1),
) -> Array:
    """Apply a factorized conv layer to NHWC activations as a chain of convolutions.

    Equal to ``lax.conv_general_dilated(x, dense_kernel(layer), strides, padding,
    rhs_dilation=rhs_dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))`` up to
    rounding. The 1×1 stages are matrix products over the channel axis; the spatial
    stages are ``lax.conv_general_dilated``, depthwise (``feature_group_count=R``)
    for CP. For CP the vertical filter takes the stride, padding and dilation along
    the height, the horizontal one along the width.

    Cost per image (multiply–adds), input ``H × W``, output ``H' × W'``:
    CP ``HW·C_in R + H'W·k_h R + H'W'·k_w R + H'W'·R C_out``; Tucker-2
    ``HW·C_in R_in + H'W'·k_h k_w R_in R_out + H'W'·R_out C_out`` (see :func:`conv_costs`).

    Args:
        x: ``(N, H, W, C_in)``.
        layer: a :class:`CPConv` or :class:`Tucker2Conv`.
        strides: an int or ``(s_h, s_w)``.
        padding: ``"SAME"``, ``"SAME_LOWER"``, ``"VALID"``, or ``((lo_h, hi_h), (lo_w, hi_w))``.
        rhs_dilation: kernel dilation, an int or ``(d_h, d_w)``.

    Returns:
        ``(N, H', W', C_out)``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> rng = np.random.default_rng(0)
        >>> kernel = rng.standard_normal((3, 3, 6, 8))
        >>> layer = decompose_conv(kernel, (4, 3), kind="tucker2")
        >>> x = rng.standard_normal((1, 8, 8, 6))
        >>> y = factorized_conv(x, layer, strides=2)
        >>> ref = jax.lax.conv_general_dilated(x, dense_kernel(layer), (2, 2), "SAME",
        ...     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        >>> y.shape, bool(jnp.allclose(y, ref, atol=1e-4))
        ((1, 4, 4, 8), True)
    """
    kh, kw, cin, _ = _layer_shape(layer)
    if not hasattr(x, "shape"):
        x = jnp.asarray(x)
    if x.ndim != 4 or x.shape[3] != cin:
        raise ValueError(
            f"x must be NHWC with C_in = {cin} channels (the layer's), got shape {tuple(x.shape)}"
        )
    strides, padding, dilation = _conv_args(strides, padding, rhs_dilation)
    pads, _ = _geometry(x.shape[1:3], (kh, kw), strides, padding, dilation)
    z = jnp.tensordot(x, layer.first, axes=(3, 0))  # 1×1: C_in → R
    if isinstance(layer, CPConv):
        r = layer.first.shape[1]
        z = lax.conv_general_dilated(
            z,
            layer.vertical[:, None, None, :],  # (k_h, 1, 1, R), one filter per channel
            (strides[0], 1),
            (pads[0], (0, 0)),
            rhs_dilation=(dilation[0], 1),
            dimension_numbers=_DN,
            feature_group_count=r,
        )
        z = lax.conv_general_dilated(
            z,
            layer.horizontal[None, :, None, :],  # (1, k_w, 1, R)
            (1, strides[1]),
            ((0, 0), pads[1]),
            rhs_dilation=(1, dilation[1]),
            dimension_numbers=_DN,
            feature_group_count=r,
        )
    else:
        z = lax.conv_general_dilated(
            z, layer.core, strides, pads, rhs_dilation=dilation, dimension_numbers=_DN
        )
    return jnp.tensordot(z, layer.last, axes=(3, 0))  # 1×1: R → C_out


def dense_kernel(layer: ConvLayer) -> Array:
    """The HWIO kernel ``(k_h, k_w, C_in, C_out)`` a factorized conv layer stands for.

    Example:
        >>> import jax.numpy as jnp
        >>> layer = CPConv(jnp.ones((4, 2)), jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones((2, 5)))
        >>> dense_kernel(layer).shape
        (3, 3, 4, 5)
    """
    _layer_shape(layer)
    if isinstance(layer, CPConv):
        return jnp.einsum(
            "hr,wr,ir,ro->hwio", layer.vertical, layer.horizontal, layer.first, layer.last
        )
    return jnp.einsum("hwab,ia,bo->hwio", layer.core, layer.first, layer.last)


# ----------------------------------------------------------------- conv: decompose


def patch_moment(
    inputs,
    kernel_size,
    *,
    strides=(1, 1),
    padding="SAME",
    rhs_dilation=(1, 1),
) -> Array:
    r"""Second-moment matrix of the input patches a conv layer sees: ``S = Σ_p p pᵀ``.

    ``p`` runs over every output position of every image, with the layer's strides,
    padding (zeros) and dilation, and is ordered ``(h, w, c)``, like
    ``kernel.reshape(D, C_out)``, ``D = k_h k_w C_in``. Then for any two kernels the
    summed squared difference of the layer outputs on ``inputs`` is
    ``tr(ΔKᵀ S ΔK)`` with ``ΔK = (K₁ − K₂).reshape(D, C_out)``; divide by
    ``N H' W' C_out`` for the mean squared error. ``S`` is a sum, so moments of
    several batches add up.

    Patches are formed a few images at a time (one ``lax.scan``), so memory stays near
    ``D²`` plus one chunk of patches. Cost ``O(N H' W' D²)``.

    Args:
        inputs: NHWC calibration activations ``(N, H, W, C_in)``.
        kernel_size: ``(k_h, k_w)``, or an int for both.
        strides, padding, rhs_dilation: as in :func:`factorized_conv`.

    Returns:
        ``(D, D)``, in the dtype of ``inputs``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((2, 5, 5, 3))
        >>> s = patch_moment(x, 3)
        >>> k1, k2 = rng.standard_normal((2, 3, 3, 3, 4))
        >>> conv = lambda k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
        ...     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        >>> d = (k1 - k2).reshape(27, 4)
        >>> bool(jnp.allclose(jnp.sum((conv(k1) - conv(k2)) ** 2), jnp.trace(d.T @ s @ d),
        ...     rtol=1e-4))
        True
    """
    inputs = _validate.as_tensor(inputs, "inputs", ndim=4)
    kernel_size = _pair(kernel_size, "kernel_size")
    strides, padding, dilation = _conv_args(strides, padding, rhs_dilation)
    pads, _ = _geometry(inputs.shape[1:3], kernel_size, strides, padding, dilation, "inputs")
    return _patch_moment(
        inputs, kernel_size=kernel_size, strides=strides, pads=pads, dilation=dilation
    )


@partial(jax.jit, static_argnames=("kernel_size", "strides", "pads", "dilation"))
def _patch_moment(inputs, *, kernel_size, strides, pads, dilation) -> Array:
    n, h, w, c = inputs.shape
    kh, kw = kernel_size
    d = kh * kw * c
    _, (out_h, out_w) = _geometry((h, w), kernel_size, strides, pads, dilation)
    chunk = max(1, min(n, _CHUNK_ELEMENTS // (out_h * out_w * d)))
    n_chunks = -(-n // chunk)
    # Zero images add zero patches (the padding is zeros too), so padding the batch is exact.
    padded = jnp.concatenate([inputs, jnp.zeros((n_chunks * chunk - n, h, w, c), inputs.dtype)])
    batches = padded.reshape(n_chunks, chunk, h, w, c)

    def add(acc, xb):
        p = lax.conv_general_dilated_patches(
            xb,
            kernel_size,
            strides,
            pads,
            rhs_dilation=dilation,
            dimension_numbers=_DN,
            precision=lax.Precision.HIGHEST,
        ).reshape(-1, d)
        return acc + jnp.matmul(p.T, p, precision=lax.Precision.HIGHEST), None

    s, _ = lax.scan(add, jnp.zeros((d, d), inputs.dtype), batches)
    # conv_general_dilated_patches orders a patch (c, h, w); the kernel reshape is (h, w, c).
    return s.reshape(c, kh, kw, c, kh, kw).transpose(1, 2, 0, 4, 5, 3).reshape(d, d)


def decompose_conv(
    kernel,
    rank,
    *,
    kind: str = "cp",
    inputs=None,
    moment=None,
    strides=(1, 1),
    padding="SAME",
    rhs_dilation=(1, 1),
    max_iter: int = 200,
    tol: float = 1e-7,
    data_max_iter: int = 200,
    damping: float = 1e-3,
    optimizer=None,
) -> ConvLayer:
    r"""Factorize an HWIO conv kernel into a CP or Tucker-2 chain, from the weights or the data.

    **Weight fit.** ``kind="cp"``: CP-ALS (:func:`jaxtd.cp_als`) of the kernel, its
    weights spread evenly over the four factors (``|w_r|^{1/4}`` each, the sign in
    ``last``) so that no stage of the chain is much larger than another. The start
    needs no random key: with ``U_in``, ``U_out`` the singular vectors of the mode-``C_in``
    and mode-``C_out`` unfoldings, the kernel is exactly
    ``Σ_{i,o,s} σ_{ios} a_{ios} ⊗ b_{ios} ⊗ U_in[:, i] ⊗ U_out[:, o]``, where
    ``(σ, a, b)`` are the singular triplets of the ``k_h × k_w`` slices of the
    Tucker-2 core ``K ×_I U_inᵀ ×_O U_outᵀ``. These rank-1 terms are mutually
    orthogonal, and the ``R`` largest start ALS (the dropped energy is the start's
    squared error). ALS runs on the kernel permuted to ``(C_in, k_h, k_w, C_out)``,
    which keeps the largest MTTKRP intermediate at ``size(K) · R / min(C_in, C_out)``.
    ``kind="tucker2"``: HOOI (:func:`jaxtd.tucker_hooi`) with ranks
    ``(k_h, k_w, R_in, R_out)``; the (square, orthogonal) spatial factors are
    absorbed into the core, so ``first`` and ``last`` have orthonormal columns/rows.

    **Data-aware fit** (``inputs`` or ``moment`` given). With ``S`` the patch moment of
    the calibration inputs (:func:`patch_moment`), damped to
    ``S_λ = S + λ (tr S / D) I`` (``λ = damping``), the factors minimise the relative
    feature-map error

    .. math::
        f = \tfrac12\, \mathrm{tr}(ΔK^\top S_λ ΔK) / \mathrm{tr}(K^\top S_λ K),
        \qquad ΔK = K − \hat K(\text{factors}),

    so ``sqrt(2 f)`` is ``‖conv(x, K) − chain(x)‖ / ‖conv(x, K)‖`` over the calibration
    set (for ``λ = 0``). The damping keeps directions the calibration data never
    excites close to the weight fit. From the weight fit, the linear last stage is
    first refitted in closed form (CP: ``L = (AᵀS_λA)⁻¹ AᵀS_λK`` with ``A`` the
    Khatri–Rao product of the other factors; Tucker-2: the core,
    ``G = (BᵀS_λB)⁻¹ BᵀS_λK Lᵀ`` with ``B = I ⊗ first``), then all factors are
    optimised together by ``optimizer`` (default L-BFGS) in one compiled loop. Each
    step costs ``O(D² C_out)``; there is no convolution in the loop.

    **Memory.** For a ``(3, 3, 512, 512)`` float32 kernel (9.4 MB) at rank 256, XLA's
    compiled memory analysis gives 35 MB of temporaries for CP (3.7× the kernel) and
    31 MB for Tucker-2 at ``(256, 256)`` (3.3×). The data-aware fit also holds ``S``
    (``D²`` entries: 85 MB there) and about 1.5–2× that in temporaries.

    Args:
        kernel: ``(k_h, k_w, C_in, C_out)``, float32 or float64 (the result keeps it).
        rank: CP: ``R`` in ``[1, max_cp_rank(kernel.shape)]`` (beyond, the chain is
            larger than the kernel). Tucker-2: ``(R_out, R_in)``, or one int for both,
            with ``R_in ≤ C_in`` and ``R_out ≤ C_out``.
        kind: ``"cp"`` or ``"tucker2"``.
        inputs: calibration activations ``(N, H, W, C_in)`` (NHWC) of this layer, cast
            to the kernel's dtype; enables the data-aware fit.
        moment: instead of ``inputs``, a precomputed ``(D, D)`` :func:`patch_moment`
            (e.g. summed over many batches).
        strides, padding, rhs_dilation: the layer's conv settings, used to form the
            patches of ``inputs``.
        max_iter: the most ALS/HOOI sweeps of the weight fit.
        tol: stopping tolerance on the change of the relative error, for both fits.
        data_max_iter: the most optimizer steps of the data-aware fit.
        damping: ``λ`` above.
        optimizer: an ``optax.GradientTransformation`` for the data-aware fit; default
            ``optax.lbfgs()``.

    Returns:
        A :class:`CPConv` or :class:`Tucker2Conv` in the kernel's dtype. NaN or Inf in
        ``kernel``, ``inputs`` or ``moment`` raise ``ValueError`` in an eager call;
        under ``jit`` they propagate into the layer.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> kernel = rng.standard_normal((3, 3, 6, 8))
        >>> layer = decompose_conv(kernel, 5)
        >>> [f.shape for f in layer]
        [(6, 5), (3, 5), (3, 5), (5, 8)]
        >>> decompose_conv(kernel, (4, 3), kind="tucker2").core.shape  # (R_out, R_in)
        (3, 3, 3, 4)
        >>> x = rng.standard_normal((4, 6, 6, 6))  # calibration activations, NHWC
        >>> layer = decompose_conv(kernel, 5, inputs=x)
    """
    kernel = _kernel(kernel)
    kind = _validate.choice(kind, "kind", _CONV_KINDS)
    ranks = _conv_rank(rank, kind, kernel.shape)
    strides, padding, dilation = _conv_args(strides, padding, rhs_dilation)
    max_iter = _validate.max_iter(max_iter)
    data_max_iter = _validate.as_int(data_max_iter, "data_max_iter")
    if data_max_iter < 1:
        raise ValueError(f"data_max_iter must be >= 1, got {data_max_iter}")
    tol = _validate.tol(tol)
    damping = _nonnegative(damping, "damping")
    optimizer = _validate.optimizer(optimizer)
    kh, kw, cin, _ = kernel.shape
    d = kh * kw * cin
    _check_finite(kernel, "kernel")
    if inputs is not None and moment is not None:
        raise ValueError("give inputs or moment, not both")
    if inputs is not None:
        inputs = _validate.as_tensor(inputs, "inputs", ndim=4)
        if inputs.shape[3] != cin:
            raise ValueError(
                f"inputs has {inputs.shape[3]} channels (shape {tuple(inputs.shape)}) but the "
                f"kernel {tuple(kernel.shape)} expects C_in = {cin}"
            )
        _check_finite(inputs, "inputs")
        pads, _ = _geometry(inputs.shape[1:3], (kh, kw), strides, padding, dilation, "inputs")
        moment = _patch_moment(
            inputs.astype(kernel.dtype),
            kernel_size=(kh, kw),
            strides=strides,
            pads=pads,
            dilation=dilation,
        )
    elif moment is not None:
        moment = _validate.as_tensor(moment, "moment", ndim=2)
        if moment.shape != (d, d):
            raise ValueError(
                f"moment must be (D, D) = {(d, d)} for kernel {tuple(kernel.shape)} "
                f"(D = k_h k_w C_in), got {tuple(moment.shape)}"
            )
        _check_finite(moment, "moment")
        moment = moment.astype(kernel.dtype)
    # Two compiled functions, so that the weight fit is shared by data-aware calls.
    layer = _weight_fit(kernel, tol, kind=kind, ranks=ranks, max_iter=max_iter)
    if moment is None:
        return layer
    return _data_fit(
        kernel, layer, moment, damping, tol, max_iter=data_max_iter, optimizer=optimizer
    )


@partial(jax.jit, static_argnames=("kind", "ranks", "max_iter"))
def _weight_fit(kernel, tol, *, kind, ranks, max_iter) -> ConvLayer:
    if kind == "cp":
        return _cp_weight_fit(kernel, ranks[0], max_iter, tol)
    return _tucker2_weight_fit(kernel, ranks, max_iter, tol)


def _cp_start(kernel: Array, rank: int) -> CPTensor:
    """The keyless CP start over modes ``(C_in, k_h, k_w, C_out)``: the ``R`` largest
    orthogonal rank-1 terms of the Tucker-2 core slices (see :func:`decompose_conv`).

    Everything runs one spatial position or one input channel at a time, so the only
    kernel-sized intermediate is the core itself (no unfolded or transposed copies).
    """
    kh, kw, cin, cout = kernel.shape
    planes = kernel.reshape(kh * kw, cin, cout)  # K_p, one (C_in, C_out) matrix per position

    def grams(acc, k_p):
        return (acc[0] + k_p @ k_p.T, acc[1] + k_p.T @ k_p), None

    zeros = (jnp.zeros((cin, cin), kernel.dtype), jnp.zeros((cout, cout), kernel.dtype))
    (gram_in, gram_out), _ = lax.scan(grams, zeros, planes)
    # Complete orthonormal channel bases; their order does not matter (the selection
    # below is global).
    u_in, u_out = jnp.linalg.eigh(gram_in)[1], jnp.linalg.eigh(gram_out)[1]
    core = lax.map(lambda k_p: u_in.T @ k_p @ u_out, planes)  # (k_h k_w, C_in, C_out)
    m = min(kh, kw)

    def slice_spectra(i):  # singular values of the k_h × k_w slices of input channel i
        row = lax.dynamic_index_in_dim(core, i, axis=1, keepdims=False)  # (k_h k_w, C_out)
        return jnp.linalg.svd(row.T.reshape(cout, kh, kw), compute_uv=False)  # (C_out, m)

    sigma = lax.map(slice_spectra, jnp.arange(cin))  # (C_in, C_out, m)
    _, idx = lax.top_k(sigma.reshape(-1), rank)
    i, rest = jnp.divmod(idx, cout * m)
    o, s = jnp.divmod(rest, m)
    chosen = core[:, i, o].T.reshape(rank, kh, kw)
    u, sv, vt = jnp.linalg.svd(chosen, full_matrices=False)  # (R, k_h, m), (R, m), (R, m, k_w)
    cols = jnp.arange(rank)
    vertical = (u[cols, :, s] * sv[cols, s][:, None]).T  # (k_h, R)
    horizontal = vt[cols, s, :].T  # (k_w, R)
    factors = (u_in[:, i], vertical, horizontal, u_out[:, o])
    return CPTensor(jnp.ones((rank,), kernel.dtype), factors)


def _cp_weight_fit(kernel: Array, rank: int, max_iter: int, tol) -> CPConv:
    # (C_in, k_h, k_w, C_out): cp_als's first contractions then run over the channel
    # modes, so no intermediate exceeds size(K) · R / min(C_in, C_out).
    permuted = jnp.transpose(kernel, (2, 0, 1, 3))
    start = _cp_start(kernel, rank)
    weights, (f_in, f_h, f_w, f_out) = cp_als(
        permuted, rank, init=start, max_iter=max_iter, tol=tol
    ).model
    scale = jnp.abs(weights) ** 0.25
    sign = jnp.where(weights < 0, -1, 1).astype(weights.dtype)
    return CPConv(
        first=f_in * scale[None, :],
        vertical=f_h * scale[None, :],
        horizontal=f_w * scale[None, :],
        last=(f_out * (scale * sign)[None, :]).T,
    )


def _tucker2_weight_fit(kernel: Array, ranks: tuple[int, int], max_iter: int, tol) -> Tucker2Conv:
    kh, kw, _, _ = kernel.shape
    r_out, r_in = ranks
    core, (u_h, u_w, u_in, u_out) = tucker_hooi(
        kernel, (kh, kw, r_in, r_out), max_iter=max_iter, tol=tol
    ).model
    core = multi_mode_dot(core, (u_h, u_w), (0, 1))  # full-rank spatial factors go in the core
    return Tucker2Conv(first=u_in, core=core, last=u_out.T)


def _psd_solve(gram: Array, rhs: Array) -> Array:
    """``gram⁺ rhs`` for a symmetric positive semi-definite ``gram`` (``eigh``, NumPy's
    ``pinv`` cutoff), finite even when ``gram`` is singular."""
    eigvals, eigvecs = jnp.linalg.eigh(gram)
    cutoff = gram.shape[0] * jnp.finfo(gram.dtype).eps * eigvals[-1]
    inv = jnp.where(eigvals > cutoff, 1 / jnp.where(eigvals > cutoff, eigvals, 1), 0)
    return eigvecs @ (inv[:, None] * (eigvecs.T @ rhs))


def _refit_last(layer: ConvLayer, moment: Array, lam: Array, k2: Array) -> ConvLayer:
    """The best last stage (CP: ``last``; Tucker-2: ``core``) for the error weighted by
    ``S_λ = moment + lam · I`` (never formed)."""
    kh, kw, cin, cout = _layer_shape(layer)
    if isinstance(layer, CPConv):
        r = layer.first.shape[1]
        a = jnp.einsum("hr,wr,ir->hwir", layer.vertical, layer.horizontal, layer.first)
        a = a.reshape(-1, r)
        sa = moment @ a + lam * a
        return layer._replace(last=_psd_solve(a.T @ sa, sa.T @ k2))
    # K̂ = B G Lᵀ with B = I ⊗ first; Lᵀ = last.T has orthonormal columns after HOOI, so
    # the optimal core solves (Bᵀ S_λ B) G = Bᵀ S_λ K Lᵀ.
    r_in, r_out = layer.core.shape[2:]
    p = kh * kw
    first = layer.first
    sb = jnp.einsum("piqj,jb->piqb", moment.reshape(p, cin, p, cin), first)
    btsb = jnp.einsum("ia,piqb->paqb", first, sb)
    btsb = btsb + lam * jnp.einsum("pq,ab->paqb", jnp.eye(p, dtype=first.dtype), first.T @ first)
    sk = (moment @ k2 + lam * k2).reshape(p, cin, cout)
    rhs = jnp.einsum("ia,pio->pao", first, sk).reshape(p * r_in, cout) @ layer.last.T
    core = _psd_solve(btsb.reshape(p * r_in, p * r_in), rhs).reshape(kh, kw, r_in, r_out)
    return layer._replace(core=core)


@partial(jax.jit, static_argnames=("max_iter", "optimizer"))
def _data_fit(kernel, layer, moment, damping, tol, *, max_iter: int, optimizer) -> ConvLayer:
    kh, kw, cin, cout = kernel.shape
    d = kh * kw * cin
    dtype = kernel.dtype
    # S_λ = S + λ (tr S / D) I is applied as S m + lam m: no second D × D matrix.
    lam = jnp.asarray(damping, dtype) * jnp.trace(moment) / d
    k2 = kernel.reshape(d, cout)
    norm = jnp.vdot(k2, moment @ k2) + lam * jnp.vdot(k2, k2)
    safe = jnp.where(norm > 0, norm, 1)
    layer = _refit_last(layer, moment, lam, k2)

    def loss(params: ConvLayer) -> Array:
        delta = k2 - dense_kernel(params).reshape(d, cout)
        return 0.5 * (jnp.vdot(delta, moment @ delta) + lam * jnp.vdot(delta, delta)) / safe

    ok = jnp.all(jnp.isfinite(kernel)) & jnp.all(jnp.isfinite(moment))
    status = jnp.where(ok, Status.SUCCESS, Status.NONFINITE_INPUT).astype(jnp.int32)
    layer, _ = minimize(
        loss,
        layer,
        optimizer,
        max_iter=max_iter,
        tol=tol,
        input_status=status,
        dtype=dtype,
    )
    return layer


# --------------------------------------------------------------------------- dense


def _dense_shape(shape, weight_shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n_in, n_out = weight_shape
    if shape is None:
        return (n_in,), (n_out,)
    try:
        in_shape, out_shape = shape
        in_shape = tuple(_validate.as_int(i, "shape") for i in in_shape)
        out_shape = tuple(_validate.as_int(o, "shape") for o in out_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"shape must be ((i_1, ..., i_a), (o_1, ..., o_b)), got {shape!r}"
        ) from None
    if (
        not in_shape
        or not out_shape
        or min(in_shape + out_shape) < 1
        or math.prod(in_shape) != n_in
        or math.prod(out_shape) != n_out
    ):
        raise ValueError(
            f"shape {shape!r} must factor the weight's (in, out) = {(n_in, n_out)}: "
            f"prod(in sizes) = {n_in}, prod(out sizes) = {n_out}, all sizes >= 1"
        )
    return in_shape, out_shape


def decompose_dense(
    weight,
    rank,
    *,
    kind: str = "svd",
    shape=None,
    key: Array | None = None,
    max_iter: int = 200,
    tol: float = 1e-7,
) -> DenseLayer:
    """Factorize a dense weight ``(in, out)`` (``y = x @ W``) by SVD, CP or Tucker.

    ``kind="svd"``: the truncated SVD ``W ≈ U_R Σ_R V_Rᵀ``, split as
    ``first = U_R Σ_R^{1/2}``, ``last = Σ_R^{1/2} V_Rᵀ`` (an economy SVD; the best
    rank-``R`` approximation). ``kind="cp"`` / ``"tucker"``: ``W`` is reshaped (C order)
    to the tensor ``(i_1..i_a, o_1..o_b)`` given by ``shape`` and fitted by
    :func:`jaxtd.cp_als` (weights spread evenly over the factors) or
    :func:`jaxtd.tucker_hooi`. Reshaping a matrix into more modes is what gives
    CP/Tucker layers their compression (cf. tensor-train layers).

    Args:
        weight: ``(in, out)``, float32 or float64.
        rank: SVD: ``R ≤ min(in, out)``. CP: ``R`` in ``[1, max_cp_rank(sizes)]``.
            Tucker: an int for every mode or one per mode (``a + b`` ints), each
            ``≤`` its size.
        kind: ``"svd"``, ``"cp"`` or ``"tucker"``.
        shape: ``((i_1..i_a), (o_1..o_b))`` with ``Π i = in``, ``Π o = out``; CP and
            Tucker only; default ``((in,), (out,))``.
        key: for CP, a ``jax.random`` key, needed when ``R`` exceeds a mode size
            (the ``"svd"`` start of :func:`jaxtd.cp_als` then draws extra columns).
        max_iter, tol: of the ALS/HOOI fit.

    Returns:
        :class:`SVDDense`, :class:`CPDense` or :class:`TuckerDense`.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> w = np.random.default_rng(0).standard_normal((12, 8))
        >>> layer = decompose_dense(w, 8)
        >>> bool(jnp.allclose(dense_matrix(layer), w, atol=1e-4))
        True
        >>> layer = decompose_dense(w, (2, 3, 2, 2), kind="tucker", shape=((3, 4), (2, 4)))
        >>> layer.core.shape
        (2, 3, 2, 2)
    """
    weight = _validate.as_tensor(weight, "weight", ndim=2)
    kind = _validate.choice(kind, "kind", _DENSE_KINDS)
    max_iter = _validate.max_iter(max_iter)
    tol = _validate.tol(tol)
    _check_finite(weight, "weight")
    if kind == "svd":
        if shape is not None:
            raise ValueError(f'shape applies to kind "cp" and "tucker" only, got shape={shape!r}')
        r = _validate.as_int(rank, "rank")
        bound = min(weight.shape)
        if r < 1 or r > bound:
            raise ValueError(
                f"rank must be in [1, min(in, out)] = [1, {bound}] for an SVD of weight "
                f"{tuple(weight.shape)}, got {r}"
            )
        return _svd_dense(weight, rank=r)
    in_shape, out_shape = _dense_shape(shape, weight.shape)
    sizes = in_shape + out_shape
    tensor = weight.reshape(sizes)
    a = len(in_shape)
    if kind == "cp":
        r = _validate.as_int(rank, "rank")
        bound = max_cp_rank(sizes)
        if r < 1 or r > bound:
            raise ValueError(
                f"rank must be in [1, {bound}] for a CP of the weight reshaped to {sizes} "
                f"(beyond {bound} the factors outnumber the weights), got {r}"
            )
        weights, factors = cp_als(tensor, r, key=key, max_iter=max_iter, tol=tol).model
        scale = jnp.abs(weights) ** (1 / len(sizes))
        sign = jnp.where(weights < 0, -1, 1).astype(weights.dtype)
        factors = [f * scale[None, :] for f in factors]
        factors[-1] = factors[-1] * sign[None, :]
        return CPDense(tuple(factors[:a]), tuple(factors[a:]))
    ranks = _validate.tucker_rank(rank, sizes)
    core, factors = tucker_hooi(tensor, ranks, max_iter=max_iter, tol=tol).model
    return TuckerDense(core, tuple(factors[:a]), tuple(factors[a:]))


@partial(jax.jit, static_argnames=("rank",))
def _svd_dense(weight: Array, *, rank: int) -> SVDDense:
    u, s, vt = jnp.linalg.svd(weight, full_matrices=False)
    root = jnp.sqrt(s[:rank])
    return SVDDense(u[:, :rank] * root[None, :], root[:, None] * vt[:rank])


def _dense_sizes(layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(layer, SVDDense):
        return (layer.first.shape[0],), (layer.last.shape[1],)
    if isinstance(layer, (CPDense, TuckerDense)):
        return (
            tuple(f.shape[0] for f in layer.in_factors),
            tuple(f.shape[0] for f in layer.out_factors),
        )
    raise TypeError(
        f"layer must be an SVDDense, CPDense or TuckerDense, got {type(layer).__name__}"
    )


def dense_matrix(layer: DenseLayer) -> Array:
    """The ``(in, out)`` weight a factorized dense layer stands for.

    Example:
        >>> import jax.numpy as jnp
        >>> dense_matrix(SVDDense(jnp.ones((3, 1)), jnp.ones((1, 2)))).shape
        (3, 2)
    """
    in_shape, out_shape = _dense_sizes(layer)
    if isinstance(layer, SVDDense):
        return layer.first @ layer.last
    # The identity through the layer: cheaper than the dense reconstruction for CP, and
    # the same contractions, so dense_matrix and factorized_dense agree to rounding.
    dtype = layer.in_factors[0].dtype
    return factorized_dense(jnp.eye(math.prod(in_shape), dtype=dtype), layer)


def factorized_dense(x, layer: DenseLayer) -> Array:
    """``x @ dense_matrix(layer)`` without forming the matrix.

    ``x`` is ``(..., in)``. SVD: ``(x @ first) @ last``. CP: the input modes are
    contracted one at a time into the rank axis, then the output modes are expanded
    from it; Tucker: mode products with each input factor, the core, then each output
    factor. See :func:`dense_costs` for the arithmetic.

    Args:
        x: ``(..., in)``.
        layer: an :class:`SVDDense`, :class:`CPDense` or :class:`TuckerDense`.

    Returns:
        ``(..., out)``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> w = np.random.default_rng(0).standard_normal((12, 8))
        >>> layer = decompose_dense(w, 3, kind="cp", shape=((3, 4), (2, 4)), key=jax.random.key(0))
        >>> x = jnp.ones((5, 12))
        >>> bool(jnp.allclose(factorized_dense(x, layer), x @ dense_matrix(layer), atol=1e-4))
        True
    """
    in_shape, out_shape = _dense_sizes(layer)
    n_in = math.prod(in_shape)
    if not hasattr(x, "shape"):
        x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != n_in:
        raise ValueError(f"x must be (..., in) with in = {n_in}, got shape {tuple(x.shape)}")
    lead = x.shape[:-1]
    if isinstance(layer, SVDDense):
        return (x @ layer.first) @ layer.last
    t = x.reshape((-1,) + in_shape)
    if isinstance(layer, CPDense):
        t = jnp.tensordot(t, layer.in_factors[0], axes=(1, 0))  # (B, i_2..i_a, R)
        rest = {k: f for k, f in enumerate(layer.in_factors[1:], start=1)}
        if rest:
            t = contract_shared_rank(t, rest, list(rest))  # (B, R)
        for f in layer.out_factors[:-1]:
            t = t[..., None, :] * jnp.expand_dims(f, tuple(range(t.ndim - 1)))  # (B, o_1..o_k, R)
        y = jnp.tensordot(t, layer.out_factors[-1], axes=(-1, 1))
    else:
        for f in layer.in_factors:
            t = jnp.tensordot(t, f, axes=(1, 0))  # moves r_k to the end
        t = jnp.tensordot(t, layer.core, axes=len(in_shape))  # (B, s_1..s_b)
        for f in layer.out_factors:
            t = jnp.tensordot(t, f, axes=(1, 1))  # moves o_k to the end
        y = t
    return y.reshape(lead + (math.prod(out_shape),))


# --------------------------------------------------------------------------- costs


def _cp_conv_costs(kh, kw, cin, cout, r, in_hw, out_hw) -> Costs:
    params = r * (cin + kh + kw + cout)
    if in_hw is None:
        return Costs(params, 0)
    (h, w), (oh, ow) = in_hw, out_hw
    macs = h * w * cin * r + oh * w * kh * r + oh * ow * kw * r + oh * ow * r * cout
    return Costs(params, 2 * macs)


def _tucker2_conv_costs(kh, kw, cin, cout, r_out, r_in, in_hw, out_hw) -> Costs:
    params = cin * r_in + kh * kw * r_in * r_out + r_out * cout
    if in_hw is None:
        return Costs(params, 0)
    (h, w), (oh, ow) = in_hw, out_hw
    macs = h * w * cin * r_in + oh * ow * kh * kw * r_in * r_out + oh * ow * r_out * cout
    return Costs(params, 2 * macs)


def _dense_conv_costs(kh, kw, cin, cout, out_hw) -> Costs:
    params = kh * kw * cin * cout
    if out_hw is None:
        return Costs(params, 0)
    return Costs(params, 2 * out_hw[0] * out_hw[1] * params)


def conv_costs(
    kernel_or_layer,
    in_hw=None,
    *,
    strides=(1, 1),
    padding="SAME",
    rhs_dilation=(1, 1),
) -> Costs:
    """Parameters and FLOPs (per image) of a conv kernel or a factorized conv layer.

    For input ``H × W`` and output ``H' × W'``, in multiply–adds (FLOPs are twice that):
    dense ``H'W'·k_h k_w C_in C_out``; CP ``HW·C_in R + H'W·k_h R + H'W'·k_w R +
    H'W'·R C_out``; Tucker-2 ``HW·C_in R_in + H'W'·k_h k_w R_in R_out + H'W'·R_out C_out``.
    These are the stages :func:`factorized_conv` runs (the first 1×1 conv sees the
    full input; the vertical CP filter already applies the height stride).

    Args:
        kernel_or_layer: an HWIO kernel (anything with a 4-D ``shape``, or the shape
            itself), or a :class:`CPConv` / :class:`Tucker2Conv`.
        in_hw: input spatial size ``(H, W)``; without it ``flops`` is 0.
        strides, padding, rhs_dilation: as in :func:`factorized_conv`.

    Returns:
        ``Costs(params, flops)`` of Python ints.

    Example:
        >>> conv_costs((3, 3, 16, 32), (8, 8))
        Costs(params=4608, flops=589824)
        >>> import jax.numpy as jnp
        >>> layer = Tucker2Conv(jnp.ones((16, 4)), jnp.ones((3, 3, 4, 8)), jnp.ones((8, 32)))
        >>> conv_costs(layer, (8, 8))
        Costs(params=608, flops=77824)
    """
    if isinstance(kernel_or_layer, (CPConv, Tucker2Conv)):
        kh, kw, cin, cout = _layer_shape(kernel_or_layer)
    else:
        shape = getattr(kernel_or_layer, "shape", kernel_or_layer)
        try:
            kh, kw, cin, cout = (_validate.as_int(s, "kernel shape") for s in shape)
        except (TypeError, ValueError):
            raise ValueError(
                f"kernel_or_layer must be a 4-D HWIO kernel or a factorized conv layer, "
                f"got shape {shape!r}"
            ) from None
    out_hw = None
    if in_hw is not None:
        in_hw = _pair(in_hw, "in_hw")
        strides, padding, dilation = _conv_args(strides, padding, rhs_dilation)
        _, out_hw = _geometry(in_hw, (kh, kw), strides, padding, dilation, "in_hw")
    if isinstance(kernel_or_layer, CPConv):
        r = kernel_or_layer.first.shape[1]
        return _cp_conv_costs(kh, kw, cin, cout, r, in_hw, out_hw)
    if isinstance(kernel_or_layer, Tucker2Conv):
        r_in, r_out = kernel_or_layer.core.shape[2:]
        return _tucker2_conv_costs(kh, kw, cin, cout, r_out, r_in, in_hw, out_hw)
    return _dense_conv_costs(kh, kw, cin, cout, out_hw)


def _cp_dense_costs(in_shape, out_shape, r) -> Costs:
    params = r * (sum(in_shape) + sum(out_shape))
    # Input: contracting i_1, then i_2, ... (each over what is left of the input).
    macs = r * sum(math.prod(in_shape[k:]) for k in range(len(in_shape)))
    # Output: expanding o_1..o_{b-1}, then the contraction over R.
    macs += r * sum(math.prod(out_shape[: k + 1]) for k in range(len(out_shape)))
    return Costs(params, 2 * macs)


def _tucker_dense_costs(in_shape, out_shape, in_ranks, out_ranks) -> Costs:
    params = math.prod(in_ranks) * math.prod(out_ranks)
    params += sum(i * r for i, r in zip(in_shape, in_ranks))
    params += sum(o * s for o, s in zip(out_shape, out_ranks))
    a, b = len(in_shape), len(out_shape)
    macs = sum(math.prod(in_shape[k:]) * math.prod(in_ranks[: k + 1]) for k in range(a))
    macs += math.prod(in_ranks) * math.prod(out_ranks)
    macs += sum(math.prod(out_ranks[k:]) * math.prod(out_shape[: k + 1]) for k in range(b))
    return Costs(params, 2 * macs)


def dense_costs(weight_or_layer) -> Costs:
    """Parameters and FLOPs (per input row) of a dense weight or a factorized dense layer.

    Multiply–adds (FLOPs are twice that): dense ``in · out``; SVD ``R (in + out)``;
    CP ``R (Σ_k Π_{j≥k} i_j + Σ_k Π_{j≤k} o_j)``; Tucker
    ``Σ_k (Π_{j≥k} i_j)(Π_{j≤k} r_j) + Π r Π s + Σ_k (Π_{j≥k} s_j)(Π_{j≤k} o_j)``, as
    :func:`factorized_dense` computes them.

    Args:
        weight_or_layer: an ``(in, out)`` weight (or its shape), or a factorized dense layer.

    Returns:
        ``Costs(params, flops)`` of Python ints.

    Example:
        >>> dense_costs((64, 32))
        Costs(params=2048, flops=4096)
        >>> import jax.numpy as jnp
        >>> dense_costs(SVDDense(jnp.ones((64, 4)), jnp.ones((4, 32))))
        Costs(params=384, flops=768)
    """
    if isinstance(weight_or_layer, SVDDense):
        (n_in,), (n_out,) = _dense_sizes(weight_or_layer)
        r = weight_or_layer.first.shape[1]
        return Costs(r * (n_in + n_out), 2 * r * (n_in + n_out))
    if isinstance(weight_or_layer, CPDense):
        in_shape, out_shape = _dense_sizes(weight_or_layer)
        return _cp_dense_costs(in_shape, out_shape, weight_or_layer.in_factors[0].shape[1])
    if isinstance(weight_or_layer, TuckerDense):
        in_shape, out_shape = _dense_sizes(weight_or_layer)
        in_ranks = tuple(f.shape[1] for f in weight_or_layer.in_factors)
        out_ranks = tuple(f.shape[1] for f in weight_or_layer.out_factors)
        return _tucker_dense_costs(in_shape, out_shape, in_ranks, out_ranks)
    shape = getattr(weight_or_layer, "shape", weight_or_layer)
    try:
        n_in, n_out = (_validate.as_int(s, "weight shape") for s in shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"weight_or_layer must be an (in, out) weight or a factorized dense layer, "
            f"got shape {shape!r}"
        ) from None
    return Costs(n_in * n_out, 2 * n_in * n_out)


def rank_for_budget(
    weight_shape,
    kind: str,
    *,
    params: int | None = None,
    flops: int | None = None,
    ratio: float | None = None,
    in_hw=None,
    strides=(1, 1),
    padding="SAME",
    rhs_dilation=(1, 1),
    shape=None,
):
    """The largest rank whose factorized layer fits a parameter and/or FLOP budget.

    Every budget given must hold: ``params`` and ``flops`` are absolute; ``ratio`` is a
    fraction of the original layer's parameters and of its FLOPs (for a conv, FLOPs
    count only when ``in_hw`` is given). Costs are those of :func:`conv_costs` /
    :func:`dense_costs`.

    The ranks searched:

    * conv ``"cp"`` (4-D ``weight_shape``): ``R`` up to :func:`max_cp_rank`;
    * conv ``"tucker2"``: ``(R_out, R_in)`` with ``R_in / C_in ≈ R_out / C_out``
      (``R_in = max(1, round(R_out C_in / C_out))``), the largest ``R_out``;
    * dense ``"svd"`` (2-D ``weight_shape``): ``R ≤ min(in, out)``;
    * dense ``"cp"``: ``R`` for the reshape ``shape`` (as in :func:`decompose_dense`);
    * dense ``"tucker"``: one ``r`` for every mode, capped at each mode's size; the
      per-mode tuple is returned.

    Args:
        weight_shape: the kernel's ``(k_h, k_w, C_in, C_out)`` or the weight's ``(in, out)``.
        kind: as above.
        params, flops, ratio: the budgets.
        in_hw, strides, padding, rhs_dilation: the conv's input size and settings, for
            FLOPs of a conv.
        shape: for dense ``"cp"``/``"tucker"``, the reshape ``((i..), (o..))``.

    Returns:
        An int (CP, SVD), ``(R_out, R_in)`` (Tucker-2), or a tuple of ranks (Tucker).

    Example:
        >>> rank_for_budget((3, 3, 64, 64), "cp", ratio=0.25)
        68
        >>> rank_for_budget((3, 3, 64, 64), "tucker2", ratio=0.25)
        (25, 25)
        >>> rank_for_budget((256, 128), "svd", params=8000)
        20
    """
    weight_shape = tuple(_validate.as_int(s, "weight_shape") for s in weight_shape)
    conv = len(weight_shape) == 4
    if not conv and len(weight_shape) != 2:
        raise ValueError(
            f"weight_shape must be a 4-D kernel shape or a 2-D weight shape, got {weight_shape}"
        )
    kind = _validate.choice(kind, "kind", _CONV_KINDS if conv else _DENSE_KINDS)
    if params is None and flops is None and ratio is None:
        raise ValueError("give a budget: params, flops and/or ratio")
    if conv:
        kh, kw, cin, cout = weight_shape
        out_hw = None
        if in_hw is not None:
            in_hw = _pair(in_hw, "in_hw")
            strides, padding, dilation = _conv_args(strides, padding, rhs_dilation)
            _, out_hw = _geometry(in_hw, (kh, kw), strides, padding, dilation, "in_hw")
        elif flops is not None:
            raise ValueError("a flops budget for a conv needs in_hw, the input size (H, W)")
        original = _dense_conv_costs(kh, kw, cin, cout, out_hw)
        if kind == "cp":
            candidates = [
                (r, _cp_conv_costs(kh, kw, cin, cout, r, in_hw, out_hw))
                for r in range(1, max_cp_rank(weight_shape) + 1)
            ]
        else:
            candidates = []
            for r_out in range(1, cout + 1):
                r_in = min(cin, max(1, round(r_out * cin / cout)))
                cost = _tucker2_conv_costs(kh, kw, cin, cout, r_out, r_in, in_hw, out_hw)
                candidates.append(((r_out, r_in), cost))
    else:
        original = dense_costs(weight_shape)
        if kind == "svd":
            n_in, n_out = weight_shape
            candidates = [(r, Costs(r * (n_in + n_out), 2 * r * (n_in + n_out))) for r in
                          range(1, min(weight_shape) + 1)]  # fmt: skip
        else:
            in_shape, out_shape = _dense_shape(shape, weight_shape)
            sizes = in_shape + out_shape
            if kind == "cp":
                candidates = [
                    (r, _cp_dense_costs(in_shape, out_shape, r))
                    for r in range(1, max_cp_rank(sizes) + 1)
                ]
            else:
                candidates = []
                for r in range(1, max(sizes) + 1):
                    ranks = tuple(min(r, n) for n in sizes)
                    a = len(in_shape)
                    cost = _tucker_dense_costs(in_shape, out_shape, ranks[:a], ranks[a:])
                    candidates.append((ranks, cost))
    limit_params = math.inf if params is None else _validate.as_int(params, "params")
    limit_flops = math.inf if flops is None else _validate.as_int(flops, "flops")
    if ratio is not None:
        ratio = float(ratio)
        if not 0 < ratio:
            raise ValueError(f"ratio must be > 0, got {ratio}")
        limit_params = min(limit_params, ratio * original.params)
        if original.flops:
            limit_flops = min(limit_flops, ratio * original.flops)
    fits = [r for r, c in candidates if c.params <= limit_params and c.flops <= limit_flops]
    if not fits:
        smallest = candidates[0][1]
        raise ValueError(
            f"no {kind} rank fits the budget (params <= {limit_params}, flops <= "
            f"{limit_flops}) for {weight_shape}: the smallest rank costs {smallest}"
        )
    return fits[-1]


# --------------------------------------------------------------------------- EVBMF


def evbmf_ranks(kernel) -> tuple[int, int]:
    """Tucker-2 ranks ``(R_out, R_in)`` of a conv kernel by EVBMF (Kim et al. 2016).

    Analytic empirical variational Bayesian matrix factorisation (:func:`evbmf`, with
    the noise variance estimated) of the mode-``C_out`` unfolding
    ``(C_out, k_h k_w C_in)`` gives ``R_out``, and of the mode-``C_in`` unfolding
    ``(C_in, k_h k_w C_out)`` gives ``R_in``: the number of singular values above the
    EVB threshold, at least 1. Runs on the host (a rank is a shape, so it cannot be
    traced); the kernel must be concrete.

    Args:
        kernel: ``(k_h, k_w, C_in, C_out)``.

    Returns:
        ``(R_out, R_in)``, Python ints, ready for ``decompose_conv(..., kind="tucker2")``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> k = np.einsum("hwa,ia,oa->hwio", rng.standard_normal((3, 3, 4)),
        ...               rng.standard_normal((16, 4)), rng.standard_normal((24, 4)))
        >>> evbmf_ranks(k + 0.01 * rng.standard_normal(k.shape))
        (4, 4)
    """
    if isinstance(kernel, jax.core.Tracer):
        raise TypeError(
            "evbmf_ranks needs a concrete kernel (ranks are shapes); call it outside jit"
        )
    kernel = _kernel(kernel)
    _check_finite(kernel, "kernel")
    k = np.asarray(kernel, dtype=np.float64)
    r_out = evbmf(np.moveaxis(k, 3, 0).reshape(k.shape[3], -1)).rank
    r_in = evbmf(np.moveaxis(k, 2, 0).reshape(k.shape[2], -1)).rank
    return max(r_out, 1), max(r_in, 1)
