"""Front doors: ``cp`` and ``tucker`` pick a fitter by ``method``."""

from __future__ import annotations

from jaxtd import _validate
from jaxtd._cp_als import cp_als
from jaxtd._hosvd import hosvd
from jaxtd._result import FitResult
from jaxtd._tucker_hooi import tucker_hooi

_OPT_MISSING = "method='opt' (gradient fitting with optax) is not implemented yet"


def cp(x, rank: int, *, method: str = "als", **kwargs) -> FitResult:
    """CP decomposition by ``method``: ``"als"`` (:func:`cp_als`) or ``"opt"`` (not yet).

    Keyword arguments go to the chosen fitter.
    """
    method = _validate.choice(method, "method", ("als", "opt"))
    if method == "opt":
        raise NotImplementedError(_OPT_MISSING)
    return cp_als(x, rank, **kwargs)


def tucker(x, rank, *, method: str = "hooi", **kwargs) -> FitResult:
    """Tucker decomposition by ``method``: ``"hooi"``, ``"hosvd"`` or ``"opt"`` (not yet).

    Keyword arguments go to the chosen fitter.
    """
    method = _validate.choice(method, "method", ("hooi", "hosvd", "opt"))
    if method == "opt":
        raise NotImplementedError(_OPT_MISSING)
    if method == "hosvd":
        return hosvd(x, rank, **kwargs)
    return tucker_hooi(x, rank, **kwargs)
