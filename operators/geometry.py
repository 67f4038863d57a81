"""CT acquisition geometries (2-D, parallel and fan beam).

Lengths are in pixel units (the image's pixel is 1 x 1, the image centred on the
rotation axis) unless ``pixel_spacing`` is given, in which case every length of the
geometry (distances, detector spacing) is in the same physical unit as
``pixel_spacing`` (typically mm). Angles are in radians.

Calibration (both geometries)
-----------------------------
``center_offset`` (detector cells, unit-free): where the rotation axis projects on the detector, relative to
the detector's middle. The ray through the rotation axis (parallel: the projection of the axis; fan: the
central ray from the source through the axis) hits cell ``(D - 1)/2 + center_offset``; i.e. the detector is
shifted by ``-center_offset`` cells along its axis. ``angle_offsets`` (``[views]`` radians or ``None``) are added
to the nominal angles: :meth:`angles_rad` returns the calibrated angles, :meth:`nominal_angles_rad` the
nominal ones. In files (:meth:`to_dict` / :func:`geometry_from_dict`) the keys are ``center_offset`` and
``angle_offsets_deg`` (degrees), written only when set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .errors import GeometryError


def default_detector_count(image_size: int) -> int:
    """``ceil(N * sqrt(2))``: enough detectors to cover the image's diagonal."""
    return int(math.ceil(image_size * math.sqrt(2.0)))


def _check_common(name: str, views: int, detectors: int | None, detector_spacing: float | None,
                  angle_range: tuple[float, float], pixel_spacing: float | None,
                  angles: tuple[float, ...] | None, center_offset: float,
                  angle_offsets: tuple[float, ...] | None) -> None:
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) or views < 1:
        raise GeometryError(f"{name}: views must be a positive integer, got {views!r}.")
    if detectors is not None and (isinstance(detectors, bool) or not isinstance(detectors, (int, np.integer)) or detectors < 1):
        raise GeometryError(f"{name}: detectors must be a positive integer or None (default ceil(N*sqrt2)), got {detectors!r}.")
    if detector_spacing is not None and not (math.isfinite(detector_spacing) and detector_spacing > 0):
        raise GeometryError(f"{name}: detector_spacing must be a positive finite number, got {detector_spacing!r}.")
    if pixel_spacing is not None and not (math.isfinite(pixel_spacing) and pixel_spacing > 0):
        raise GeometryError(f"{name}: pixel_spacing must be a positive finite number or None, got {pixel_spacing!r}.")
    if len(angle_range) != 2 or not all(math.isfinite(a) for a in angle_range) or angle_range[1] <= angle_range[0]:
        raise GeometryError(f"{name}: angle_range must be (start, stop) in radians with stop > start, got {angle_range!r}.")
    if angles is not None:
        if len(angles) != views:
            raise GeometryError(f"{name}: {len(angles)} explicit angles given but views={views}; they must agree.")
        if not all(math.isfinite(a) for a in angles):
            raise GeometryError(f"{name}: explicit angles must be finite numbers (radians).")
    if not math.isfinite(center_offset):
        raise GeometryError(f"{name}: center_offset must be a finite number (detector cells), got {center_offset!r}.")
    if angle_offsets is not None:
        if len(angle_offsets) != views:
            raise GeometryError(f"{name}: {len(angle_offsets)} angle offsets given but views={views}; give one per view.")
        if not all(math.isfinite(a) for a in angle_offsets):
            raise GeometryError(f"{name}: angle offsets must be finite numbers (radians).")


