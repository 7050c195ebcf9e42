"""``python -m emostream.bench.vadcheck``: how well each voice-activity backend tells speech from noise, and its cost.

Noise and music-like signals (fixed seeds) and real RAVDESS speech clips are laid into a stream as the
daemon hears them and cut into the daemon's windows (2.32 s, 0.255 s hop); for each backend the share of
windows judged speech is counted, and the detector's CPU time per second of audio. Writes ``vad.json``
into ``--out``. The figures in ``docs/reliability.md`` come from this command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from emostream.features import DEFAULT_CONFIG, load_audio
from emostream.inference.logmel_stream import level_dbfs
from emostream.inference.scoring import embed_in_noise_floor
from emostream.inference.vad import VadConfig, VoiceActivity
from emostream.options import add_ranged

logger = logging.getLogger(__name__)

SR = DEFAULT_CONFIG.sample_rate_hz


def at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** ((dbfs - level_dbfs(x)) / 20)).astype(np.float32)


def coloured_noise(seconds: float, exponent: float, dbfs: float, seed: int) -> np.ndarray:
    """Noise with power ∝ 1/f^exponent (0 white, 1 pink, 2 brown) at an RMS of ``dbfs``."""
    n = int(seconds * SR)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    return at_dbfs(np.fft.irfft(spectrum / f ** (exponent / 2), n), dbfs)


def music_like(seconds: float, dbfs: float, seed: int) -> np.ndarray:
    """Chords of harmonic tones changing every 0.5 s with a noise-burst beat: tonal and rhythmic, not speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.5):
        span = (t >= start) & (t < start + 0.5)
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        for ratio in (1, 1.25, 1.5):
            for k in range(1, 6):
                y[span] += np.sin(2 * np.pi * root * ratio * k * t[span]) / k
        beat = span & (t < start + 0.05)
        y[beat] += 3 * rng.standard_normal(beat.sum())
    return at_dbfs(y, dbfs)


def fan_like(seconds: float, dbfs: float, seed: int) -> np.ndarray:
    """Brown noise plus a 100 Hz hum and its harmonics: a fan or a fridge."""
    t = np.arange(int(seconds * SR)) / SR
    hum = sum(np.sin(2 * np.pi * 100 * k * t) / k for k in range(1, 4))
    return at_dbfs(coloured_noise(seconds, 2.0, 0.0, seed) + 0.5 * at_dbfs(hum, 0.0), dbfs)


def noise_signals(seconds: float = 20.0) -> dict[str, np.ndarray]:
    return {
        "pink noise −44 dBFS": coloured_noise(seconds, 1.0, -44, 1),
        "pink noise −30 dBFS": coloured_noise(seconds, 1.0, -30, 2),
        "pink noise −20 dBFS": coloured_noise(seconds, 1.0, -20, 3),
        "white noise −30 dBFS": coloured_noise(seconds, 0.0, -30, 4),
        "fan (brown noise + hum) −30 dBFS": fan_like(seconds, -30, 5),
        "music-like (chords + beat) −25 dBFS": music_like(seconds, -25, 6),
    }


def window_spans(n_samples: int, hop_samples: int = 11 * 512) -> list[tuple[int, int]]:
    w = DEFAULT_CONFIG.window_samples
    return [(s, s + w) for s in range(0, n_samples - w + 1, hop_samples)]


def speech_share(y: np.ndarray, config: VadConfig) -> tuple[float, float]:
    """(share of windows judged speech, detector seconds per audio second)."""
    vad = VoiceActivity(config, SR)
    started = time.process_time()
    for i in range(0, y.size, 512):  # the daemon pushes sound-card-sized blocks
        vad.push(y[i:i + 512])
    cost = (time.process_time() - started) / (y.size / SR)
    spans = window_spans(y.size)
    return sum(vad.is_speech(a, b) for a, b in spans) / max(len(spans), 1), cost


