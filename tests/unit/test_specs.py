import json

import pytest

from edgepipe.errors import ArtifactError, SpecError
from edgepipe.runtime.specs import ArtifactMeta, BlazeFaceHead, EmbeddingHead, InputSpec, Precision, Resize, Task
from edgepipe.specs import ModelSpec, PackageFile


def _meta(**changes):
    fields = dict(model_name="blazeface_front.mediapipe", task=Task.FACE_DETECTION, precision=Precision.FP32,
                  input=InputSpec((3, 128, 128)), head=BlazeFaceHead(strides=(8, 16, 16, 16)), labels=("face",))
    fields.update(changes)
    return ArtifactMeta(**fields)


def test_artifact_meta_round_trips_through_json():
    meta = _meta()
    assert ArtifactMeta.from_json(meta.to_json()) == meta
    embed = _meta(task=Task.FACE_EMBEDDING, head=EmbeddingHead(template=(("a", 1.0, 2.0), ("b", 3.0, 4.0))),
                  input=InputSpec((3, 150, 150), resize=Resize.ALIGNED_CHIP))
    assert ArtifactMeta.from_json(embed.to_json()) == embed


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(contract_version=99), "contract version 99"),
    (lambda d: d["head"].update(kind="yolo"), "unknown head kind 'yolo'"),
    (lambda d: d.update(precision="int4"), "malformed"),
    (lambda d: d["input"].update(shape_chw=[1, 2]), "shape_chw"),
    (lambda d: d.update(task="detection"), "does not match the 'blazeface' head"),  # one task, the head's
])
def test_bad_metadata_is_an_artifact_error(mutate, message):
    raw = json.loads(_meta().to_json())
    mutate(raw)
    with pytest.raises(ArtifactError, match=message):  # a bad field inside is reported as the artifact's fault
        ArtifactMeta.from_json(json.dumps(raw))


@pytest.mark.parametrize("kwargs, message", [
    (dict(shape_chw=(1, 10, 10)), "3 channels"),
    (dict(shape_chw=(3, 10, 10), std=(1.0, 0.0, 1.0)), "std must be > 0"),
    (dict(shape_chw=(3, 0, 10)), "positive"),
])
def test_input_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(SpecError, match=message):
        InputSpec(**kwargs)


def test_package_file_and_model_spec_validate():
    with pytest.raises(SpecError, match="registry"):
        PackageFile("conda", "x", "1", "0" * 64, "m", "0" * 64)
    with pytest.raises(SpecError, match="64 lowercase hex"):
        PackageFile("npm", "x", "1", "abc", "m", "0" * 64)
    with pytest.raises(SpecError, match="<arch>_<variant>.<tag>"):
        ModelSpec("NoDot", Task.FACE_DETECTION, InputSpec((3, 8, 8)), BlazeFaceHead(strides=(8,)))
    spec = ModelSpec("a_b.c", Task.FACE_DETECTION, InputSpec((3, 8, 8)), BlazeFaceHead(strides=(8,)))
    assert len(spec.sha256) == 64 and json.loads(spec.to_json())["name"] == "a_b.c"
