"""Export: fold a trained network into its deployed form, write a verified single-file ONNX
with everything `predict` needs in its metadata (onnx.py, pipeline.py), pack pruned weights
(sparse.py), quantise to int8 (quantize.py), and report its size against a budget and a
challenge's rules (report.py); write and check DCASE 2025 inference packages (package.py,
dcase2025.py, submission.py.tmpl).

May import: train (checkpoints, the torch frontend), compress, models, data, runtime and the
base (errors, io, console). Never cli.
"""
