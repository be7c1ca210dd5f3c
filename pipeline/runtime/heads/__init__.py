"""Output heads as plugins, one module per kind. Each holds the head's frozen spec (the decoder parameters an
artifact's contract carries), its numpy `decode` into the runtime's results, the task it serves, the resize it
needs and its int8 defaults. `HEADS` ties contract kinds to classes; callers ask the head (`head.decode`,
`head.task`, `head.quant_defaults`), never check its type.

A new head is one module here, its test, and one line in `HEADS`.
"""

from edgepipe.runtime.heads.base import Head, QuantDefaults
from edgepipe.runtime.heads.blazeface import BlazeFaceHead
from edgepipe.runtime.heads.embedding import EmbeddingHead
from edgepipe.runtime.heads.end2end import End2EndHead
from edgepipe.runtime.heads.gfl import GFLHead
from edgepipe.runtime.heads.yolov5 import YOLOv5Head
from edgepipe.runtime.heads.yolov8 import YOLOv8Head
from edgepipe.runtime.heads.yunet import YuNetHead

HEADS: dict[str, type] = {"blazeface": BlazeFaceHead, "embedding": EmbeddingHead, "end2end": End2EndHead,
                          "gfl": GFLHead, "yolov5": YOLOv5Head, "yolov8": YOLOv8Head, "yunet": YuNetHead}

__all__ = ["HEADS", "Head", "QuantDefaults", "BlazeFaceHead", "EmbeddingHead", "End2EndHead", "GFLHead", "YOLOv5Head", "YOLOv8Head", "YuNetHead"]
