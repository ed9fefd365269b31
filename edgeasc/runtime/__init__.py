"""The device runtime, the lowest layer: everything a board needs to classify audio with an
exported model, and nothing that needs torch or the onnx package (an import-linter contract
and tests/test_torch_free.py hold it to that).

Reading audio: audio (decode, resample, channels), sinc (torchaudio's default sinc resampler in
numpy, whole or streamed: the organisers' 44.1 -> 32 kHz), recording (files block by block, stdin as a
WAV stream), stream (WAV/raw PCM streams for `listen` and `predict -`), microphone (PortAudio).
Features: features (the numpy frontends and their parameters), framecache (STFT frames shared
between overlapping windows). The model: onnx_proto (a torch-free reader of the file's bytes),
metadata (the one schema of an exported model's metadata), deployed (the file under
onnxruntime, checked against its metadata), inputs (softmax, the model's input). Using it:
windows (the window plan), predict (files, folders, stdin), events (scene changes), stats
(bounded per-window statistics), mqtt (events to a broker), bench (latency, memory, profile),
scores and evaluation (accuracy, macro accuracy, device groups on labelled recordings). The
commands that call them: edgeasc/cli/device.py, predict.py, listen.py and evaluate.py.

May import: only the base (errors, io, console) and numpy, onnxruntime, soundfile, soxr; the
optional extras where a feature needs them (scipy: a faster FFT; sounddevice: --mic; paho-mqtt:
--mqtt).
"""
