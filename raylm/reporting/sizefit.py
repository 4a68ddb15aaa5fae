"""How test NME falls with training-set size, and the smallest size worth training on.

The model is NME(n) = floor + scale * n ** -exponent: error falls as a power of the
data size towards a floor that more data of the same kind cannot beat. The
"minimum viable size" n* is the smallest n whose predicted NME is within
`tolerance` (relative) of that floor. Pure numpy/scipy; the report layer calls it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

PARAMETERS = 3  # floor, scale, exponent: the fit needs at least this many distinct sizes
EXPONENT_BOUNDS = (1e-3, 3.0)  # (0, 3] with the open end kept away from 0, where n* blows up
INTERVAL = (0.05, 0.95)  # a 90% bootstrap interval
# Relative size below which the floor counts as 0 (n* astronomically large) and a fall in NME
# across the sizes trained as none (n* meaningless).
ZERO_FLOOR = 1e-3


@dataclass(frozen=True)
class PowerLaw:
    """NME(n) = floor + scale * n ** -exponent, with n the number of training faces."""

    floor: float
    scale: float
    exponent: float

    def predict(self, sizes: float | np.ndarray) -> np.ndarray:
        """Predicted NME at each size."""
        return self.floor + self.scale * np.asarray(sizes, dtype=np.float64) ** -self.exponent

    def viable_size(self, tolerance: float) -> float:
        """n* = (scale / (tolerance * floor)) ** (1 / exponent): 0 for a flat curve, inf for a zero floor."""
        if self.scale <= 0:
            return 0.0
        if self.floor <= 0:
            return math.inf
        # In logs, so a tiny exponent gives inf rather than an OverflowError.
        log_size = (math.log(self.scale) - math.log(tolerance) - math.log(self.floor)) / self.exponent
        return math.exp(log_size) if log_size < 700 else math.inf


@dataclass(frozen=True)
class SizeEstimate:
    """n* from a power-law fit with its bootstrap interval.

    `fit` and `n_star` are None when the curve could not be fitted or is degenerate,
    and `problem` then says why in a sentence. `interval` is None when too few
    bootstrap resamples could be fitted (or, with exactly 3 sizes, none could be drawn).
    """

    fit: PowerLaw | None
    n_star: float | None
    interval: tuple[float, float] | None
    bootstrap_successes: int
    problem: str | None = None


def _points(sizes: Sequence[float], nmes: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The (size, NME) points with a finite NME; ValueError unless sizes are positive and >= 3 distinct."""
    x = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(nmes, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"sizes and nmes must be 1-D and the same length; got {x.shape} and {y.shape}")
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"training sizes must be positive; got {x.tolist()}")
    distinct = len(np.unique(x))
    if distinct < PARAMETERS:
        raise ValueError(f"a 3-parameter curve needs at least {PARAMETERS} distinct training sizes; got {distinct}")
    return x, y


def _model(u: np.ndarray, floor: float, scale: float, exponent: float) -> np.ndarray:
    return floor + scale * u**-exponent


