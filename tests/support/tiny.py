"""Small real inputs for fast tests: a tiny ONNX artifact (a Conv + global pool face 'embedder' with an edgepipe
contract) and a PNG whose header claims another size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgepipe.runtime.session import METADATA_KEY
from edgepipe.runtime.specs import ArtifactMeta, EmbeddingHead, InputSpec, Precision, Resize, Task

TINY_META = ArtifactMeta(model_name="tiny_embed.test", task=Task.FACE_EMBEDDING, precision=Precision.FP32,
                         input=InputSpec((3, 16, 16), resize=Resize.ALIGNED_CHIP),
                         head=EmbeddingHead(dim=4, chip_size=16), opset=18)


def tiny_embedder(path: Path, *, graph_hw: tuple[int, int] = (16, 16), contract: str | None = None,
                  **input_changes) -> Path:
    """Write a (N, 3, H, W) -> (N, 4) artifact; `input_changes` alter the contract's InputSpec (it may then
    disagree with the graph on purpose), `contract` replaces the metadata JSON outright."""
    meta = dataclasses.replace(TINY_META, input=dataclasses.replace(TINY_META.input, **input_changes))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["embedding"])]
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             ["batch", 3, *graph_hw])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    model.metadata_props.add(key=METADATA_KEY, value=contract if contract is not None else meta.to_json())
    onnx.save(model, path)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims another size (its CRC no longer matches: decoders refuse it)."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)
