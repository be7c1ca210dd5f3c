"""An artifact on disk and the contract written into it, without torch: `Artifact` (ONNX file, figures JSON,
contract) and `write_contract(proto, meta)`, which export and quantize both stamp their files with. The reading
side is the runtime's `read_contract`, so a device and the build read a contract the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

import edgepipe
from edgepipe.runtime.session import METADATA_KEY
from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["Artifact", "write_contract"]


@dataclass(frozen=True)
class Artifact:
    """An exported or quantized model file, its figures JSON, and its contract."""

    onnx_path: Path
    json_path: Path
    meta: ArtifactMeta
    figures: dict = field(default_factory=dict, compare=False)


def write_contract(proto: onnx.ModelProto, meta: ArtifactMeta) -> onnx.ModelProto:
    """Replace `proto`'s metadata with the contract `meta` and name edgepipe as its producer; returns `proto`."""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    proto.producer_name, proto.producer_version = "edgepipe", edgepipe.__version__
    return proto
