"""The device runtime, the lowest layer: everything a board needs to classify audio with an
exported model, and nothing that needs torch or the onnx package (an import-linter contract
and tests/test_torch_free.py hold it to that).

audio (decode, resample, channels), features (the numpy frontend and its parameters),
metadata (the one schema of an exported model's metadata), deployed (an exported file under
onnxruntime), predict (files, folders, stdin; windows and batches), stream and microphone
(`listen`), bench (latency and memory, end to end). The commands that call them are in
edgeasc/cli/device.py.

May import: only the base (errors, io, console) and numpy, onnxruntime, soundfile, soxr.
"""
