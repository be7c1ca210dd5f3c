"""onnxruntime's quantization tools, imported once with `sys.path` left as it was: the names `quantize` and
`quantize_calib` use.

`onnxruntime.quantization` imports `onnxruntime.transformers`, whose `__init__` appends its own folder (which holds
a generic `models/` package) to `sys.path`; a user's later `import models` could then find onnxruntime's.

The tools also log notes a user cannot act on through the *root* logger (e.g. "Axis 1 is out-of-range for weight
'...' with rank 1" for a 1-D weight that falls back to one scale): those become INFO records of this module.
"""

from __future__ import annotations

import logging
import sys

_saved_path = list(sys.path)
try:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers import float16
finally:
    sys.path[:] = _saved_path
del _saved_path


class _DemoteToolNotes(logging.Filter):
    """Drop the quantization tools' WARNING records from the root logger; log them here at INFO instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and record.levelno < logging.ERROR and "onnxruntime" in record.pathname:
            logging.getLogger(__name__).info("onnxruntime: %s", record.getMessage())
            return False
        return True


logging.getLogger().addFilter(_DemoteToolNotes())

__all__ = ["CalibrationDataReader", "CalibrationMethod", "QuantFormat", "QuantType", "quantize_dynamic",
           "quantize_static", "create_calibrator", "save_tensors_data", "quant_pre_process", "float16"]
