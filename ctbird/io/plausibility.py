"""Plausibility of loaded inputs: impossible values are errors, merely unusual ones warnings.

Readers raise :class:`ctbird.errors.InputError` for what cannot be a valid measurement (a zero rescale
slope, non-finite values, a sinogram that is mostly negative, duplicate slice positions, a fan geometry
without distances, stored values that do not fit ``BitsStored``) and emit a :class:`PlausibilityWarning`
for what is possible but suspicious (an extreme slope, HU far outside the scanner range, huge line
integrals). :func:`collect_warnings` records those (and the readers' other ``UserWarning``\\ s) as plain
strings, for the terminal and for ``metrics.json``, while still showing them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np

from ..errors import InputError

#: HU range of real CT data (air -1000, dense metal up to a few 10^4 with extended scales).
HU_PLAUSIBLE = (-10_000.0, 100_000.0)
#: No real attenuation reaches these HU (1e6 HU is 1000x water): beyond them the rescale tags are corrupt.
HU_POSSIBLE = (-1e6, 1e6)
#: Rescale slopes outside this range are unusual for CT (typical: 1, sometimes 0.5-4).
SLOPE_PLAUSIBLE = (1e-3, 1e3)
#: Line integrals above this mean a transmission below e^-1000: not a measurement.
LINE_INTEGRAL_PLAUSIBLE = 1e3
#: Negative line integrals are noise while they stay above -NEGATIVE_TOLERANCE x peak, for at most
#: NEGATIVE_FRACTION of the samples.
NEGATIVE_TOLERANCE = 0.05
NEGATIVE_FRACTION = 0.01


class PlausibilityWarning(UserWarning):
    """An input value is possible but unusual (shown in the terminal and recorded in metrics.json)."""


def _warn(message: str) -> None:
    warnings.warn(message, PlausibilityWarning, stacklevel=3)


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Record ``UserWarning`` messages raised inside the block into the yielded list, and re-emit them.

    Example: ``with collect_warnings() as notes: volume = read_dicom(path)`` then ``summary["warnings"] = notes``.
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield notes
    for item in caught:
        if issubclass(item.category, UserWarning):
            text = str(item.message)
            if text not in notes:
                notes.append(text)
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def check_sinogram_values(data: np.ndarray, source: str = "sinogram") -> list[str]:
    """Raise for impossible line integrals in ``data``; return (and emit) warnings for unusual ones."""
    if not np.isfinite(data).all():
        raise InputError(f"{source} contains NaN or infinite values; a sinogram must be finite line integrals.")
    notes: list[str] = []
    if data.size == 0:
        return notes
    scale = float(np.abs(data).max())
    if scale == 0.0:
        return notes
    peak = max(float(data.max()), 0.0)
    tolerance = NEGATIVE_TOLERANCE * max(peak, scale if peak == 0 else peak)
    strongly_negative = float(np.mean(data < -tolerance))
    if float(data.min()) < -0.5 * scale or strongly_negative > NEGATIVE_FRACTION:
        raise InputError(f"{source} holds negative line integrals far beyond noise (min {float(data.min()):.4g}, "
                         f"peak {peak:.4g}, {100 * strongly_negative:.1f}% below -{tolerance:.3g}); pass -log(I/I0) "
                         "line integrals, not raw counts or a sign-flipped sinogram.")
    if peak > LINE_INTEGRAL_PLAUSIBLE:
        notes.append(f"{source} has line integrals up to {peak:.4g} (transmission e^-{peak:.3g}); real sinograms stay "
                     "below ~20. Is it in other units (counts, scaled HU)?")
    for note in notes:
        _warn(note)
    return notes


def check_hu_values(hu: np.ndarray, source: str) -> list[str]:
    """Raise for non-finite HU or HU beyond :data:`HU_POSSIBLE`; warn (and return) outside :data:`HU_PLAUSIBLE`."""
    if not np.isfinite(hu).all():
        raise InputError(f"{source}: the rescaled pixel values are not finite (NaN, or RescaleSlope/Intercept "
                         "overflow the float range); check the rescale tags.")
    lo, hi = float(hu.min()), float(hu.max())
    if lo < HU_POSSIBLE[0] or hi > HU_POSSIBLE[1]:
        raise InputError(f"{source}: the rescaled values span [{lo:.4g}, {hi:.4g}] HU, which no material reaches; "
                         "RescaleSlope/RescaleIntercept are corrupt.")
    notes = []
    if lo < HU_PLAUSIBLE[0] or hi > HU_PLAUSIBLE[1]:
        notes.append(f"{source}: HU values span [{lo:.4g}, {hi:.4g}], far outside real CT "
                     f"[{HU_PLAUSIBLE[0]:g}, {HU_PLAUSIBLE[1]:g}]; check RescaleSlope/RescaleIntercept.")
    for note in notes:
        _warn(note)
    return notes


def check_rescale_slope(slope: float, source: str) -> None:
    """Raise for a zero slope (every pixel would be the intercept); warn outside :data:`SLOPE_PLAUSIBLE`."""
    if slope == 0.0:
        raise InputError(f"{source}: RescaleSlope is 0, which maps every pixel to the intercept; the header is "
                         "corrupt (CT slopes are typically 1).")
    if not SLOPE_PLAUSIBLE[0] <= abs(slope) <= SLOPE_PLAUSIBLE[1]:
        _warn(f"{source}: RescaleSlope {slope:g} is unusual for CT (typically 1); check the HU values.")
