"""The daemon: audio source → ring buffer → ``emostream.inference`` → WebSocket broadcast. No TensorFlow."""
