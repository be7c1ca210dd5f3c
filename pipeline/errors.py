"""Re-export of the error family, which lives in the runtime so a device can ship `pipeline/runtime` alone."""

from edgepipe.runtime.errors import (  # noqa: F401
    ArtifactError,
    BenchmarkError,
    EdgepipeError,
    ExportError,
    InputError,
    QuantizeError,
    SpecError,
    TrainError,
    UnknownModelError,
    WeightImportError,
)

__all__ = ["EdgepipeError"]
