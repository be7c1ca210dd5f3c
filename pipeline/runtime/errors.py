"""The one exception family of edgepipe; every message is a single line naming the bad value."""

__all__ = ["EdgepipeError"]


class EdgepipeError(Exception):
    """Base of every error edgepipe raises on purpose."""


class SpecError(EdgepipeError, ValueError):
    """A spec field or user option has a value outside its allowed set."""


class UnknownModelError(SpecError, KeyError):
    """A zoo name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightImportError(EdgepipeError):
    """Source weights could not be fetched, verified, parsed or loaded."""


class ExportError(EdgepipeError):
    """torch -> ONNX export or its parity check failed."""


class QuantizeError(EdgepipeError):
    """Quantization could not produce a valid artifact."""


class TrainError(EdgepipeError):
    """Training cannot start or go on: bad options, data that does not fit the model, a bad checkpoint."""


class ArtifactError(EdgepipeError):
    """An ONNX artifact is missing, unreadable, or lacks a valid edgepipe contract."""


class InputError(EdgepipeError):
    """A user-supplied file (image, video, gallery, data set) is missing or malformed."""


class BenchmarkError(EdgepipeError):
    """A benchmark cell could not be run."""
