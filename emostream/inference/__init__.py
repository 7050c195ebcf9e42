"""The inference core: log-Mel stream → onnxruntime model → window scores. Shared by the daemon, the public
API, file scoring, evaluation and the benchmarks; it never imports the daemon or TensorFlow."""
