"""onnxruntime's quantization tools, imported once with `sys.path` left as it was: the names `quantize` and
`quantize_calib` use.

`onnxruntime.quantization` imports `onnxruntime.transformers`, whose `__init__` appends its own folder (which holds
a generic `models/` package) to `sys.path`; a user's later `import models` could then find onnxruntime's.
"""

from __future__ import annotations

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

__all__ = ["CalibrationDataReader", "CalibrationMethod", "QuantFormat", "QuantType", "quantize_dynamic",
           "quantize_static", "create_calibrator", "save_tensors_data", "quant_pre_process", "float16"]
