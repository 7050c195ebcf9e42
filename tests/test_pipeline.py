import numpy as np
import pytest
from synth import SR, speechlike

from emostream.features import compute_log_mel_spect
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import EmotionPipeline, PipelineConfig


@pytest.fixture(scope="module")
def model(tiny_onnx):
    return EmotionModel(tiny_onnx)


def run(pipeline, frames, chunk=3000):
    out = []
    for i in range(0, len(frames), chunk):
        out += pipeline.process(frames[i : i + chunk])
    return out


def offline(model, y, message):
    start, end = round(message["start_s"] * SR), round(message["end_s"] * SR)
    return model.predict(compute_log_mel_spect(y[start:end]))[0]


def test_scores_equal_an_offline_run_on_the_same_samples(model):
    y = speechlike(6.0, seed=3)
    messages = run(EmotionPipeline(model, PipelineConfig(silence_dbfs=-120), SR), y[:, None])
    assert len(messages) == (len(y) - 50688) // (11 * 512) + 1
    for m in messages:
        p = np.array([m["probabilities"][k] for k in model.labels])
        np.testing.assert_allclose(p, offline(model, y, m), atol=1e-5)
        assert m["top"] == model.labels[int(np.argmax(p))] and m["top_p"] == pytest.approx(p.max())
        assert abs(sum(m["probabilities"].values()) - 1) < 1e-5
        assert m["features_ms"] > 0 and m["inference_ms"] > 0 and m["silence"] is False
    assert [m["seq"] for m in messages] == list(range(len(messages)))


def test_quiet_windows_are_marked_silence_not_classified(model):
    y = np.concatenate([np.zeros(4 * SR, np.float32), speechlike(3.0, seed=4)])
    messages = run(EmotionPipeline(model, PipelineConfig(silence_dbfs=-50), SR), y)
    assert messages[0]["silence"] is True and messages[0]["probabilities"] is None and messages[0]["top"] is None
    assert messages[-1]["silence"] is False and messages[-1]["top"] in model.labels


def test_smoothing_is_an_exponential_moving_average(model):
    y = speechlike(5.0, seed=5)
    raw = run(EmotionPipeline(model, PipelineConfig(silence_dbfs=-120), SR), y)
    smooth = run(EmotionPipeline(model, PipelineConfig(silence_dbfs=-120, smoothing=0.6), SR), y)
    vec = [np.array(list(m["probabilities"].values())) for m in raw]
    expected = vec[0]
    for i, m in enumerate(smooth):
        if i:
            expected = 0.6 * expected + 0.4 * vec[i]
        np.testing.assert_allclose(list(m["probabilities"].values()), expected, atol=1e-6)


@pytest.mark.parametrize("rate,channels", [(44100, 2), (48000, 1), (8000, 1), (22050, 6)])
def test_other_rates_and_channel_counts_are_mixed_down_and_resampled(model, rate, channels):
    seconds = 5.0
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 300 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    frames = np.repeat(mono[:, None], channels, axis=1)
    pipeline = EmotionPipeline(model, PipelineConfig(silence_dbfs=-120), rate, channels)
    messages = run(pipeline, frames, chunk=rate // 10)
    expected = (int(seconds * SR) - 50688) // (11 * 512) + 1
    assert abs(len(messages) - expected) <= 1  # the streaming resampler holds back a few samples
    assert all(abs(sum(m["probabilities"].values()) - 1) < 1e-5 for m in messages)


def test_nan_and_inf_samples_are_zeroed_and_counted(model):
    y = speechlike(3.0, seed=6)
    y[1000:1010] = np.nan
    y[5000] = np.inf
    pipeline = EmotionPipeline(model, PipelineConfig(silence_dbfs=-120), SR)
    messages = run(pipeline, y)
    assert pipeline.nonfinite_samples == 11
    assert messages and all(np.isfinite(list(m["probabilities"].values())).all() for m in messages)


def test_hop_is_rounded_to_whole_stft_hops(model):
    assert EmotionPipeline(model, PipelineConfig(hop_s=0.25), SR).stream.hop_frames == 11
    assert EmotionPipeline(model, PipelineConfig(hop_s=0.001), SR).stream.hop_frames == 1
    with pytest.raises(ValueError, match="smoothing"):
        EmotionPipeline(model, PipelineConfig(smoothing=1.0), SR)
