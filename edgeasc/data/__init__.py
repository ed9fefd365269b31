"""Datasets on disk (DCASE layouts, plain folders), the feature cache, training-time data and
the built-in synthetic scenes."""
