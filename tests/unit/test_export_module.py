"""export_module's own checks, before any tracing (the README example runs the whole path in the slow tests)."""

import pytest
import torch

from edgepipe.errors import ExportError
from edgepipe.export import export_module
from edgepipe.models import get_spec


def test_export_module_takes_a_module_and_a_spec(tmp_path):
    spec = get_spec("sface.opencv")
    with pytest.raises(ExportError, match="takes an nn.Module and a ModelSpec, got function and ModelSpec"):
        export_module(lambda x: x, spec, tmp_path)
    with pytest.raises(ExportError, match="got Identity and dict"):
        export_module(torch.nn.Identity(), {"name": "x"}, tmp_path)
    with pytest.raises(ExportError, match="opset must be >= 18"):
        export_module(torch.nn.Identity(), spec, tmp_path, opset=17)
    assert not any(tmp_path.iterdir())