def _initial_guess(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Try a few floors below the best NME; for each, fit log(NME - floor) linearly in log n; keep the best."""
    best, best_error = (0.5 * y.min(), max(float(np.ptp(y)), 1e-6), 0.5), math.inf
    for fraction in (0.0, 0.25, 0.5, 0.75, 0.9):
        floor = fraction * y.min()
        slope, intercept = np.polyfit(np.log(u), np.log(np.maximum(y - floor, 1e-12)), 1)
        exponent = float(np.clip(-slope, 0.01, 2.9))
        guess = (floor, float(np.exp(intercept)), exponent)
        error = float(np.sum((_model(u, *guess) - y) ** 2))
        if error < best_error:
            best, best_error = guess, error
    return best


def _fit(x: np.ndarray, y: np.ndarray, start: PowerLaw | None = None) -> PowerLaw:
    """Least squares from `start` (or an initial guess); ValueError when the optimiser fails."""
    # Sizes are rescaled to about 1 so the three parameters have similar magnitudes.
    reference = float(np.exp(np.log(x).mean()))
    u = x / reference
    if start is None:
        guess = _initial_guess(u, y)
    else:
        guess = (start.floor, start.scale * reference**-start.exponent, start.exponent)
    lower, upper = (0.0, 0.0, EXPONENT_BOUNDS[0]), (np.inf, np.inf, EXPONENT_BOUNDS[1])
    guess = tuple(np.clip(guess, np.add(lower, 1e-12), np.subtract(upper, 1e-9)))
    with warnings.catch_warnings():
        # Exact fits (3 points) have no covariance; it is never used.
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            params, _ = curve_fit(
                _model, u, y, p0=guess, bounds=(lower, upper), ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=5000
            )
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"the power-law fit did not converge ({error})") from error
    floor, scale, exponent = (float(p) for p in params)
    return PowerLaw(floor, scale * reference**exponent, exponent)


def _degenerate(fit: PowerLaw, x: np.ndarray, y: np.ndarray) -> str | None:
    """Why n* means nothing for this fit, or None when it does."""
    if fit.floor < ZERO_FLOOR * y.min():
        return "Degenerate fit: the floor is ~0 (NME keeps falling as a pure power law), so no size nears it."
    if fit.predict(x.min()) - fit.predict(x.max()) < ZERO_FLOOR * fit.floor:
        return "Degenerate fit: the curve is flat (NME does not fall over the sizes trained), so there is no threshold."
    return None


def fit_power_law(sizes: Sequence[float], nmes: Sequence[float]) -> PowerLaw:
    """Fit NME(n) = floor + scale * n ** -exponent by least squares (floor, scale >= 0; exponent in (0, 3]).

    Points with a non-finite NME are dropped. Raises ValueError with fewer than
    3 distinct sizes or when the fit does not converge.
    """
    return _fit(*_points(sizes, nmes))


def minimum_viable_size(
    sizes: Sequence[float], nmes: Sequence[float], tolerance: float = 0.10, bootstrap: int = 1000, seed: int = 0
) -> SizeEstimate:
    """n*, the smallest size whose predicted NME is within `tolerance` of the fitted floor, with a 90% interval.

    The interval is a residual bootstrap: the sizes are the study's design, not a
    sample, so they are kept and the fit's residuals (inflated by sqrt(m / (m - 3))
    for the 3 fitted parameters) are resampled onto the fitted curve and refitted.
    Resampling (size, NME) pairs instead would, with the 4-6 sizes a study has, often
    leave fewer than 3 distinct sizes. With exactly 3 sizes the curve passes through
    every point, so there are no residuals and no interval. Resamples whose fit fails
    are skipped and `bootstrap_successes` counts the rest; the interval is given only
    when at least half succeed. A resample whose floor reaches 0 counts with n* = inf.
    """
    try:
        x, y = _points(sizes, nmes)
        fit = _fit(x, y)
    except ValueError as error:
        return SizeEstimate(None, None, None, 0, f"Not fittable: {error}.")
    problem = _degenerate(fit, x, y)
    if problem is not None:
        return SizeEstimate(fit, None, None, 0, problem)
    n_star = fit.viable_size(tolerance)
    if len(x) <= PARAMETERS:
        return SizeEstimate(fit, n_star, None, 0)

    fitted = fit.predict(x)
    residuals = (y - fitted) * math.sqrt(len(x) / (len(x) - PARAMETERS))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        resampled = fitted + rng.choice(residuals, size=len(residuals), replace=True)
        try:
            samples.append(_fit(x, resampled, start=fit).viable_size(tolerance))
        except ValueError:
            continue
    interval = None
    if samples and len(samples) >= bootstrap / 2:
        # Order statistics, not interpolation, so infinite n* values cannot produce NaN.
        lo, hi = np.quantile(samples, INTERVAL, method="inverted_cdf")
        interval = (float(lo), float(hi))
    return SizeEstimate(fit, n_star, interval, len(samples))