class _AngularGeometry:
    """Shared behaviour of the geometries: angle list, detector count, field normalization."""

    def _normalize_fields(self) -> None:
        name = type(self).__name__
        try:
            if self.angles is not None:
                object.__setattr__(self, "angles", tuple(float(a) for a in self.angles))
            if self.angle_offsets is not None:
                object.__setattr__(self, "angle_offsets", tuple(float(a) for a in self.angle_offsets))
            object.__setattr__(self, "center_offset", float(self.center_offset))
        except (TypeError, ValueError) as exc:
            raise GeometryError(f"{name}: angles, angle_offsets and center_offset must be numbers ({exc}).") from exc
        object.__setattr__(self, "angle_range", tuple(float(a) for a in self.angle_range))
        _check_common(name, self.views, self.detectors, self.detector_spacing, self.angle_range,
                      self.pixel_spacing, self.angles, self.center_offset, self.angle_offsets)

    def nominal_angles_rad(self) -> np.ndarray:
        """Nominal projection (source) angles in radians, float64 ``[views]`` (without ``angle_offsets``)."""
        if self.angles is not None:
            return np.asarray(self.angles, dtype=np.float64)
        start, stop = self.angle_range
        return start + (stop - start) * np.arange(self.views, dtype=np.float64) / self.views

    def angles_rad(self) -> np.ndarray:
        """Projection (source) angles in radians, float64 ``[views]``: nominal plus ``angle_offsets``."""
        angles = self.nominal_angles_rad()
        return angles if self.angle_offsets is None else angles + np.asarray(self.angle_offsets, dtype=np.float64)

    @property
    def is_calibrated(self) -> bool:
        """Whether a centre offset or angle offsets are set (non-zero)."""
        return self.center_offset != 0.0 or (self.angle_offsets is not None and any(self.angle_offsets))

    def calibrated(self, center_offset: float = 0.0, angle_offsets=None):
        """A copy with these calibration parameters (detector cells; ``[views]`` radians or ``None``)."""
        return replace(self, center_offset=center_offset,
                       angle_offsets=None if angle_offsets is None else tuple(float(a) for a in angle_offsets))

    def _calibration_dict(self) -> dict:
        d = {}
        if self.center_offset != 0.0:
            d["center_offset"] = self.center_offset
        if self.angle_offsets is not None:
            d["angle_offsets_deg"] = [math.degrees(a) for a in self.angle_offsets]
        return d

    def detector_count(self, image_size: int) -> int:
        return self.detectors if self.detectors is not None else default_detector_count(image_size)


@dataclass(frozen=True)
class ParallelBeam(_AngularGeometry):
    """2-D parallel-beam geometry.

    Parameters
    ----------
    views : int
        Number of projection angles, evenly spaced over ``angle_range`` (end excluded)
        unless ``angles`` lists them explicitly.
    detectors : int or None
        Detector cell count; ``None`` means ``ceil(N * sqrt(2))`` for an ``N x N`` image.
    detector_spacing : float
        Width of one detector cell (pixel units, or ``pixel_spacing``'s unit).
    angle_range : (float, float)
        Start and stop angle in radians; default ``(0, pi)``.
    angles : tuple of float or None
        Explicit angles in radians (overrides ``angle_range``).
    pixel_spacing : float or None
        Physical size of one image pixel; ``None`` means everything is in pixel units.
    center_offset : float
        Rotation-axis offset on the detector, in detector cells (see the module docstring).
    angle_offsets : tuple of float or None
        Per-view angle corrections in radians, added to the nominal angles.
    """

    views: int = 180
    detectors: int | None = None
    detector_spacing: float = 1.0
    angle_range: tuple[float, float] = (0.0, math.pi)
    angles: tuple[float, ...] | None = None
    pixel_spacing: float | None = None
    center_offset: float = 0.0
    angle_offsets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self._normalize_fields()

    kind = "parallel"

    def resolved(self, image_size: int) -> ParallelBeam:
        """A copy with ``detectors`` filled in for an ``image_size`` image."""
        return replace(self, detectors=self.detector_count(image_size))

    def in_pixels(self) -> ParallelBeam:
        """The same geometry with all lengths converted to pixel units."""
        if self.pixel_spacing is None:
            return self
        return replace(self, detector_spacing=self.detector_spacing / self.pixel_spacing, pixel_spacing=None)

    def to_dict(self) -> dict:
        d = {"type": "parallel", "views": self.views, "detectors": self.detectors,
             "detector_spacing": self.detector_spacing, "angle_range": list(self.angle_range),
             "pixel_spacing": self.pixel_spacing}
        if self.angles is not None:
            d["angles"] = list(self.angles)
        d.update(self._calibration_dict())
        return d


