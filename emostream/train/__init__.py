"""Training: RAVDESS → log-Mel → CRNN (needs the `train` extra: tensorflow, scikit-learn, ...)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
