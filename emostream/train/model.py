"""The models: the reference CRNN (two conv blocks, two stacked LSTMs over time, softmax) and a compact CNN."""

from __future__ import annotations

from dataclasses import dataclass

from emostream.features import DEFAULT_CONFIG, LogMelConfig


@dataclass(frozen=True)
class CrnnConfig:
    """Layer sizes of the reference CRNN (1,118,216 parameters at the defaults)."""

    conv_filters: tuple[int, int] = (32, 64)
    lstm_units: tuple[int, int] = (128, 64)
    dropout: float = 0.3
    n_classes: int = 8
    learning_rate: float = 1e-4
    # What the emotion layer reads of the second LSTM: "last", its final state (the reference), or "mean", the mean
    # of its outputs over the window's 23 time steps (every part of the window counts alike; same weights).
    time_pooling: str = "last"
    # Max-pooling over this many of the 30 frequency rows the conv blocks leave (1 = none, the reference): the first
    # LSTM then reads where energy lies only to within that many rows, not at each row's absolute position.
    freq_pool: int = 1

    def __post_init__(self):
        if self.time_pooling not in TIME_POOLINGS:
            raise ValueError(f"time_pooling {self.time_pooling!r}: expected one of {', '.join(TIME_POOLINGS)}")
        if self.freq_pool not in FREQ_POOLS:
            raise ValueError(f"freq_pool {self.freq_pool}: expected one of {', '.join(map(str, FREQ_POOLS))} "
                             "(a divisor of the 30 frequency rows the conv blocks leave; others drop rows)")


TIME_POOLINGS = ("last", "mean")
#: Frequency rows one max-pool step may span: the divisors of the 30 rows the conv blocks leave of 128 mels (a pool
#: that does not divide them would silently drop the top rows).
FREQ_POOLS = (1, 2, 3, 5, 6, 10)


def build_crnn(
    model_config: CrnnConfig = CrnnConfig(),
    features: LogMelConfig = DEFAULT_CONFIG,
    use_cudnn: bool | str = "auto",
    compile: bool = True,
):
    """Conv2D→BN→MaxPool ×2 → Permute(time first) → Reshape → LSTM→Dropout ×2 → Dense softmax (with
    ``time_pooling="mean"`` the second LSTM returns every step and their mean feeds the dropout).

    Input: (n_mels, window_frames, 1) standardised log-Mel. ``use_cudnn=False`` gives LSTMs that
    export to ONNX from a GPU-trained model. ``compile=False`` gives an inference-only model
    (saved without optimizer state).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(features.n_mels, features.window_frames, 1), name="log_mel")
    x = inputs
    for filters in model_config.conv_filters:
        x = layers.Conv2D(filters, (3, 3), activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D((2, 2))(x)
    if model_config.freq_pool > 1:
        x = layers.MaxPooling2D((model_config.freq_pool, 1), name="pool_over_frequency")(x)
    x = layers.Permute((2, 1, 3))(x)  # (time, mel, channels)
    x = layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]))(x)
    x = layers.LSTM(model_config.lstm_units[0], return_sequences=True, use_cudnn=use_cudnn)(x)
    x = layers.Dropout(model_config.dropout)(x)
    mean_over_time = model_config.time_pooling == "mean"
    x = layers.LSTM(model_config.lstm_units[1], return_sequences=mean_over_time, use_cudnn=use_cudnn)(x)
    if mean_over_time:
        x = layers.GlobalAveragePooling1D(name="mean_over_time")(x)
    x = layers.Dropout(model_config.dropout)(x)
    outputs = layers.Dense(model_config.n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="crnn")
    if not compile:
        return model
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=model_config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def with_speaker_head(model, n_speakers: int, hidden_units: int = 64):
    """A training model of two outputs — ``model``'s emotion probabilities and a speaker classifier on the same
    representation (the emotion layer's input) behind a gradient reversal — and the reversal layer.

    The speaker head learns to name the training speakers; the reversed gradient pushes the shared layers the
    other way, towards a representation that does not tell the speakers apart (domain-adversarial training, with
    speakers as domains). ``reversal.strength`` (a variable, 0 at first) scales the reversed gradient: the training
    loop ramps it. ``model`` keeps its single output and every weight it shares; it is what is scored and exported.
    """
    import keras
    import tensorflow as tf
    from keras import layers

    class GradientReversal(layers.Layer):
        """Identity forward; the gradient times −``strength`` backward."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.strength = self.add_weight(shape=(), initializer="zeros", trainable=False, name="strength")

        def call(self, x):
            strength = tf.cast(tf.convert_to_tensor(self.strength), x.dtype)

            @tf.custom_gradient
            def reverse(t):
                return tf.identity(t), lambda dy: -strength * dy

            return reverse(x)

        def compute_output_shape(self, input_shape):
            return input_shape

    shared = model.get_layer("probabilities").input
    reversal = GradientReversal(name="gradient_reversal")
    h = layers.Dense(hidden_units, activation="relu", name="speaker_hidden")(reversal(shared))
    speaker = layers.Dense(n_speakers, activation="softmax", name="speaker")(h)
    return keras.Model(model.input, [model.output, speaker], name=f"{model.name}_speaker_adversarial"), reversal


def reversal_ramp(progress: float) -> float:
    """The usual domain-adversarial schedule, 0 → 1 over training: 2 / (1 + exp(−10·progress)) − 1 (Ganin &
    Lempitsky 2015), so the speaker head is trained before its gradient reaches the shared layers in earnest."""
    import math

    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


@dataclass(frozen=True)
class CnnConfig:
    """Layer sizes of the compact CNN (~0.1 M parameters at the defaults)."""

    conv_filters: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.3
    n_classes: int = 8


def build_cnn(model_config: CnnConfig = CnnConfig(), features: LogMelConfig = DEFAULT_CONFIG):
    """(Conv2D 3×3 → BN → ReLU → MaxPool 2×2) per filter count (no pool after the last), then the mean over
    frequency, then the mean and the maximum over time, dropout and a softmax.

    Pooling over time makes the answer independent of where in the window speech sits, as a stream presents
    it; no recurrent layer can memorise a corpus's utterance shapes. Input: (n_mels, window_frames, 1).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(features.n_mels, features.window_frames, 1), name="log_mel")
    x = inputs
    for i, filters in enumerate(model_config.conv_filters):
        x = layers.Conv2D(filters, (3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        if i < len(model_config.conv_filters) - 1:
            x = layers.MaxPooling2D((2, 2))(x)
    x = layers.AveragePooling2D((x.shape[1], 1), name="mean_over_mels")(x)
    x = layers.Reshape((x.shape[2], x.shape[3]))(x)  # (time, channels)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    x = layers.Dropout(model_config.dropout)(x)
    outputs = layers.Dense(model_config.n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")
