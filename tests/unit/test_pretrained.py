"""The converted-weight cache: converted once, verified on every load, rebuilt when altered."""

import pytest
import torch

import edgepipe.models.pretrained as pretrained
from edgepipe.errors import WeightImportError
from edgepipe.models import get_spec


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    calls = []
    source = tmp_path / "source.bin"
    source.write_bytes(b"x")
    monkeypatch.setattr(pretrained, "fetch_file", lambda spec, cache_dir: source)

    def convert(path):
        calls.append(path)
        return {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}

    return convert, calls


def test_converted_once_then_read_from_cache(tmp_path, fake_source):
    convert, calls = fake_source
    spec = get_spec("blazeface_front.mediapipe")
    first = pretrained.load_pretrained(spec, convert, tmp_path)
    second = pretrained.load_pretrained(spec, convert, tmp_path)
    assert torch.equal(first["w"], second["w"]) and len(calls) == 1
    assert pretrained.converted_path(spec, tmp_path).is_file()


def test_altered_cache_entry_is_rebuilt(tmp_path, fake_source):
    convert, calls = fake_source
    spec = get_spec("blazeface_front.mediapipe")
    pretrained.load_pretrained(spec, convert, tmp_path)
    path = pretrained.converted_path(spec, tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip one weight byte: still parses, but the sha256 sidecar catches it
    path.write_bytes(bytes(data))
    state = pretrained.load_pretrained(spec, convert, tmp_path)
    assert len(calls) == 2 and torch.equal(state["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))


def test_unreadable_weights_file_is_a_weight_import_error(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(WeightImportError, match="not a readable safetensors file"):
        pretrained.load_safetensors(bad)
