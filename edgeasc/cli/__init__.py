"""The command line, the highest layer: one module per command group (app: the root and its
global options; info; data: synth and features; train; devices: finetune-devices; export;
package; device: bench and info on an .onnx file; predict; listen; evaluate: a model on
labelled recordings; demo; extras: what an optional install lacks), each thin: parse the flags,
call the library, render rich tables or JSON. No logic lives here; it may import every layer
below. device, predict, listen, evaluate and the root app import nothing that needs torch: the device
install runs them (the torch-free import-linter contract and tests/test_torch_free.py).
"""

from edgeasc.cli.app import app, main

__all__ = ["app", "main"]
