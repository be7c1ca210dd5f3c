"""Write files all-or-nothing: `atomic_write(path, data)` writes a temporary sibling and renames it into place;
`publish(tmp, path)` renames a finished temporary file (e.g. a video) into place with a normal file's mode;
`locked(path)` holds an exclusive lock on `path` for a read-modify-write across processes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from edgepipe.runtime.errors import InputError

__all__ = ["atomic_write", "publish", "locked"]


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    Raises:
        InputError: the directory cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(f"{path.parent}: cannot write there ({e.strerror or e})") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(f"{path}: cannot write ({e.strerror or e})") from e
        raise
    return path


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Rename the finished temporary file `tmp` onto `path`, with the permissions `open()` would have given it
    (mkstemp makes files 0600, so an annotated video would otherwise be unreadable to the user's group)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return Path(path)


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold an exclusive lock on `path` (through the sibling file `path.lock`, which stays) while the block runs.

    The file itself cannot carry the lock: `atomic_write` replaces it with a new file. Other processes that use
    `locked` on the same path wait; readers that do not lock still see a whole old or new file.

    Raises:
        InputError: the lock file cannot be created (the folder is missing, a file, or read-only).
    """
    lock_path = Path(f"{path}.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise InputError(f"{lock_path.parent}: cannot write there, not even its lock file "
                         f"({e.strerror or e})") from e
    try:
        if os.name == "nt":  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
