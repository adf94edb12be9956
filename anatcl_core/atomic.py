"""Atomic file writes: readers, and runs killed mid-write, never see half a file.

The data goes to a hidden temporary file in the target's folder (same filesystem, so the final rename is
atomic), is flushed to disk, then renamed over the target; on any error the temporary file is removed.

Alongside: owner markers, one line "pid host" naming the process that holds a half-written cohort folder or a
run folder, so that what a killed process left behind can be told from what a live one is still writing.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple


def current_umask() -> int:
    """The process's file-creation mask (e.g. 0o022), read without changing it for long."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by `tempfile` (0600, or 0700 for a folder) the mode a plain `open`/`mkdir` would have
    given it under the user's umask, so colleagues on shared storage can read results as they expect."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a binary file that becomes `path` only once `write` has returned.

    The previous content of `path`, if any, stays intact when `write` raises or the process dies. The file
    gets the mode of a normally created one (0644 under the usual umask 022), not tempfile's private 0600.
    A symbolic link is written through (its target is replaced, the link stays); a device, pipe or folder at
    `path` is never replaced (ValueError): renaming over /dev/null would swap it for a file.
    """
    given, path = Path(path), Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        raise ValueError(f"{given}: not a regular file; refusing to replace it with one (choose a file path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        apply_umask(tmp)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return given


#: Age (s) after which a temporary file of `write_atomic` belongs to no live write (a write takes seconds) but to a
#: process killed mid-write.
STALE_TEMPORARY_S = 3600


def remove_stale_files(folder: str | os.PathLike, pattern: str = ".*.tmp",
                       age_s: float = STALE_TEMPORARY_S) -> list[Path]:
    """Remove the files in `folder` matching `pattern` (a glob) last modified more than `age_s` seconds ago; ->
    the files removed. By default, the temporary files a killed `write_atomic` left. A folder that cannot be
    listed is left alone.

    For folders only this project writes (caches); a sweep lists the folder, so it is not done on every write.
    """
    removed = []
    try:
        for path in Path(folder).glob(pattern):
            if time.time() - path.stat().st_mtime > age_s:
                path.unlink(missing_ok=True)
                removed.append(path)
    except OSError:
        pass
    return removed


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create `folder` if needed and make sure files can be written in it, before any long computation.

    Raises a ValueError naming `what` (e.g. "--out") and the folder, instead of failing at the end of the work.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{what} {folder}: cannot create the folder ({err.strerror})") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder}: not a writable folder; choose a folder you can write to")
    return folder


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (for lock and partial files left by killed processes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                  # exists, owned by another user
        return True
    return True


class Owner(NamedTuple):
    """The process an owner marker names: `pid` on `host` (as socket.gethostname() spells it)."""

    pid: int
    host: str

    def gone(self) -> bool:
        """Whether the owner is known to have died: a process on this host that no longer exists.

        A process on another host cannot be checked from here, so it never counts as gone.
        """
        return self.host == socket.gethostname() and not process_alive(self.pid)


def write_owner(path: str | os.PathLike) -> None:
    """Create `path` holding "pid host" for this process; FileExistsError if it exists.

    Created exclusively (O_EXCL), so of two processes racing to write the same marker only one succeeds:
    that is what lets the marker serve as a lock.
    """
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")


def read_owner(path: str | os.PathLike) -> Owner | None:
    """The owner `path` names, or None when it cannot be read or is not "pid host".

    None covers a missing file, a marker that another process has created but not yet written (or was killed
    before writing), and files in an older or foreign format: callers treat it as an owner that may be alive.
    """
    try:
        pid, host = Path(path).read_text().split()
        return Owner(int(pid), host)
    except (OSError, ValueError):
        return None
