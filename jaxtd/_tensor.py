"""Dense tensor algebra: unfolding, mode products, Khatri–Rao, MTTKRP.

Ordering convention (the same as TensorLy and NumPy's C order): the mode-``n``
unfolding of ``x`` with shape ``(I_0, ..., I_{N-1})`` is the ``(I_n, prod_{m != n} I_m)``
matrix ``moveaxis(x, n, 0).reshape(I_n, -1)``, so among the remaining modes the
*last* one varies fastest. ``khatri_rao((A, B))`` is ordered the same way: row
``i * J + j`` holds ``A[i] * B[j]``. With these two conventions

    unfold(cp_to_tensor((w, (A_0, ..., A_{N-1}))), n)
        == A_n @ diag(w) @ khatri_rao(A_0, ..., A_{n-1}, A_{n+1}, ..., A_{N-1}).T
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def unfold(x: Array, mode: int) -> Array:
    """Mode-``mode`` unfolding: ``(I_mode, prod of the other sizes)``, C order.

    Example:
        >>> import jax.numpy as jnp
        >>> unfold(jnp.arange(24.0).reshape(2, 3, 4), 1).shape
        (3, 8)
    """
    return jnp.moveaxis(x, mode, 0).reshape(x.shape[mode], -1)


def fold(matrix: Array, mode: int, shape: Sequence[int]) -> Array:
    """Inverse of :func:`unfold`: ``fold(unfold(x, n), n, x.shape) == x``."""
    shape = tuple(shape)
    moved = (shape[mode],) + shape[:mode] + shape[mode + 1 :]
    return jnp.moveaxis(matrix.reshape(moved), 0, mode)


def mode_dot(x: Array, matrix: Array, mode: int) -> Array:
    """Mode-``n`` product ``x ×_n M``: ``y[.., j, ..] = sum_i x[.., i, ..] M[j, i]``.

    ``matrix`` has shape ``(J, I_mode)``; the result has ``J`` in place of ``I_mode``.
    Cost: ``O(J * size(x))``.
    """
    if mode == 0:  # M @ X_(0) is a plain GEMM; contracting x's first axis would transpose x
        return jnp.tensordot(matrix, x, axes=(1, 0))
    return jnp.moveaxis(jnp.tensordot(x, matrix, axes=(mode, 1)), -1, mode)


def multi_mode_dot(
    x: Array, matrices: Sequence[Array], modes: Sequence[int] | None = None, transpose: bool = False
) -> Array:
    """Mode products over several modes: ``x ×_{m_1} M_1 ×_{m_2} M_2 ...``.

    Args:
        x: tensor.
        matrices: one matrix per entry of ``modes``, ``(J_m, I_m)``, or ``(I_m, J_m)``
            when ``transpose``.
        modes: the modes; defaults to ``0, 1, ..., len(matrices) - 1``.
        transpose: multiply by each ``M.T`` instead: the projection ``x ×_m U_m^T``.

    The products run in the order that shrinks the tensor fastest.
    """
    modes = tuple(range(len(matrices))) if modes is None else tuple(modes)
    mats = [m.T if transpose else m for m in matrices]
    for k in sorted(range(len(modes)), key=lambda k: mats[k].shape[0] / mats[k].shape[1]):
        x = mode_dot(x, mats[k], modes[k])
    return x


def khatri_rao(matrices: Sequence[Array]) -> Array:
    """Column-wise Kronecker product of ``(I_k, R)`` matrices: ``(prod I_k, R)``.

    Row ``(i_0, ..., i_K)`` in C order (last index fastest). Offered for users; the
    fitters never form it over all the other modes.
    """
    matrices = tuple(matrices)
    rank = matrices[0].shape[1]
    out = matrices[0]
    for m in matrices[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, rank)
    return out


def contract_shared_rank(t: Array, factors: Sequence[Array], modes: Sequence[int]) -> Array:
    """Contract modes of ``t`` (whose *last* axis is the rank ``r``) with ``factors[m][:, r]``.

    ``out[..., r] = sum_{i_m, m in modes} t[..., i_m, ..., r] * prod_m factors[m][i_m, r]``.
    The rank axis is shared (a batch axis), so no Khatri–Rao product is formed; each
    mode is one batched matrix–vector contraction.
    """
    nd = t.ndim
    for m in sorted(modes, reverse=True):  # highest first keeps lower positions valid
        letters = _LETTERS[:nd]
        out = letters[:m] + letters[m + 1 :]
        t = jnp.einsum(f"{letters},{letters[m]}{letters[-1]}->{out}", t, factors[m])
        nd -= 1
    return t


def contract_to_rank(x: Array, factors: Sequence[Array], modes: Sequence[int]) -> Array:
    """Contract ``x`` over ``modes`` with the CP factors there, appending a rank axis.

    ``factors`` is indexed by mode. The first contraction is one GEMM over a run of
    modes at the end (or the start) of ``x``: reshaping merges such a run without a
    copy, and neither needs a transposed copy of ``x``. The run's Khatri–Rao product is
    formed only while it stays no larger than ``x`` (a (3, 3, 512, 512) kernel
    contracted over its two 3-modes then makes a ``512·512·R`` result, not a
    ``3·512·512·R`` one). The remaining modes share the rank axis (see
    :func:`contract_shared_rank`). The result has the modes of ``x`` not in ``modes``,
    in order, then ``R``.
    """
    modes = sorted(modes)
    rank = factors[modes[0]].shape[1]
    run = _end_run(x.shape, modes, rank)
    kr = khatri_rao([factors[m] for m in run]) if len(run) > 1 else factors[run[0]]
    kept = [d for m, d in enumerate(x.shape) if m not in run]
    if run[0] == 0:  # Kᵀ X is a plain GEMM; X K with X transposed is several times slower on CPU
        t = jnp.moveaxis((kr.T @ x.reshape(kr.shape[0], -1)).reshape(rank, *kept), 0, -1)
    else:
        t = (x.reshape(*kept, kr.shape[0]) @ kr).reshape(*kept, rank)
    rest = [m for m in modes if m not in run]
    pos = [m - sum(r < m for r in run) for m in rest]
    by_pos = {p: factors[m] for p, m in zip(pos, rest)}
    return contract_shared_rank(t, by_pos, pos) if rest else t


def _end_run(shape: Sequence[int], modes: Sequence[int], rank: int) -> list[int]:
    """The run of ``modes`` at the end (else the start) of ``shape`` to contract first.

    It is the longest one whose Khatri–Rao product (``prod(sizes) × rank``) is no
    larger than the tensor; of a run at each end, the one leaving the smaller result.
    Without one, the end mode of ``modes`` there is, else the first of ``modes``.
    """
    ndim, size = len(shape), math.prod(shape)
    candidates = []
    for run in (
        [m for m in range(ndim - 1, -1, -1) if all(k in modes for k in range(m, ndim))][::-1],
        [m for m in range(ndim) if all(k in modes for k in range(m + 1))],
    ):
        while len(run) > 1 and math.prod(shape[m] for m in run) * rank > size:
            run = run[1:] if run[-1] == ndim - 1 else run[:-1]
        if run:
            candidates.append(run)
    if not candidates:
        return [modes[0]]
    return max(candidates, key=lambda run: math.prod(shape[m] for m in run))


def mttkrp(x: Array, factors: Sequence[Array], mode: int) -> Array:
    """Matricized tensor times Khatri–Rao product, without forming the Khatri–Rao product.

    ``M = unfold(x, n) @ khatri_rao(A_m for m != n)``, shape ``(I_n, R)``, computed as
    ``M[i, r] = sum over the other indices of x[..., i, ...] * prod_{m != n} A_m[i_m, r]``.
    Cost ``O(size(x) * R)``; the largest intermediate is ``size(x) * R / I_m`` for the
    first contracted mode ``m``.
    """
    others = [m for m in range(x.ndim) if m != mode]
    return contract_to_rank(x, factors, others)


def dimension_tree_split(shape: Sequence[int], ranks: Sequence[int] | None = None) -> int:
    """Where to split the modes into two blocks ``[0, s)`` and ``[s, N)`` for a sweep.

    A sweep contracts ``x`` over each block's outside modes once and keeps the result:
    ``prod(I_block) · R`` entries for CP, ``prod(I_block) · prod(R_outside)`` for
    Tucker (``ranks`` per mode). The split makes the two results smallest in total
    (ties: the middle).
    """
    n = len(shape)
    ranks = [1] * n if ranks is None else list(ranks)
    middle = (n + 1) // 2

    def cost(s):
        first = math.prod(shape[:s]) * math.prod(ranks[s:])
        return first + math.prod(ranks[:s]) * math.prod(shape[s:])

    return min(range(1, n), key=lambda s: (cost(s), abs(s - middle)))


def gram_hadamard(grams: Sequence[Array]) -> Array:
    """Hadamard (element-wise) product of ``R × R`` Gram matrices."""
    out = grams[0]
    for g in grams[1:]:
        out = out * g
    return out


def leading_left_singular_vectors(matrix: Array, k: int) -> Array:
    """The ``k`` leading left singular vectors of ``matrix`` (``m × n``, ``k <= m``).

    Never a full SVD: the eigenvectors of the smaller Gram matrix (``m × m`` or
    ``n × n``), via ``eigh``. Signs are fixed so that the entry of largest magnitude
    in each column is positive, which makes the result deterministic.
    """
    m, n = matrix.shape
    if m <= n:
        _, vecs = jnp.linalg.eigh(matrix @ matrix.T)
        u = vecs[:, ::-1][:, :k]
    else:
        # Left vectors from right ones: span(X V_k) = span(U_k); QR restores orthonormality
        # even where singular values are tiny.
        _, vecs = jnp.linalg.eigh(matrix.T @ matrix)
        kk = min(k, n)
        u, _ = jnp.linalg.qr(matrix @ vecs[:, ::-1][:, :kk])
        if kk < k:  # k > rank of matrix: complete with an orthonormal basis of the rest
            q, _ = jnp.linalg.qr(jnp.concatenate([u, jnp.eye(m, dtype=u.dtype)], axis=1))
            u = q[:, :k]
    return fix_signs(u)


def mode_gram(x: Array, mode: int) -> Array:
    """``X_(n) X_(n)ᵀ`` (``I_n × I_n``) without forming the unfolding.

    ``unfold`` of a middle mode is a transposed copy of ``x``. Here modes ``0`` and
    ``N−1`` are reshapes of ``x`` (one GEMM each), and a middle mode sums
    ``X_p X_pᵀ`` over contiguous ``(I_n, S)`` slices of ``x.reshape(P, I_n, S)`` in a
    loop, so the extra memory is ``I_n²``, not ``size(x)``.
    """
    size = x.shape[mode]
    if mode == 0:
        m = x.reshape(size, -1)
        return m @ m.T
    if mode == x.ndim - 1:
        m = x.reshape(-1, size)
        return m.T @ m
    slices = x.reshape(math.prod(x.shape[:mode]), size, -1)

    def add(p, gram):
        s = lax.dynamic_index_in_dim(slices, p, keepdims=False)
        return gram + s @ s.T

    return lax.fori_loop(0, slices.shape[0], add, jnp.zeros((size, size), x.dtype))


def leading_mode_vectors(x: Array, mode: int, k: int) -> Array:
    """:func:`leading_left_singular_vectors` of ``unfold(x, mode)``, reading ``x`` in place.

    When ``I_n`` is at most the product of the other sizes (the usual case), the
    vectors come from ``eigh`` of :func:`mode_gram`; otherwise from the unfolding.
    """
    size = x.shape[mode]
    if size > x.size // size:
        return leading_left_singular_vectors(unfold(x, mode), k)
    _, vecs = jnp.linalg.eigh(mode_gram(x, mode))
    return fix_signs(vecs[:, ::-1][:, :k])


def fix_signs(u: Array) -> Array:
    """Flip each column so that its entry of largest magnitude is positive."""
    idx = jnp.argmax(jnp.abs(u), axis=0)
    signs = jnp.sign(u[idx, jnp.arange(u.shape[1])])
    return u * jnp.where(signs == 0, 1, signs).astype(u.dtype)[None, :]


@jax.custom_jvp
def psd_pinv(v: Array) -> Array:
    """Pseudo-inverse of a symmetric positive semi-definite matrix, from one ``eigh``.

    Eigenvalues below ``n · eps · λ_max`` (NumPy's ``pinv`` rule) are dropped, so a
    singular ``v`` gives a finite result. The derivative is that of the inverse,
    ``d(V⁻¹) = −V⁻¹ dV V⁻¹``: exact where ``v`` is invertible, and finite even where
    its eigenvalues repeat (the derivative of ``eigh`` itself is not there).
    """
    eigvals, eigvecs = jnp.linalg.eigh(v)
    cutoff = v.shape[0] * jnp.finfo(v.dtype).eps * eigvals[-1]
    inv = jnp.where(eigvals > cutoff, 1 / jnp.where(eigvals > cutoff, eigvals, 1), 0)
    return (eigvecs * inv[None, :]) @ eigvecs.T


@psd_pinv.defjvp
def _psd_pinv_jvp(primals, tangents):
    (v,), (dv,) = primals, tangents
    inv = psd_pinv(v)
    return inv, -inv @ dv @ inv
