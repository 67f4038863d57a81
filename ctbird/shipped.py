"""Files shipped with ctbird: the default CT prior and the sample slices.

In the repository they live in the top-level ``data/`` folder; a wheel installs that folder as the package
``ctbird._data`` (``setup.py`` maps it) and an editable install maps the same name onto ``data/``, so both are found
through the import system (the package's location), from any working directory. Only a source checkout that
is put on ``sys.path`` without being installed has no ``ctbird._data``; its ``data/`` folder beside the package is
used then.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from .errors import InputError


def shipped_path(*parts: str) -> Path:
    """Path of a shipped file or folder, e.g. ``shipped_path("samples", "chest_tcga_0000.dcm")`` (may not exist)."""
    spec = find_spec("ctbird._data")
    if spec is None or not spec.submodule_search_locations:  # an uninstalled source checkout on sys.path
        return Path(__file__).resolve().parent.parent.joinpath("data", *parts)
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


def sample_names() -> list[str]:
    """File names of the shipped sample slices (DICOM)."""
    folder = shipped_path("samples")
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def sample_path(name: str = "chest_tcga_0000.dcm") -> Path:
    """Path of a shipped sample slice (default: the README's chest slice).

    Raises
    ------
    InputError
        If no sample has that name (the message lists the samples).
    """
    path = shipped_path("samples", name)
    if not path.is_file():
        raise InputError(f"No shipped sample named {name!r}; the samples are {sample_names()}.")
    return path


__all__ = ["shipped_path", "sample_names", "sample_path"]
