"""Atomic writes: a file or a whole output folder appears complete or not at all.

Files are written to a temporary sibling and moved into place with :func:`os.replace`
(atomic on POSIX and Windows within one file system). An output folder is assembled
in a temporary sibling folder and renamed onto its final name only when every file
in it has been written; on any error (``KeyboardInterrupt`` included) the temporary
data is removed and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputError


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary temporary file next to ``path``; on success it replaces ``path``.

    Raises
    ------
    OutputError
        If the folder does not exist or is not writable.
    """
    target = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write {target}: {exc.strerror or exc}. Check that the folder exists and is writable.") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    try:
        with atomic_file(path) as handle:
            handle.write(data)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_dir(out: str | os.PathLike, *, force: bool, inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Validate an output folder before any work is done.

    Refuses an output folder that contains (or is inside) an input, a path that is an existing
    file, and an existing non-empty folder unless ``force``.

    Returns
    -------
    Path
        The resolved output path.
    """
    out_path = Path(out).expanduser().resolve()
    for item in inputs:
        in_path = Path(item).expanduser().resolve()
        if _is_within(in_path, out_path) or _is_within(out_path, in_path):
            raise OutputError(
                f"Output folder {out_path} overlaps the input {in_path}; choose an --out folder outside the input."
            )
    if out_path.exists() and not out_path.is_dir():
        raise OutputError(f"Output path {out_path} exists and is not a folder; choose another --out.")
    if out_path.is_dir() and any(out_path.iterdir()) and not force:
        raise OutputError(f"Output folder {out_path} already exists and is not empty; pass --force to replace it.")
    return out_path


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, force: bool) -> Iterator[Path]:
    """Yield a temporary folder next to ``out`` that becomes ``out`` on success.

    With ``force`` an existing ``out`` is replaced (moved aside, then deleted, after the new
    folder is in place). On any exception the temporary folder is deleted and ``out`` is untouched.
    """
    out_path = Path(out).expanduser().resolve()
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".partial", dir=out_path.parent))
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder next to {out_path}: {exc.strerror or exc}.") from exc
    try:
        yield staging
        if out_path.exists():
            if not force and (not out_path.is_dir() or any(out_path.iterdir())):
                raise OutputError(f"Output folder {out_path} appeared while working; pass --force to replace it.")
            old = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".old", dir=out_path.parent))
            os.replace(out_path, old / "previous")
            try:
                os.replace(staging, out_path)
            except BaseException:
                os.replace(old / "previous", out_path)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
