"""Datasets on disk (DCASE layouts, plain folders, CSV), the feature cache, training-time data
(loader and augmentations) and the built-in synthetic scenes; workers.py runs extraction and
synthesis in worker processes.

May import: runtime (audio decoding, the numpy frontend) and the base (errors, io, console).
Not models: a dataset does not know which network will read it.
"""
