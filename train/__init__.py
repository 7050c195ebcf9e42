"""Training: RAVDESS → log-Mel → CRNN (needs the `train` extra: tensorflow, scikit-learn, ...)."""
