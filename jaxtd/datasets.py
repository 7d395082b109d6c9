"""Data sets that ship with jaxtd.

The amino acid fluorescence data: R. Bro, "PARAFAC. Tutorial and applications",
Chemometrics and Intelligent Laboratory Systems 38 (1997) 149–171, published for
public use by the University of Copenhagen chemometrics group; converted from its
original MATLAB file without any change to the values.
"""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np


class AminoAcids(NamedTuple):
    """Fluorescence of 5 mixtures of tryptophan, tyrosine and phenylalanine.

    Attributes:
        tensor: ``(5, 201, 61)`` float64: sample × emission × excitation intensity.
        concentrations: ``(5, 3)`` float64: known mol/L of Trp, Tyr, Phe per sample.
        emission_nm: ``(201,)`` emission wavelengths, 250–450 nm.
        excitation_nm: ``(61,)`` excitation wavelengths, 240–300 nm.
    """

    tensor: np.ndarray
    concentrations: np.ndarray
    emission_nm: np.ndarray
    excitation_nm: np.ndarray


def load_aminoacids() -> AminoAcids:
    """Load the amino acid fluorescence tensor (Bro, 1997) as NumPy arrays.

    A rank-3 CP model fits it to about 97.5 % (fit = 1 − rel_error), and its sample
    factor matches the known concentrations.

    Example:
        >>> data = load_aminoacids()
        >>> data.tensor.shape, data.concentrations.shape
        ((5, 201, 61), (5, 3))
    """
    with resources.files("jaxtd").joinpath("data/aminoacids.npz").open("rb") as f, np.load(f) as d:
        return AminoAcids(d["X"], d["y"], d["emission_nm"], d["excitation_nm"])


def make_cp_tensor(shape, rank: int, *, congruence: float = 0.0, noise: float = 0.0, seed: int = 0):
    """A planted rank-``rank`` CP tensor, optionally with collinear factors and noise (NumPy).

    Every factor has unit columns whose pairwise congruence (cosine) is ``congruence``:
    ``A = Q Lᵀ`` with ``Q`` orthonormal columns and ``L L = G``, the Cholesky factor of
    ``G = (1 − c) I + c 11ᵀ``. Congruence near 1 makes CP hard (ALS "swamps"). Gaussian
    noise of relative norm ``noise`` is added. Deterministic for a given ``seed``.

    Returns:
        ``(tensor, factors)``: float64 ``tensor`` of ``shape`` and the list of factors.

    Example:
        >>> x, factors = make_cp_tensor((4, 5, 6), 2, congruence=0.9, seed=1)
        >>> x.shape, round(float(factors[0][:, 0] @ factors[0][:, 1]), 6)
        ((4, 5, 6), 0.9)
    """
    if not 0 <= congruence < 1:
        raise ValueError(f"congruence must be in [0, 1), got {congruence}")
    if rank > min(shape):
        raise ValueError(f"rank {rank} exceeds the smallest mode of {tuple(shape)}")
    rng = np.random.default_rng(seed)
    gram = np.full((rank, rank), congruence) + (1 - congruence) * np.eye(rank)
    chol = np.linalg.cholesky(gram)
    factors = [np.linalg.qr(rng.standard_normal((n, rank)))[0] @ chol.T for n in shape]
    x = _cp_dense(factors)
    if noise:
        e = rng.standard_normal(x.shape)
        x = x + noise * np.linalg.norm(x) / np.linalg.norm(e) * e
    return x, factors


def _cp_dense(factors) -> np.ndarray:
    """``Σ_r a⁽⁰⁾_r ∘ ... ∘ a⁽ᴺ⁻¹⁾_r`` in NumPy (C order, as ``khatri_rao``)."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
    return out.sum(axis=1).reshape([f.shape[0] for f in factors])
