"""Atomic writes: a file or a whole output folder appears complete or not at all.

Files are written to a temporary sibling and moved into place with :func:`os.replace` (atomic on
POSIX and Windows within one file system). An output folder is assembled in a staging folder beside
it, ``.<out>.<pid>.<random>.partial``, and renamed onto its final name only when every file in it has
been written. Rules:

* Every finished output folder holds a marker, :data:`MARKER_NAME`, listing the files ctbird wrote.
  ``force`` replaces only such a folder, and only while it holds nothing but those files and its
  ``metrics.json``: anything else (a user's folder, a ctbird folder with files added by hand) is refused.
* An exception, ``KeyboardInterrupt`` (SIGINT), SIGTERM or SIGHUP in the write phase removes the staging
  folder; the signal is then re-raised with its previous handler, so the process still ends as asked.
* SIGKILL or a power cut can leave ``.<out>.*.partial`` (unfinished) and ``.<out>.*.old`` (a replaced
  result being deleted) beside ``--out``. :func:`remove_stale_debris` (called by :func:`check_output_dir`)
  removes those whose process is gone, and moves a ``.old`` result back when ``--out`` itself is missing
  (the kill fell between the two renames). Debris is never an output folder: it has no marker.
* OS errors become :class:`ctbird.errors.OutputError` with one line (:func:`describe_os_error`): full
  disk, read-only or immutable target, busy target or mount point, missing permission.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputError

#: Marker file in every output folder ctbird writes (JSON: format, ctbird version, files).
MARKER_NAME = ".ctbird-output"
MARKER_FORMAT = 1
#: Debris without a process id in its name (older ctbird versions) is removed after this many seconds.
LEGACY_DEBRIS_AGE_S = 600.0


def _umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _ordinary_mode(fd_or_path, *, folder: bool) -> None:
    """Give a ``tempfile`` file (0600) or folder (0700) the permissions a plain ``open``/``mkdir`` would have:
    results are shared like any other file, not private to the user."""
    mode = (0o777 if folder else 0o666) & ~_umask()
    with contextlib.suppress(OSError):
        if isinstance(fd_or_path, int):
            os.fchmod(fd_or_path, mode)
        else:
            os.chmod(fd_or_path, mode)


def describe_os_error(exc: OSError, path: str | os.PathLike) -> str:
    """One line saying why ``path`` cannot be written and what to do."""
    code = exc.errno
    where = exc.filename or path
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"No space left on the disk holding {where}; free some space or choose another --out."
    if code == errno.EBUSY:
        return (f"{where} is busy or a mount point; ctbird replaces --out as a whole, so pass a folder inside it "
                "as --out.")
    if code == errno.EROFS:
        return f"{where} is on a read-only file system; choose another --out."
    if code in (errno.EACCES, errno.EPERM):
        return (f"Permission denied writing {where} (read-only, immutable or owned by someone else); "
                "check its permissions or choose another --out.")
    if code == errno.ENAMETOOLONG:
        return f"The path {where} is too long for the file system; choose a shorter --out."
    if code == errno.ENOENT:
        return f"Cannot write {where}: a folder on the way does not exist."
    return f"Cannot write {where}: {exc.strerror or exc}."


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary temporary file next to ``path``; on success it replaces ``path``.

    Raises
    ------
    OutputError
        If the folder does not exist or is not writable, or the disk is full.
    """
    target = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, target)) from exc
    _ordinary_mode(fd, folder=False)
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
        raise OutputError(describe_os_error(exc, path)) from exc


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of a ctbird output folder (``format``, ``ctbird``, ``files``), or ``None``."""
    marker = Path(folder) / MARKER_NAME
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return None
    return data


def foreign_entries(folder: str | os.PathLike) -> list[str] | None:
    """Files in ``folder`` that ctbird did not write there; ``None`` if it is not a ctbird output at all.

    A ctbird output holds :data:`MARKER_NAME` and ``metrics.json``; the marker lists every file written.
    """
    root = Path(folder)
    marker = read_marker(root)
    if marker is None or not (root / "metrics.json").is_file():
        return None
    written = set(marker["files"]) | {MARKER_NAME}
    return [name for name in _files_of(root) if name not in written]


def _replaceable(out_path: Path) -> None:
    """Raise unless ``out_path`` is a ctbird output folder holding only what ctbird wrote."""
    foreign = foreign_entries(out_path)
    if foreign is None:
        raise OutputError(f"{out_path} exists and was not written by ctbird (no {MARKER_NAME} marker with a "
                          "metrics.json); --force only replaces ctbird output folders. Choose another --out or "
                          "remove it yourself.")
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"{out_path} holds files ctbird did not write ({shown}); --force would delete them. "
                          "Move them away or choose another --out.")


def _debris_pattern(name: str) -> re.Pattern:
    """``.<name>.<pid>.<8 random>.partial|old`` (the pid is missing in older ctbird versions' debris)."""
    return re.compile(rf"^\.{re.escape(name)}\.(?:(?P<pid>\d+)\.)?(?P<rand>[a-z0-9_]{{8}})\.(?P<kind>partial|old)$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_debris(out: str | os.PathLike) -> list[Path]:
    """Remove staging (``.partial``) and replaced (``.old``) folders of ``out`` left by killed runs.

    Debris of a process that still runs is left alone. A ``.old`` folder holding the previous result
    while ``out`` is missing is moved back to ``out`` (nothing is lost). Returns the removed paths.
    """
    out_path = Path(out).expanduser().resolve()
    parent = out_path.parent
    if not parent.is_dir():
        return []
    removed: list[Path] = []
    pattern = _debris_pattern(out_path.name)
    for entry in sorted(parent.iterdir()):
        match = pattern.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        pid = match["pid"]
        if pid is not None and _pid_alive(int(pid)):
            continue
        if pid is None:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime < LEGACY_DEBRIS_AGE_S:
                    continue
        previous = entry / "previous"
        if match["kind"] == "old" and previous.is_dir() and not out_path.exists():
            with contextlib.suppress(OSError):
                os.replace(previous, out_path)
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed


def check_output_dir(out: str | os.PathLike, *, force: bool, inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Validate an output folder before any work is done (and remove debris of killed runs beside it).

    Refuses an output folder that contains (or is inside) an input, a path that is an existing file,
    a path whose parent is a file, read-only or not writable, a mount point, an existing non-empty folder
    unless ``force``, and with ``force`` a folder that ctbird did not write (see :func:`foreign_entries`).

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
    remove_stale_debris(out_path)
    if out_path.exists() and not out_path.is_dir():
        raise OutputError(f"Output path {out_path} exists and is not a folder; choose another --out.")
    _check_parent_writable(out_path)
    if out_path.is_dir() and os.path.ismount(out_path):
        raise OutputError(f"{out_path} is a mount point; ctbird replaces --out as a whole, so pass a folder inside "
                          "it as --out.")
    try:
        non_empty = out_path.is_dir() and any(out_path.iterdir())
    except OSError as exc:
        raise OutputError(describe_os_error(exc, out_path)) from exc
    if non_empty and not force:
        raise OutputError(f"Output folder {out_path} already exists and is not empty; pass --force to replace it.")
    if non_empty:
        _replaceable(out_path)
    return out_path


def _check_parent_writable(out_path: Path) -> None:
    """Raise unless the folder that will hold ``out_path`` (its first existing ancestor) can take new entries.

    ctbird creates the staging folder and renames it there, so a file on the way, a read-only file system
    or a folder without write permission would only fail after all the work: refuse them now.
    """
    probe = out_path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"Cannot create {out_path}: {probe} is a file, not a folder; choose another --out.")
    if not os.access(probe, os.W_OK | os.X_OK):
        read_only = False
        with contextlib.suppress(OSError, AttributeError):
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        code = errno.EROFS if read_only else errno.EACCES
        raise OutputError(describe_os_error(OSError(code, os.strerror(code), str(probe)), out_path))


class _Terminated(SystemExit):
    """Raised by the write phase's signal handler; exits with ``128 + signal`` if nothing else ends the process."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_become_exceptions() -> Iterator[dict]:
    """SIGTERM/SIGHUP raise :class:`_Terminated`, SIGINT ``KeyboardInterrupt``; held back while ``state['cleaning']``."""
    state = {"cleaning": False, "pending": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    names = [n for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n)]
    previous = {}

    def handler(signum, frame):
        if state["cleaning"]:
            state["pending"] = signum
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Terminated(signum)

    for name in names:
        number = getattr(signal, name)
        current = signal.getsignal(number)
        if current is signal.SIG_IGN or current is None:
            continue
        previous[number] = current
        signal.signal(number, handler)
    try:
        yield state
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, force: bool) -> Iterator[Path]:
    """Yield a staging folder next to ``out`` that becomes ``out`` on success.

    With ``force`` an existing ``out`` is replaced if it is a ctbird output (moved aside, then deleted,
    after the new folder is in place). On any exception or signal the staging folder is deleted and
    ``out`` is untouched; ``OSError`` from the body becomes :class:`OutputError` (one line). The marker
    :data:`MARKER_NAME` is added on success.
    """
    from .. import __version__

    out_path = Path(out).expanduser().resolve()
    remove_stale_debris(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.{os.getpid()}.", suffix=".partial",
                                        dir=out_path.parent))
        _ordinary_mode(staging, folder=True)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, out_path)) from exc
    with _signals_become_exceptions() as state:
        try:
            yield staging
            marker = {"format": MARKER_FORMAT, "ctbird": __version__, "files": _files_of(staging)}
            (staging / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
            if out_path.exists():
                if out_path.is_dir() and any(out_path.iterdir()):
                    if not force:
                        raise OutputError(f"Output folder {out_path} appeared while working; pass --force to replace it.")
                    _replaceable(out_path)
                old = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.{os.getpid()}.", suffix=".old",
                                            dir=out_path.parent))
                try:
                    os.replace(out_path, old / "previous")
                    try:
                        os.replace(staging, out_path)
                    except BaseException:
                        os.replace(old / "previous", out_path)
                        raise
                finally:
                    state["cleaning"] = True
                    shutil.rmtree(old, ignore_errors=True)
                    state["cleaning"] = False
            else:
                os.replace(staging, out_path)
        except BaseException as exc:
            state["cleaning"] = True
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, _Terminated) or state["pending"] is not None:
                signum = exc.signum if isinstance(exc, _Terminated) else state["pending"]
                state["resend"] = signum
            if isinstance(exc, OSError):
                raise OutputError(describe_os_error(exc, out_path)) from exc
            if "resend" not in state:
                raise
    signum = state.get("resend") or state["pending"]
    if signum is not None:
        # The handlers are restored: deliver the signal as if ctbird had not intercepted it.
        signal.raise_signal(signum)
        raise _Terminated(signum)
