"""Export: Keras CRNN → ONNX with the feature contract and a parity proof (needs the `export` extra)."""
