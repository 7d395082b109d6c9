r"""Empirical variational Bayesian matrix factorisation (EVBMF): rank by its analytic solution.

The model (Nakajima et al. 2013) is ``Y = B Aᵀ + E`` for an ``L × M`` matrix
(``L ≤ M``; a taller matrix is transposed first), with noise ``E_lm ~ N(0, σ²)`` and
independent Gaussian priors on the columns, ``a_h ~ N(0, c_{a_h}² I)``,
``b_h ~ N(0, c_{b_h}² I)``. Empirical VB also fits the prior variances and ``σ²`` by
minimising the free energy. Its global solution is a shrunk truncated SVD of ``Y``:
with ``α = L / M`` and singular values ``γ_h``, component ``h`` survives exactly when

.. math::
    γ_h > γ^{EVB} = σ \sqrt{M\,(1 + τ̲)(1 + α / τ̲)},

where ``τ̲`` solves ``Φ(τ) + Φ(τ / α) = 0``, ``Φ(z) = \log(1 + z) / z − ½``
(``τ̲ ≈ 2.5129 √α``). A survivor's estimate is

.. math::
    \hat γ_h = \frac{γ_h}{2}\Big(1 − \frac{(L + M)σ^2}{γ_h^2}
        + \sqrt{\big(1 − \tfrac{(L + M)σ^2}{γ_h^2}\big)^2 − \tfrac{4 L M σ^4}{γ_h^4}}\Big).

With ``x_h = γ_h² / (M σ²)``, the free energy as a function of ``σ²`` alone is, up to
constants, ``Ω(σ²) = Σ_h ψ(x_h)`` with

.. math::
    ψ(x) = x − \log x + [x > x̲]\,\big(\log(τ(x) + 1) + α \log(τ(x)/α + 1) − τ(x)\big),
    \qquad τ(x) = ½\big(x − 1 − α + \sqrt{(x − 1 − α)^2 − 4α}\big),

``x̲ = (1 + τ̲)(1 + α/τ̲)``. ``σ²`` is its minimiser over
``[max(γ_{H̄+1}² / (M x̲), mean_{h > H̄} γ_h² / M), ‖Y‖² / (L M)]`` with
``H̄ = ⌈L / (1 + α)⌉ − 1`` (the largest rank EVB can return): a log-spaced grid, then a
golden-section refinement around its best point (``Ω`` need not be convex).

This runs on the host in NumPy float64: a rank is a shape, so it cannot be traced.
Only the singular values are needed; they come from ``eigh`` of the ``L × L`` Gram
matrix, never from a full SVD.

References:
    S. Nakajima, M. Sugiyama, S. D. Babacan, R. Tomioka, "Global analytic solution of
    fully-observed variational Bayesian matrix factorization", JMLR 14 (2013) 1–37.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_GRID = 400
_GOLDEN = 0.5 * (3.0 - np.sqrt(5.0))


class EVBMFResult(NamedTuple):
    """Result of :func:`evbmf`.

    Attributes:
        rank: the number of components EVB keeps (Python int, may be 0).
        noise_variance: the estimated (or given) noise variance ``σ²``.
        singular_values: ``(rank,)`` float64, the VB estimates ``γ̂_h`` of the kept
            components, in decreasing order.
        threshold: ``γ^{EVB}``: singular values of ``Y`` above it are kept.
    """

    rank: int
    noise_variance: float
    singular_values: np.ndarray
    threshold: float


def evbmf(y, *, noise_variance: float | None = None) -> EVBMFResult:
    """Rank, noise variance and shrunk singular values of ``y`` by analytic EVBMF.

    Args:
        y: a 2-D real matrix (any shape; ``L ≤ M`` is arranged by transposing).
        noise_variance: ``σ²`` when known; by default it is estimated by minimising the
            free energy, as the module docstring describes.

    Returns:
        ``EVBMFResult``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.standard_normal((30, 3)) @ rng.standard_normal((3, 50))
        >>> y = y + 0.1 * rng.standard_normal((30, 50))
        >>> evbmf(y).rank
        3
    """
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"y must be a 2-D matrix, got shape {y.shape}")
    if 0 in y.shape:
        raise ValueError(f"y has an empty mode: shape {y.shape}")
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise TypeError(f"y must be a real matrix, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or Inf")
    if y.shape[0] > y.shape[1]:
        y = y.T
    size_l, size_m = y.shape
    gram = y @ y.T
    gamma_sq = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)  # decreasing γ_h²
    total = float(np.sum(gamma_sq))
    alpha = size_l / size_m
    tau_low = _tau_lower(alpha)
    x_low = (1 + tau_low) * (1 + alpha / tau_low)
    if total == 0.0:
        return EVBMFResult(0, 0.0, np.zeros(0), 0.0)
    if noise_variance is None:
        sigma2 = _noise_variance(gamma_sq, size_l, size_m, alpha, x_low)
    else:
        sigma2 = float(noise_variance)
        if not np.isfinite(sigma2) or sigma2 <= 0:
            raise ValueError(f"noise_variance must be a finite number > 0, got {noise_variance!r}")
    threshold_sq = size_m * sigma2 * x_low
    keep = gamma_sq > threshold_sq
    rank = int(np.sum(keep))
    g_sq = gamma_sq[:rank]
    ratio = (size_l + size_m) * sigma2 / g_sq
    disc = np.clip((1 - ratio) ** 2 - 4 * size_l * size_m * sigma2**2 / g_sq**2, 0.0, None)
    estimates = 0.5 * np.sqrt(g_sq) * (1 - ratio + np.sqrt(disc))
    return EVBMFResult(rank, sigma2, estimates, float(np.sqrt(threshold_sq)))


def _tau_lower(alpha: float) -> float:
    """``τ̲``: the root of ``Φ(τ) + Φ(τ/α) = 0``, ``Φ(z) = log(1 + z)/z − ½`` (bisection).

    The left side falls from 1 (τ → 0) to −1 (τ → ∞), so the root is unique.
    """

    def phi(z):
        return np.log1p(z) / z - 0.5

    low, high = 1e-8 * np.sqrt(alpha), 10.0 * np.sqrt(alpha)
    while phi(high) + phi(high / alpha) > 0:
        high *= 2.0
    for _ in range(200):
        mid = np.sqrt(low * high)
        if phi(mid) + phi(mid / alpha) > 0:
            low = mid
        else:
            high = mid
    return float(np.sqrt(low * high))


def _free_energy(sigma2: np.ndarray, gamma_sq: np.ndarray, size_m: int, alpha: float, x_low):
    """``Ω(σ²) = Σ_h ψ(γ_h² / (M σ²))`` for each entry of ``sigma2`` (a 1-D array)."""
    tiny = np.finfo(np.float64).tiny
    x = np.maximum(gamma_sq[None, :] / (size_m * sigma2[:, None]), tiny)
    above = x > x_low
    b = x - (1 + alpha)
    tau = 0.5 * (b + np.sqrt(np.clip(b * b - 4 * alpha, 0.0, None)))
    tau = np.where(above, tau, 1.0)  # unused below the threshold; keeps the logs finite
    psi1 = np.log(tau + 1) + alpha * np.log(tau / alpha + 1) - tau
    return np.sum(x - np.log(x) + np.where(above, psi1, 0.0), axis=1)


def _noise_variance(gamma_sq, size_l: int, size_m: int, alpha: float, x_low: float) -> float:
    """The ``σ²`` that minimises the free energy over the bracket of Nakajima et al."""
    h_bar = min(int(np.ceil(size_l / (1 + alpha))) - 1, size_l - 1)
    upper = float(np.sum(gamma_sq)) / (size_l * size_m)
    lower = max(gamma_sq[h_bar] / (size_m * x_low), float(np.mean(gamma_sq[h_bar:])) / size_m)
    lower = max(lower, upper * 1e-12)  # exactly low-rank input: keep the logs finite
    if lower >= upper:
        return upper
    grid = np.geomspace(lower, upper, _GRID)
    values = _free_energy(grid, gamma_sq, size_m, alpha, x_low)
    best = int(np.argmin(values))
    lo = np.log(grid[max(best - 1, 0)])
    hi = np.log(grid[min(best + 1, _GRID - 1)])

    def energy(log_s):
        return float(_free_energy(np.array([np.exp(log_s)]), gamma_sq, size_m, alpha, x_low)[0])

    # Golden-section search in log σ² inside the grid cell pair around the best point.
    a, b = lo, hi
    c, d = a + _GOLDEN * (b - a), b - _GOLDEN * (b - a)
    fc, fd = energy(c), energy(d)
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = a + _GOLDEN * (b - a)
            fc = energy(c)
        else:
            a, c, fc = c, d, fd
            d = b - _GOLDEN * (b - a)
            fd = energy(d)
    candidate = float(np.exp(0.5 * (a + b)))
    return candidate if energy(np.log(candidate)) <= values[best] else float(grid[best])
