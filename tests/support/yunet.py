"""YuNet's source file opened at any size: it declares a static 640x640 input that OpenCV overrides per image."""

from __future__ import annotations

from pathlib import Path

import onnx


def open_size_copy(path: Path) -> bytes:
    """The YuNet graph with symbolic H, W and cell counts, so that onnxruntime accepts any multiple of 32."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "cells"
    del model.graph.value_info[:]  # the exporter's 640x640 intermediate shapes
    return model.SerializeToString()
