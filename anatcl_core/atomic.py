"""Atomic file writes: readers, and runs killed mid-write, never see half a file.

The data goes to a hidden temporary file in the target's folder (same filesystem, so the final rename is
atomic), is flushed to disk, then renamed over the target; on any error the temporary file is removed.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a binary file that becomes `path` only once `write` has returned.

    The previous content of `path`, if any, stays intact when `write` raises or the process dies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
