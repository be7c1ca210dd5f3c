"""Shared fixtures: the shared evaluation data and a weight cache for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`$EDGEPIPE_SHARED_DATA`, else `../shared/data` beside the repository; fails loudly when absent."""
    path = Path(os.environ.get("EDGEPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "lfw_10ids").is_dir():
        pytest.fail(f"shared evaluation data not found at {path}; set EDGEPIPE_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The weight cache the tests share ($EDGEPIPE_CACHE in CI, the user's cache otherwise)."""
    from edgepipe.sources import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def group_photos(shared_data) -> list[Path]:
    return sorted((shared_data / "group_photos").glob("*.jpg"))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, cache_dir, group_photos) -> dict[str, Path]:
    """Every zoo model exported once with its real weights: name -> fp32 ONNX path (shared by the session)."""
    from edgepipe.export import export_onnx
    from edgepipe.models import list_models

    out = tmp_path_factory.mktemp("artifacts")
    return {name: export_onnx(name, out, cache_dir=cache_dir, images=group_photos).onnx_path for name in list_models()}
