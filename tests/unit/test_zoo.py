"""Every registered zoo model, built without its weights: it runs a batch and its outputs have the shapes its head
promises. A new zoo entry is covered by being registered (as timm tests every model in its registry)."""

import pytest
import torch

from edgepipe.models import build, get_spec, list_models
from edgepipe.specs import Layout


@pytest.mark.parametrize("name", list_models())
def test_zoo_model_outputs_match_its_head(name):
    spec = get_spec(name)
    torch.manual_seed(0)
    model = build(name, pretrained=False)
    c, h, w = spec.input.shape_chw
    batch = torch.randn(2, *((c, h, w) if spec.input.layout == Layout.NCHW else (h, w, c)))  # ~ normalised pixels
    with torch.no_grad():
        outputs = model(batch)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    expected = spec.head.output_shapes(spec.input.input_hw, len(spec.labels))
    assert len(outputs) == len(spec.head.outputs) == len(expected)
    for name_out, tensor, shape in zip(spec.head.outputs, outputs, expected):
        assert tuple(tensor.shape) == (2, *shape), f"{name}: output {name_out!r} is {tuple(tensor.shape)}"
        assert torch.isfinite(tensor).all(), f"{name}: output {name_out!r} holds non-finite values"
    assert spec.task == spec.head.task
    assert spec.head.resize is None or spec.input.resize == spec.head.resize


def test_every_head_kind_in_the_zoo_is_registered():
    from edgepipe.runtime.heads import HEADS

    for name in list_models():
        head = get_spec(name).head
        assert HEADS.get(head.kind) is type(head), f"{name}: head kind {head.kind!r} is not the HEADS entry"
