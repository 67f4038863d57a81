"""Inputs and outputs: DICOM CT, sinograms, images, atomic writes, de-identification, plausibility."""

from .atomic import (atomic_file, atomic_output_dir, check_output_dir, remove_stale_debris, write_bytes_atomic,
                     write_text_atomic)
from .deid import (Deidentifier, check_burned_in_annotation, find_identifiers, identifying_values,
                   input_path_replacements, public_input_label, scrub_paths)
from .dicom import CTVolume, read_dicom, write_derived_dicom
from .plausibility import PlausibilityWarning, collect_warnings
from .images import from_working_size, read_image, resolve_window, to_working_size, working_pixel_spacing, write_png
from .sinogram import read_geometry_file, read_sinogram

__all__ = [
    "CTVolume", "read_dicom", "write_derived_dicom",
    "read_sinogram", "read_geometry_file",
    "read_image", "write_png", "resolve_window", "to_working_size", "from_working_size", "working_pixel_spacing",
    "atomic_file", "atomic_output_dir", "check_output_dir", "remove_stale_debris", "write_bytes_atomic",
    "write_text_atomic",
    "Deidentifier", "check_burned_in_annotation", "public_input_label", "identifying_values", "find_identifiers",
    "scrub_paths", "input_path_replacements",
    "PlausibilityWarning", "collect_warnings",
]
