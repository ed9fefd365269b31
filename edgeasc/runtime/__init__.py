"""The device runtime: everything a board needs to classify audio with an exported model,
and nothing that needs torch (a test imports every module here with torch hidden).

audio (decode, resample, channels), features (the numpy frontend and its parameters),
metadata (the one schema of an exported model's metadata), deployed (an exported file under
onnxruntime), predict (files, folders, stdin; windows and batches), stream and microphone
(`listen`), bench (latency and memory, end to end) and cli (the device commands).
"""