@dataclass(frozen=True)
class FanBeam(_AngularGeometry):
    """2-D fan-beam (equi-spaced flat detector) geometry.

    Parameters
    ----------
    views : int
        Number of source positions over ``angle_range`` (end excluded), default full circle.
    source_distance : float
        Source to rotation-axis distance (must exceed the image's half diagonal).
    detector_distance : float
        Rotation axis to detector distance.
    detectors : int or None
        Detector cell count; ``None`` means ``ceil(N * sqrt(2))``.
    detector_spacing : float or None
        Cell width on the detector; ``None`` means the magnification
        ``(source_distance + detector_distance) / source_distance``, i.e. one pixel at the axis.
    angle_range, angles, pixel_spacing, center_offset, angle_offsets
        As for :class:`ParallelBeam`; default range ``(0, 2 pi)``. ``center_offset`` shifts the detector only
        (the source stays on the line through the axis).
    """

    views: int = 360
    source_distance: float = 1000.0
    detector_distance: float = 500.0
    detectors: int | None = None
    detector_spacing: float | None = None
    angle_range: tuple[float, float] = (0.0, 2.0 * math.pi)
    angles: tuple[float, ...] | None = None
    pixel_spacing: float | None = None
    center_offset: float = 0.0
    angle_offsets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self._normalize_fields()
        for name in ("source_distance", "detector_distance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise GeometryError(f"FanBeam: {name} must be a positive finite number, got {value!r}.")

    kind = "fan"

    @property
    def magnification(self) -> float:
        return (self.source_distance + self.detector_distance) / self.source_distance

    def cell_width(self) -> float:
        """Detector cell width, in this geometry's length unit."""
        return self.detector_spacing if self.detector_spacing is not None else self.magnification * (self.pixel_spacing or 1.0)

    def check_image_fits(self, image_size: int) -> None:
        """Raise :class:`GeometryError` if the source would lie inside the image's bounding circle."""
        g = self.in_pixels()
        half_diagonal = image_size / math.sqrt(2.0)
        if g.source_distance <= half_diagonal:
            raise GeometryError(
                f"FanBeam: source_distance={self.source_distance} puts the source inside the {image_size}x{image_size} "
                f"image (half diagonal {half_diagonal:.1f} pixels). Increase source_distance."
            )

    def resolved(self, image_size: int) -> FanBeam:
        """A copy with ``detectors`` and ``detector_spacing`` filled in for an ``image_size`` image."""
        return replace(self, detectors=self.detector_count(image_size), detector_spacing=self.cell_width())

    def in_pixels(self) -> FanBeam:
        """The same geometry with all lengths converted to pixel units."""
        if self.pixel_spacing is None:
            return self
        p = self.pixel_spacing
        return replace(self, source_distance=self.source_distance / p, detector_distance=self.detector_distance / p,
                       detector_spacing=self.cell_width() / p, pixel_spacing=None)

    def to_dict(self) -> dict:
        d = {"type": "fan", "views": self.views, "source_distance": self.source_distance,
             "detector_distance": self.detector_distance, "detectors": self.detectors,
             "detector_spacing": self.detector_spacing, "angle_range": list(self.angle_range),
             "pixel_spacing": self.pixel_spacing}
        if self.angles is not None:
            d["angles"] = list(self.angles)
        d.update(self._calibration_dict())
        return d


Geometry = ParallelBeam | FanBeam


def geometry_from_dict(d: dict) -> Geometry:
    """Inverse of ``to_dict``; raises :class:`GeometryError` on unknown types or fields.

    Calibration keys: ``center_offset`` (detector cells) and ``angle_offsets_deg`` (``[views]`` degrees).
    """
    d = dict(d)
    kind = d.pop("type", None)
    classes = {"parallel": ParallelBeam, "fan": FanBeam}
    if kind not in classes:
        raise GeometryError(f"geometry 'type' must be one of {sorted(classes)}, got {kind!r}.")
    cls = classes[kind]
    allowed = (set(cls.__dataclass_fields__) - {"angle_offsets"}) | {"angle_offsets_deg"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise GeometryError(f"Unknown {kind}-beam geometry field(s) {unknown}; allowed: {sorted(allowed)}.")
    if "angle_range" in d and d["angle_range"] is not None:
        d["angle_range"] = tuple(d["angle_range"])
    if "angles" in d and d["angles"] is not None:
        d["angles"] = tuple(d["angles"])
    if "angle_offsets_deg" in d:
        offsets = d.pop("angle_offsets_deg")
        if offsets is not None:
            if isinstance(offsets, (str, bytes)) or not hasattr(offsets, "__iter__"):
                raise GeometryError(f"angle_offsets_deg must be a list of numbers (degrees, one per view), got {offsets!r}.")
            try:
                d["angle_offsets"] = tuple(math.radians(float(a)) for a in offsets)
            except (TypeError, ValueError) as exc:
                raise GeometryError(f"angle_offsets_deg must be a list of numbers (degrees), got {offsets!r}.") from exc
    try:
        return cls(**d)
    except TypeError as exc:
        raise GeometryError(f"Invalid {kind}-beam geometry: {exc}") from exc
