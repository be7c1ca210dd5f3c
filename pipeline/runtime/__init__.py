"""The torch-free runtime a device embeds: onnxruntime + numpy + opencv, driven by the artifact's own metadata.

Never imports torch, `models`, or any other part of `pipeline`: copy this folder to a device and it works.
"""

from pipeline.runtime.errors import ArtifactError, EdgepipeError, InputError
from pipeline.runtime.detection import Detection, ObjectDetector
from pipeline.runtime.faces import Face, FaceDetector, FaceEmbedder, FaceGallery, FaceRecognizer, Match
from pipeline.runtime.preprocess import decode_image, read_image
from pipeline.runtime.session import Model, load
from pipeline.runtime.specs import ArtifactMeta

__all__ = ["load", "FaceDetector", "FaceEmbedder"]
