"""edgepipe: PyTorch vision models to edge devices through ONNX, with measured parity at every step.

Importing this package is cheap and torch-free; the stages live in submodules (`edgepipe.export`, ...).
"""

__version__ = "0.1.0"
