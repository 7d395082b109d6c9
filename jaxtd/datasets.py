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
