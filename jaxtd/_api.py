"""Front doors: ``cp`` and ``tucker`` pick a fitter by ``method``."""

from __future__ import annotations

from jaxtd import _validate
from jaxtd._cp_als import cp_als
from jaxtd._cp_opt import cp_opt
from jaxtd._hosvd import hosvd
from jaxtd._result import FitResult
from jaxtd._tucker_hooi import tucker_hooi
from jaxtd._tucker_opt import tucker_opt


def cp(x, rank: int, *, method: str = "als", **kwargs) -> FitResult:
    """CP decomposition by ``method``: ``"als"`` (:func:`cp_als`) or ``"opt"`` (:func:`cp_opt`).

    Keyword arguments go to the chosen fitter.
    """
    method = _validate.choice(method, "method", ("als", "opt"))
    return (cp_opt if method == "opt" else cp_als)(x, rank, **kwargs)


def tucker(x, rank, *, method: str = "hooi", **kwargs) -> FitResult:
    """Tucker decomposition by ``method``: ``"hooi"``, ``"hosvd"`` or ``"opt"``.

    Keyword arguments go to the chosen fitter.
    """
    method = _validate.choice(method, "method", ("hooi", "hosvd", "opt"))
    fitters = {"hooi": tucker_hooi, "hosvd": hosvd, "opt": tucker_opt}
    return fitters[method](x, rank, **kwargs)
