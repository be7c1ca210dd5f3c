"""Default sample photos, fetched from a registry package (MIT demo photos of npm `@vladmandic/face-api`)."""

from __future__ import annotations

from pathlib import Path

from edgepipe.sources import fetch_file
from edgepipe.specs import PackageFile

__all__ = ["sample_images"]

_ARCHIVE_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
_SAMPLES = {  # member -> sha256; group photos of 3-5 people, 1920 px, taken by the package's author
    "package/demo/sample1.jpg": "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51",
    "package/demo/sample2.jpg": "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691",
    "package/demo/sample3.jpg": "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
    "package/demo/sample4.jpg": "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
    "package/demo/sample5.jpg": "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
    "package/demo/sample6.jpg": "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
}


def sample_images(cache_dir: Path | None = None) -> list[Path]:
    """Paths of the six verified sample photos in the cache (downloads the package once)."""
    files = [PackageFile("npm", "@vladmandic/face-api", "1.7.15", _ARCHIVE_SHA256, member, sha, "MIT")
             for member, sha in _SAMPLES.items()]
    first = fetch_file(files[0], cache_dir, members=tuple(_SAMPLES)[1:])
    return [first] + [fetch_file(f, cache_dir) for f in files[1:]]