def vad_update_times(signal: np.ndarray, hop_samples: int, n: int, config: VadConfig) -> list[float]:
    """Seconds the gate takes per hop (resampling to 16 kHz and the detector frames the hop completes)."""
    vad = VoiceActivity(config, SR)
    audio = np.resize(np.asarray(signal, np.float32), hop_samples * (n + 1))
    times = []
    for i in range(n):
        started = time.perf_counter()
        vad.push(audio[i * hop_samples:(i + 1) * hop_samples])
        times.append(time.perf_counter() - started)
    return times


def ravdess_clips(data_dir: Path, n: int) -> list[Path]:
    clips = sorted((data_dir / "Audio_Speech_Actors_01-24").glob("Actor_*/*.*"))
    return clips[:: max(1, len(clips) // n)][:n]


def measure(data_dir: Path | None, n_clips: int) -> dict:
    configs = {"silero": VadConfig(), "webrtc": VadConfig(backend="webrtc")}
    results: dict = {"configs": {k: c.describe() | {"webrtc_mode": c.webrtc_mode} for k, c in configs.items()},
                     "noise": {}, "speech": {}, "cost_ms_per_audio_s": {}}
    costs: dict[str, list[float]] = {k: [] for k in configs}
    for name, y in noise_signals().items():
        results["noise"][name] = {}
        for backend, config in configs.items():
            share, cost = speech_share(y, config)
            results["noise"][name][backend] = round(share, 3)
            costs[backend].append(cost)
        logger.info("%s: %s", name, results["noise"][name])
    if data_dir is not None:
        clips = ravdess_clips(data_dir, n_clips)
        shares = {k: [] for k in configs}
        for path in clips:
            y = embed_in_noise_floor(load_audio(path), seed=1)
            for backend, config in configs.items():
                share, cost = speech_share(y, config)
                shares[backend].append(share)
                costs[backend].append(cost)
        results["speech"] = {"clips": len(clips), "stream": "RAVDESS clip in 0.5 s of −60 dBFS floor",
                             **{k: {"window_share_mean": round(float(np.mean(v)), 3),
                                    "clips_with_a_speech_window": round(float(np.mean(np.array(v) > 0)), 3)}
                                for k, v in shares.items()}}
        logger.info("speech: %s", results["speech"])
    results["cost_ms_per_audio_s"] = {k: round(1e3 * float(np.median(v)), 3) for k, v in costs.items()}
    from emostream.bench.measure import percentiles_ms
    from emostream.paths import DEFAULT_SAMPLE

    sample = load_audio(DEFAULT_SAMPLE)  # the same per-hop row emostream-bench prints
    results["per_hop_0.255_s"] = {k: percentiles_ms(vad_update_times(sample, 11 * 512, 1000, c))
                                  for k, c in configs.items()}
    # The emotion model's own inference per window, in the same run and conditions, for scale.
    from emostream.bench.measure import fed, inference_times, model_feed, windows_from
    from emostream.inference.model import EmotionModel
    from emostream.paths import DEFAULT_MODEL_PATH

    model = EmotionModel(DEFAULT_MODEL_PATH)
    results["per_hop_0.255_s"]["crnn inference (for scale)"] = percentiles_ms(inference_times(
        fed(model.predict, model_feed(model)), windows_from(sample, 64, c=model.features.per_window()), 300))
    return results


def main(argv: list[str] | None = None) -> int:
    from emostream.train.data import resolve_data_dir

    p = argparse.ArgumentParser(prog="emostream-vadcheck", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, help="RAVDESS root (default: as emostream-train finds it)")
    add_ranged(p, "--clips", int, 48, 1, 1440, help="RAVDESS speech clips to score")
    p.add_argument("--out", type=Path, default=Path("bench") / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = resolve_data_dir(args.data_dir)
    if not (data_dir / "Audio_Speech_Actors_01-24").is_dir():
        logger.warning("RAVDESS not found at %s: noise figures only", data_dir)
        data_dir = None
    results = measure(data_dir, args.clips)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vad.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
