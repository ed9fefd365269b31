"""The command line, the highest layer: one module per command group (info, data, train,
export, device, demo), each thin: parse the flags, call the library, render rich tables or
JSON. No logic lives here; it may import every layer below. `device` (predict, listen, bench,
info on an .onnx file) and the root app import nothing that needs torch at import time: the
device install runs them (tests/test_torch_free.py).
"""

from edgeasc.cli.app import app, main

__all__ = ["app", "main"]
