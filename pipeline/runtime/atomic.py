"""Write files all-or-nothing, and leave nothing behind that a later run does not clean up.

- `atomic_write(path, data)` writes a partial sibling and renames it into place; `partial_file(path)` makes such
  a sibling for writers that need a file name (a video), and `publish(tmp, path)` renames it into place.
- A partial sibling is named `<name>.partial-<pid>-<random><suffix>`: a user sees what it is, and the next writer
  into that folder removes the partials of processes that are gone (killed with -9, power cut).
- `scratch_dir(kind)` is a working folder in the system temp dir, `edgepipe-<kind>-<pid>-<random>`, removed on
  exit; stale ones of dead processes are removed when the next one is made.
- `partial_dir(path)` / `publish_dir(tmp, path)` do the same for a folder of outputs (a batch job's tables).
- `check_destination(path)` refuses, before any work, a place an output cannot be written.
- `read_text(path)` / `read_json(path)` read a text or JSON file or say in one line why they cannot.
- `locked(path)` holds an exclusive lock on `path` for a read-modify-write across processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from edgepipe.runtime.errors import InputError

__all__ = ["atomic_write", "partial_file", "publish", "partial_dir", "publish_dir", "scratch_dir", "check_destination", "read_text", "read_json",
           "locked"]

_PARTIAL = ".partial-"


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or a platform without signal 0
        return True
    return True


def _remove_stale(folder: Path, prefix: str) -> None:
    """Remove entries of `folder` named `<prefix><pid>-...` whose process is gone. Best effort: never raises."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def partial_file(path: str | Path, suffix: str = "") -> Path:
    """Create an empty partial sibling of `path` (mode 0600) to write into, then `publish` it; first remove the
    partials of `path` left by processes that are gone.

    Raises:
        InputError: the folder cannot be created or written.
    """
    path = Path(path)
    prefix = f"{path.name}{_PARTIAL}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent, prefix)
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise InputError(f"{path.parent}: cannot write there ({e.strerror or e})") from e
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    Raises:
        InputError: the directory cannot be created or written, or `path` is a directory.
    """
    path = Path(path)
    tmp = partial_file(path)
    try:
        tmp.write_bytes(data)
        publish(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
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


def partial_dir(path: str | Path) -> Path:
    """Create an empty partial sibling folder of `path` to fill, then `publish_dir` it; first remove the partials
    of `path` left by processes that are gone.

    Raises:
        InputError: the parent folder cannot be created or written.
    """
    path = Path(path)
    prefix = f"{path.name}{_PARTIAL}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent, prefix)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=path.parent))
    except OSError as e:
        raise InputError(f"{path.parent}: cannot write there ({e.strerror or e})") from e


def publish_dir(tmp: str | Path, path: str | Path) -> Path:
    """Put the finished folder `tmp` at `path`; a folder already there is replaced whole (moved aside to a
    partial sibling, which a later run removes if this one dies before it does)."""
    tmp, path = Path(tmp), Path(path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{path.name}{_PARTIAL}{os.getpid()}-", dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


def check_destination(path: str | Path, *, folder: bool = False) -> Path:
    """Refuse, before any work, an output that could not be written at the end: a folder where a file goes (or a
    file where a folder goes), or a place where no file can be created (tried, since root passes every access
    check). Creates nothing.

    Raises:
        InputError: naming the path and the problem.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file; expected a folder to write into")
    if not folder and path.is_dir():
        raise InputError(f"{path}: is a directory; expected a file name")
    target = path if folder else path.parent
    existing = next(p for p in (target.absolute(), *target.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{path}: cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise InputError(f"{path}: cannot be written (no file can be created in {existing}: {e.strerror or e})") from e
    return path


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents.

    Raises:
        InputError: missing or unreadable, or not UTF-8 text (a binary file where annotations belong).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         "expected text annotations") from e


def read_json(path: str | Path):
    """A JSON file's value; raises InputError naming the file if it is unreadable, not UTF-8 or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise InputError(f"{path}: not a readable JSON file ({e})") from e


@contextlib.contextmanager
def scratch_dir(kind: str):
    """A private working folder in the system temp dir, removed when the block ends (also on an exception or
    Ctrl-C); folders of the same kind left by killed processes are removed first. Yields its Path."""
    root = Path(tempfile.gettempdir())
    prefix = f"edgepipe-{kind}-"
    _remove_stale(root, prefix)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
