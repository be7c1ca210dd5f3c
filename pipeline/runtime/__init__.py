"""The torch-free runtime a device embeds: onnxruntime + numpy + opencv, driven by the artifact's own metadata.

Never imports torch, `edgepipe.models`, or any other part of `edgepipe`: the core install (`pip install edgepipe`:
numpy, onnxruntime, opencv) is all a device needs to `from edgepipe.runtime import ...`.
"""

from edgepipe.runtime.detection import ObjectDetector
from edgepipe.runtime.errors import ArtifactError, EdgepipeError, InputError
from edgepipe.runtime.faces import FaceDetector, FaceEmbedder, FaceGallery, FaceRecognizer, Match
from edgepipe.runtime.preprocess import decode_image, read_image
from edgepipe.runtime.results import Detection, Face
from edgepipe.runtime.session import Model, load
from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["load", "Model", "ArtifactMeta", "read_image", "decode_image", "ObjectDetector", "Detection", "FaceDetector",
           "FaceEmbedder", "FaceGallery", "FaceRecognizer", "Face", "Match", "EdgepipeError", "ArtifactError",
           "InputError"]
