"""Export: fold a trained network into its deployed form, write a verified single-file ONNX
with everything `predict` needs in its metadata, and report its size against a budget."""
