"""Streaming: audio source → ring buffer → log-Mel windows → onnxruntime → WebSocket broadcast. No TensorFlow."""
