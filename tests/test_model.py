import numpy as np
import pytest

from emostream.train.model import CrnnConfig, build_crnn


def test_reference_crnn_layers_and_parameter_count():
    model = build_crnn()
    assert model.count_params() == 1_118_216
    shapes = [tuple(layer.output.shape) for layer in model.layers]
    assert shapes == [
        (None, 128, 100, 1),
        (None, 126, 98, 32), (None, 126, 98, 32), (None, 63, 49, 32),
        (None, 61, 47, 64), (None, 61, 47, 64), (None, 30, 23, 64),
        (None, 23, 30, 64), (None, 23, 1920),
        (None, 23, 128), (None, 23, 128), (None, 64), (None, 64),
        (None, 8),
    ]
    assert model.optimizer.learning_rate.numpy() == np.float32(1e-4)


def test_outputs_are_probabilities():
    model = build_crnn()
    x = np.random.default_rng(0).standard_normal((3, 128, 100, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (3, 8)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(p > 0)


def test_mean_pooling_over_time_reads_every_step_of_the_second_lstm_with_the_same_weights():
    mean = build_crnn(CrnnConfig(time_pooling="mean"), compile=False)
    assert mean.count_params() == 1_118_216
    assert tuple(mean.get_layer("mean_over_time").input.shape) == (None, 23, 64)  # all 23 steps, not the last
    assert tuple(mean.output.shape) == (None, 8)
    from emostream.train.evaluate import PRESETS

    assert PRESETS["wideband-90ep-mean-pool"].build(8).get_layer("mean_over_time")  # the preset reaches the model
    with pytest.raises(ValueError):
        PRESETS["wideband-90ep"].build(8).get_layer("mean_over_time")
    with pytest.raises(ValueError, match="time_pooling"):
        CrnnConfig(time_pooling="max")
