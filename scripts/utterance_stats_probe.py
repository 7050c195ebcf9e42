"""A probe, not a candidate: utterance statistics relative to the speaker, on the EmoBox folds.

Question: do prosodic and spectral-shape statistics of a whole utterance, each heard relative to its speaker, carry
emotion across corpora that the CRNN mix (which hears 2.3 s standardised log-Mel windows) lacks?

Per clip, 47 statistics from the clip as recorded (not inside a stream): level (frame RMS, dB), pitch (normalised
autocorrelation, 65–500 Hz, semitones), spectral centroid and tilt below 7.1 kHz (each: mean, std, 10th and 90th
percentiles, std of the frame-to-frame change), timing (active share, voiced share, level peaks per active second)
and 12 MFCCs over 64 mel bands below 7.1 kHz (means and stds over active frames). Each statistic is z-normalised
per speaker over the speaker's *other* clips (a stream never has the utterance itself in its baseline). Per EmoBox
fold, a class-balanced logistic regression (C = 0.5) learns from the fold's 20 training actors and scores the 4 test
actors and EmoDB; its probabilities are also blended with the shipped construction's per-clip probabilities
(``--mix``, tail averages). Two sets are scored: without the five level statistics (the one carried on) and with
them. The EmoDB copy is peak-normalised per clip, so its level is not the speaker's (its angry clips measure quieter
than its neutral ones), and a browser's automatic gain control does the same to a live microphone.

``--candidate-21`` computes and judges candidate 21 of the selection log instead (the statistics over the clip as the
stream scoring presents it, a running speaker reference); ``--candidate-22`` does the same for candidate 22 (candidate
21 with frames counted only 15 dB above the stream's floor estimate); ``--diagnose`` writes the views behind their
write-ups (each of candidate 21's two changes alone; how the floor moves each corpus's statistics; how loud each
corpus's clips are); ``--class-view`` writes per-class recall of candidate 21's blend with ``--mix`` (candidate 32's).

Every figure here is a view on the folds the candidates were chosen on, with choices made after looking (which
statistics, the blend weights): nothing is chosen on it.

    python scripts/utterance_stats_probe.py --out models/evaluation/utterance-stats-probe
    python scripts/utterance_stats_probe.py --candidate-21 --out models/evaluation/utterance-stats-candidate21
    python scripts/utterance_stats_probe.py --candidate-22 --out models/evaluation/utterance-stats-candidate22
    python scripts/utterance_stats_probe.py --diagnose --out models/evaluation/utterance-stats-candidate21
    python scripts/utterance_stats_probe.py --class-view --out models/evaluation/utterance-stats-candidate32 \
        --mix models/evaluation/emobox-6folds-90ep-mixed-s2000-ensemble-2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emostream.features import DEFAULT_CONFIG, load_audio
from emostream.inference.scoring import DEFAULT_CONTEXT, clip_seed, embed_in_noise_floor, stream_windows
from emostream.train.baselines import speaker_keys
from emostream.train.evaluate import EMOBOX_FOLDS, full_scores, load_frame
from emostream.train.featurize import default_cache_dir
from emostream.train.prepare import encode_labels

logger = logging.getLogger("utterance_stats_probe")
SAMPLE_RATE_HZ, HOP, N_FFT = DEFAULT_CONFIG.sample_rate_hz, DEFAULT_CONFIG.hop_samples, DEFAULT_CONFIG.n_fft_samples
BAND_LIMIT_HZ = 7100.0  # feature version 3's limit: EmoDB's copy has nothing above 8 kHz
PITCH_RANGE_HZ = (65.0, 500.0)
GROUPS = {"level": range(0, 5), "pitch": range(5, 10), "centroid": range(10, 15), "tilt": range(15, 20),
          "timing": range(20, 23), "mfcc": range(23, 47)}
N_STATISTICS = 47
WITHOUT_LEVEL = [i for i in range(N_STATISTICS) if i not in GROUPS["level"]]  # the 42 statistics carried on
DATA_SEED = 42  # data-preparation seed: the noise floor under each clip, the order of a speaker's clips
FLOOR_MARGIN_DB = 15.0  # candidate 22: active frames stand this far above the stream's floor
PRIOR_CLIPS = 5.0  # candidate 21: how many clips the prior is worth in a running speaker reference


def summary(x: np.ndarray) -> list[float]:
    """Mean, std, 10th and 90th percentiles, and the std of the frame-to-frame change (zeros for < 2 frames)."""
    if x.size < 2:
        return [0.0] * 5
    return [float(np.mean(x)), float(np.std(x)), float(np.percentile(x, 10)), float(np.percentile(x, 90)),
            float(np.std(np.diff(x)))]


def autocorrelation_pitch(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (N_FFT samples, HOP apart): f0 in Hz and the normalised autocorrelation at its lag (0–1, voicing)."""
    padded = np.pad(y, N_FFT // 2)
    n = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(padded, (n, N_FFT), (padded.strides[0] * HOP, padded.strides[0])).copy()
    frames -= frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames * np.hanning(N_FFT), n=2 * N_FFT, axis=1)
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :N_FFT]
    autocorrelation /= autocorrelation[:, :1] + 1e-12
    shortest, longest = int(SAMPLE_RATE_HZ / PITCH_RANGE_HZ[1]), int(SAMPLE_RATE_HZ / PITCH_RANGE_HZ[0])
    lag = shortest + autocorrelation[:, shortest:longest].argmax(axis=1)
    return SAMPLE_RATE_HZ / lag, autocorrelation[np.arange(n), lag]


def clip_statistics(path: str) -> np.ndarray:
    """The bare clip's 47 statistics (the probe)."""
    return signal_statistics(load_audio(path))


def embedded_clip(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The clip inside the scoring's noise floor (``inference.scoring``, the same floor and seed as its scored
    windows): the whole embedded stream, and the stretch its classified windows (those the level gate passes) cover."""
    y = load_audio(path)
    seed = clip_seed(Path(path).name, DATA_SEED)
    stream = embed_in_noise_floor(y, DEFAULT_CONTEXT, seed)
    _, classified = stream_windows(y, DEFAULT_CONTEXT, seed)
    return stream, stream[min(w.start_sample for w in classified):max(w.end_sample for w in classified)]


def stream_statistics(path: str) -> np.ndarray:
    """The 47 statistics as the daemon meets the clip (candidate 21): over the classified stretch of the clip
    embedded in the scoring's floor."""
    return signal_statistics(embedded_clip(path)[1])


def stream_floor_statistics(path: str) -> np.ndarray:
    """Candidate 22: ``stream_statistics`` with frames counted active only ``FLOOR_MARGIN_DB`` above the stream's
    floor, estimated as the 10th percentile of frame levels over the whole embedded stream (the clip with the floor
    before and after it, as a stream's noise tracker hears the pauses)."""
    stream, stretch = embedded_clip(path)
    return signal_statistics(stretch, floor_dbfs=float(np.percentile(frame_levels_dbfs(stream), 10)))


def frame_levels_dbfs(y: np.ndarray) -> np.ndarray:
    """RMS level of each analysis frame (N_FFT samples, HOP apart), dB relative to full scale (80 dB below the
    loudest at the lowest, librosa's ``top_db``)."""
    import librosa

    return librosa.amplitude_to_db(librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP)[0], ref=1.0)


def signal_statistics(y: np.ndarray, floor_dbfs: float | None = None) -> np.ndarray:
    """47 statistics of a signal at 22050 Hz (``GROUPS`` gives their columns). Active frames lie within 35 dB of the
    loudest and, given ``floor_dbfs`` (candidate 22), at least ``FLOOR_MARGIN_DB`` above it (if any frame does)."""
    import librosa
    from scipy.signal import find_peaks

    level_db = frame_levels_dbfs(y)
    f0_hz, clarity = autocorrelation_pitch(y)
    n = min(len(f0_hz), len(level_db))
    f0_hz, clarity, level_db = f0_hz[:n], clarity[:n], level_db[:n]
    active = level_db > level_db.max() - 35.0
    if floor_dbfs is not None and (active & (level_db >= floor_dbfs + FLOOR_MARGIN_DB)).any():
        active &= level_db >= floor_dbfs + FLOOR_MARGIN_DB
    voiced = active & (clarity > 0.5) & (level_db > level_db.max() - 25.0)
    semitones = 12 * np.log2(f0_hz[voiced] / 100.0)
    mel = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE_HZ, n_fft=N_FFT, hop_length=HOP, n_mels=64,
                                         fmax=BAND_LIMIT_HZ)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel + 1e-10), n_mfcc=13)[:, :n][:, active]
    magnitude = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))[:, :n][:, active]
    freqs_hz = librosa.fft_frequencies(sr=SAMPLE_RATE_HZ, n_fft=N_FFT)
    kept = freqs_hz <= BAND_LIMIT_HZ
    centroid_hz = librosa.feature.spectral_centroid(S=magnitude[kept], freq=freqs_hz[kept])[0]
    tilt_db = 10 * np.log10((magnitude[(freqs_hz >= 1000) & kept].sum(axis=0) + 1e-9)
                            / (magnitude[freqs_hz < 1000].sum(axis=0) + 1e-9))
    peaks, _ = find_peaks(np.convolve(level_db, np.ones(5) / 5, mode="same"), prominence=6.0)
    active_s = active.sum() * HOP / SAMPLE_RATE_HZ
    timing = [active.mean(), voiced.sum() / max(active.sum(), 1), len(peaks) / max(active_s, 0.1)]
    return np.array(summary(level_db[active]) + summary(semitones) + summary(centroid_hz) + summary(tilt_db)
                    + timing + list(mfcc[1:].mean(axis=1)) + list(mfcc[1:].std(axis=1)), dtype=np.float64)


def speaker_relative(statistics: np.ndarray, speaker: np.ndarray) -> np.ndarray:
    """Each clip's statistics z-normalised by the mean and std of the same speaker's other clips."""
    out = np.empty_like(statistics)
    for key in np.unique(speaker):
        rows = np.flatnonzero(speaker == key)
        if len(rows) < 2:
            raise ValueError(f"speaker {key}: one clip, no other clips to hear it against")
        total, squares, others = statistics[rows].sum(0), (statistics[rows] ** 2).sum(0), len(rows) - 1
        for i in rows:
            mean = (total - statistics[i]) / others
            std = np.sqrt(np.maximum((squares - statistics[i] ** 2) / others - mean ** 2, 0.0))
            out[i] = (statistics[i] - mean) / (std + 1e-6)
    return out


def running_relative(statistics: np.ndarray, speaker: np.ndarray, prior_mean: np.ndarray, prior_var: np.ndarray,
                     prior_clips: float = PRIOR_CLIPS) -> np.ndarray:
    """Each clip z-normalised by its speaker's clips *before it* in a fixed random order per speaker (a stream's
    history), each moment shrunk towards a prior worth ``prior_clips`` clips: the mean of those clips pooled with the
    prior mean, their variance about their own mean pooled with the prior variance (so a speaker far from the prior
    is not heard as more variable than they are). The first clip is heard against the prior alone."""
    out = np.empty_like(statistics)
    for key in np.unique(speaker):
        rows = np.flatnonzero(speaker == key)
        rows = rows[np.random.default_rng([DATA_SEED, zlib.crc32(str(key).encode())]).permutation(len(rows))]
        own_mean, own_m2 = np.zeros_like(prior_mean), np.zeros_like(prior_var)  # Welford over the clips so far
        for n, i in enumerate(rows):
            mean = (prior_clips * prior_mean + n * own_mean) / (n + prior_clips)
            var = (prior_clips * prior_var + own_m2) / (n + prior_clips)
            out[i] = (statistics[i] - mean) / (np.sqrt(var) + 1e-6)
            delta = statistics[i] - own_mean
            own_mean = own_mean + delta / (n + 1)
            own_m2 = own_m2 + delta * (statistics[i] - own_mean)
    return out


def speaker_prior(statistics: np.ndarray, speaker: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a running reference starts: the mean over ``rows``' speakers (the fold's training speakers only) of each
    speaker's mean, and of each speaker's population variance (the spread of one voice, not of voices)."""
    keys = np.unique(speaker[rows])
    means = np.stack([statistics[rows][speaker[rows] == k].mean(0) for k in keys])
    variances = np.stack([statistics[rows][speaker[rows] == k].var(0) for k in keys])
    return means.mean(0), variances.mean(0)


def fold_probabilities(x: np.ndarray, y: np.ndarray, train: np.ndarray, rows: dict[str, np.ndarray],
                       n_classes: int) -> dict[str, np.ndarray]:
    """A class-balanced logistic regression fitted on ``train``; its class probabilities for each part's rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x[train])
    model = LogisticRegression(C=0.5, class_weight="balanced", max_iter=4000).fit(scaler.transform(x[train]),
                                                                                 y[train])
    out = {}
    for part, r in rows.items():
        p = np.zeros((len(r), n_classes))
        p[:, model.classes_] = model.predict_proba(scaler.transform(x[r]))
        out[part] = p
    return out


def running_inputs(statistics: np.ndarray, speaker: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Candidate 21's inputs: the 42 statistics without level, each clip against its speaker's clips before it, the
    prior from the fold's training rows (a function of them, as ``evaluate`` takes it)."""
    kept = statistics[:, WITHOUT_LEVEL]

    def running(train: np.ndarray) -> np.ndarray:
        return running_relative(kept, speaker, *speaker_prior(kept, speaker, train))

    return running


def fold_blends(inputs: np.ndarray | Callable[[np.ndarray], np.ndarray], y: np.ndarray, classes: list[str],
                actor: np.ndarray, is_ravdess: np.ndarray, mix_folds: list[dict],
                weights: list[float]) -> Iterator[dict[float, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Per EmoBox fold: {weight: {part: (true labels, blended probabilities)}} for the unseen actors ("test") and
    EmoDB ("cross"), the statistics model fitted on the fold's training actors and blended with the mix's tail
    averages at each weight. ``inputs`` as ``evaluate``'s. Raises ``ValueError`` when the mix's rows or labels are
    not this frame's."""
    for k, test_actors in enumerate(EMOBOX_FOLDS):
        clips = mix_folds[k]["clip_probabilities"]
        rows = {part: np.asarray(clips["rows"][part]) for part in ("test", "cross")}
        if set(rows["test"]) != set(np.flatnonzero(is_ravdess & np.isin(actor, test_actors))):
            raise ValueError(f"fold {k + 1}: the mix's test rows are not this frame's test actors")
        train = np.flatnonzero(is_ravdess & ~np.isin(actor, test_actors))
        fold_inputs = inputs(train) if callable(inputs) else inputs
        probe = fold_probabilities(fold_inputs, y, train, rows, len(classes))
        truths = {}
        for part in ("test", "cross"):
            truths[part] = y[rows[part]]
            if not np.array_equal(truths[part], np.asarray(clips["y_true"][part])):
                raise ValueError(f"fold {k + 1} {part}: labels differ from the mix's (another clip order)")
        yield {w: {part: (truth, (1 - w) * np.asarray(clips["tail_average"][part]) + w * probe[part])
                   for part, truth in truths.items()} for w in weights}


def evaluate(inputs: np.ndarray | Callable[[np.ndarray], np.ndarray], y: np.ndarray, classes: list[str],
             actor: np.ndarray, is_ravdess: np.ndarray, mix_folds: list[dict], weights: list[float]) -> dict:
    """Per EmoBox fold and blend weight (0 = the mix alone, 1 = the statistics model alone): unseen-actor UAR, EmoDB
    UAR and 4-class UAR, scored as the project scores (argmax over all eight outputs). ``inputs``: the model's inputs
    (one row per frame row), or a function of the fold's training rows giving them (a running reference's prior is
    the fold's own). Raises ``ValueError`` when the mix's rows or labels are not this frame's."""
    per_weight = {w: [] for w in weights}
    for blended in fold_blends(inputs, y, classes, actor, is_ravdess, mix_folds, weights):
        for w in weights:
            fold = {}
            for part, (truth, p) in blended[w].items():
                s = full_scores(truth, p, classes)
                fold[part] = {"uar": s["uar"], "accuracy": s["accuracy"], "max_share": s["max_share"],
                              "four_class_uar": s.get("four_class", {}).get("uar")}
            fold["figure"] = (fold["test"]["uar"] + fold["cross"]["uar"]) / 2
            per_weight[w].append(fold)
    return {str(w): {"unseen_uar": float(np.mean([f["test"]["uar"] for f in folds])),
                     "emodb_uar": float(np.mean([f["cross"]["uar"] for f in folds])),
                     "emodb_four_class_uar": float(np.mean([f["cross"]["four_class_uar"] for f in folds])),
                     "figure": float(np.mean([f["figure"] for f in folds])),
                     "figure_per_fold": [round(f["figure"], 4) for f in folds], "folds": folds}
            for w, folds in per_weight.items()}


def candidate_21_verdict(by_weight: dict, four_class: bool = False) -> dict:
    """The rule of 2026-12-05 12:26 (models/evaluation/selection-rule.md) applied to weight 1/3 against weight 0;
    ``four_class``: candidate 22's rule (12:57), which adds (iv), EmoDB 4-class UAR not below the construction's."""
    blend, alone = by_weight[str(1 / 3)], by_weight[str(0.0)]
    ahead = sum(b["figure"] > a["figure"] for b, a in zip(blend["folds"], alone["folds"], strict=True))
    checks = {"(i) figure >= shipped + 0.02": blend["figure"] >= alone["figure"] + 0.02,
              "(ii) neither half below": blend["unseen_uar"] >= alone["unseen_uar"]
              and blend["emodb_uar"] >= alone["emodb_uar"],
              "(iii) ahead on >= 5 of 6 folds": ahead >= 5}
    if four_class:
        checks["(iv) EmoDB 4-class not below"] = blend["emodb_four_class_uar"] >= alone["emodb_four_class_uar"]
    return {"figure": blend["figure"], "shipped": alone["figure"], "folds_ahead": ahead, **checks,
            "wins": all(checks.values())}


def plot(results: dict, path: Path) -> None:
    """The selection figure against the blend weight, one line per statistics set: easier to see than to read."""
    from emostream.train.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, by_weight in results.items():
        weights = sorted(by_weight, key=float)
        ax.plot([float(w) for w in weights], [by_weight[w]["figure"] for w in weights], marker="o", label=name)
    ax.set_xlabel("weight of the probe's probabilities (0 = the shipped construction alone, 1 = the probe alone)")
    ax.set_ylabel("selection figure (mean of two UARs)")
    ax.set_title("Utterance statistics relative to the speaker, blended with the shipped construction\n"
                 "(EmoBox, six folds; a view on the folds candidates were chosen on)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cached_statistics(measure: Callable[[str], np.ndarray], version: str, paths: list[str], workers: int) -> np.ndarray:
    """``measure`` of every path, in order, cached under the feature cache (derived from the clips: never committed)
    by a key over the statistics version and the paths, so another frame or order never reuses stale rows."""
    key = hashlib.sha256(json.dumps({"statistics": version, "n": N_STATISTICS, "paths": paths}).encode())
    cache = default_cache_dir() / f"utterance-statistics-{version}-{key.hexdigest()[:16]}.npy"
    if cache.is_file():
        return np.load(cache)
    with ProcessPoolExecutor(workers) as pool:
        statistics = np.stack(list(tqdm(pool.map(measure, paths, chunksize=16), total=len(paths),
                                        desc=f"utterance statistics ({version})")))
    np.save(cache, statistics)
    return statistics


def diagnose(frame, statistics: dict[str, np.ndarray], y: np.ndarray, classes: list[str], speaker: np.ndarray,
             mix_folds: list[dict]) -> dict:
    """Views behind candidate 21's write-up: each of its two changes alone (bare clip or stream stretch × the
    speaker's other clips or a running reference; weights 1/3 and 1), how far the floor moves each corpus's statistics
    (Pearson r, bare clip vs stream stretch, per statistic), and how loud each corpus's clips are (the 90th percentile
    of active-frame level, dBFS)."""
    actor, is_ravdess = frame["actor"].to_numpy(), (frame["corpus"] == "ravdess").to_numpy()
    out = {"changes": {}, "floor_correlation": {}, "loud_frames_dbfs": {}}
    for version, values in statistics.items():
        for reference in ("others", "running"):
            inputs = (speaker_relative(values[:, WITHOUT_LEVEL], speaker) if reference == "others" else
                      running_inputs(values, speaker))
            by_weight = evaluate(inputs, y, classes, actor, is_ravdess, mix_folds, [1 / 3, 1.0])
            out["changes"][f"{version}, {reference}"] = {
                w: {k: by_weight[w][k] for k in ("figure", "unseen_uar", "emodb_uar", "emodb_four_class_uar")}
                for w in by_weight}
    bare, stream = statistics["v1"], statistics["stream-v1"]
    loud = list(GROUPS["level"])[3]  # the 90th percentile of active-frame level
    for corpus in ("ravdess", "emodb"):
        rows = (frame["corpus"] == corpus).to_numpy()
        r = [float(np.corrcoef(bare[rows, i], stream[rows, i])[0, 1]) for i in range(N_STATISTICS)]
        out["floor_correlation"][corpus] = {g: {"median": float(np.nanmedian([r[i] for i in cols])),
                                                "min": float(np.nanmin([r[i] for i in cols]))}
                                            for g, cols in GROUPS.items()}
        out["loud_frames_dbfs"][corpus] = {
            "median": float(np.median(bare[rows, loud])),
            "by_emotion_median": {e: float(np.median(bare[rows & (frame["emotion"] == e).to_numpy(), loud]))
                                  for e in sorted(set(frame["emotion"][rows]))},
            "share_within_15_db_of_floor_by_emotion": {
                e: float((bare[rows & (frame["emotion"] == e).to_numpy(), loud] < -45.0).mean())
                for e in sorted(set(frame["emotion"][rows]))}}
    return out


def class_view(statistics: np.ndarray, y: np.ndarray, classes: list[str], actor: np.ndarray, is_ravdess: np.ndarray,
               speaker: np.ndarray, mix_folds: list[dict]) -> dict:
    """Candidate 21's model (stream statistics, running reference) blended with ``mix_folds`` at weights 0, 1/3 and
    1: per-class recall (argmax over all classes; and the 4-class view's) and the share of each predicted class,
    for the unseen actors and EmoDB, pooled over the six folds' clips — where the blend gains and what it costs."""
    from emostream.train.emodb import FOUR_CLASSES

    weights = [0.0, 1 / 3, 1.0]
    pooled: dict = {w: {"test": ([], []), "cross": ([], [])} for w in weights}
    inputs = running_inputs(statistics, speaker)
    for blended in fold_blends(inputs, y, classes, actor, is_ravdess, mix_folds, weights):
        for w, parts in pooled.items():
            for part, (truths, probabilities) in parts.items():
                truths.append(blended[w][part][0])
                probabilities.append(blended[w][part][1])
    four = [classes.index(c) for c in FOUR_CLASSES]
    out = {}
    for w, parts in pooled.items():
        out[f"{w:.3f}"] = {}
        for part, (truths, probabilities) in parts.items():
            t, p = np.concatenate(truths), np.concatenate(probabilities)
            predicted, in_four = p.argmax(axis=1), np.isin(t, four)
            predicted_four = np.array(four)[p[in_four][:, four].argmax(axis=1)]
            out[f"{w:.3f}"]["unseen actors" if part == "test" else "emodb"] = {
                "recall": {classes[c]: float(np.mean(predicted[t == c] == c)) for c in np.unique(t)},
                "four_class_recall": {classes[c]: float(np.mean(predicted_four[t[in_four] == c] == c)) for c in four},
                "predicted_share": {c: float(np.mean(predicted == i)) for i, c in enumerate(classes)}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/ravdess", help="RAVDESS root")
    parser.add_argument("--emodb-dir", default="../shared/data/emodb", help="EmoDB root")
    parser.add_argument("--mix", default="models/evaluation/emobox-6folds-90ep-mixed-ensemble-4",
                        help="an emostream-evaluate/ensemble folder over all six EmoBox folds, with per-clip "
                             "probabilities (default: the shipped construction)")
    parser.add_argument("--out", type=Path, required=True, help="folder for probe.json and probe.png")
    parser.add_argument("--workers", type=int, default=2, help="processes computing the statistics (1–16)")
    parser.add_argument("--candidate-21", action="store_true",
                        help="candidate 21 of the selection log instead of the probe: statistics over the clip as "
                             "the stream scoring presents it, a running speaker reference, weight 1/3, judged")
    parser.add_argument("--candidate-22", action="store_true",
                        help="candidate 22: candidate 21 with frames counted active only 15 dB above the stream's "
                             "floor, judged by its own rule")
    parser.add_argument("--diagnose", action="store_true",
                        help="the views behind candidate 21's write-up (diagnostics.json in --out)")
    parser.add_argument("--class-view", action="store_true",
                        help="per-class recall of candidate 21's blend with --mix (class_view.json in --out)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 1 <= args.workers <= 16:
        parser.error(f"--workers {args.workers}: expected 1–16")
    args.out.mkdir(parents=True, exist_ok=True)
    frame = load_frame("emobox", args.data_dir, args.emodb_dir, seed=DATA_SEED)
    if (frame["corpus"] == "emodb").sum() == 0:
        logger.error("no EmoDB clips under %s: the probe needs both corpora", args.emodb_dir)
        return 1
    y, classes = encode_labels(frame["emotion"])
    speaker = speaker_keys(frame["corpus"], frame["actor"])
    mix_folds = json.loads((Path(args.mix) / "folds.json").read_text())
    if args.class_view:
        statistics = cached_statistics(stream_statistics, "stream-v1", list(frame["path"]), args.workers)
        view = class_view(statistics, y, classes, frame["actor"].to_numpy(), (frame["corpus"] == "ravdess").to_numpy(),
                          speaker, mix_folds)
        (args.out / "class_view.json").write_text(json.dumps({"mix": str(args.mix), "weights": view}, indent=1))
        return 0
    if args.diagnose:
        statistics = {v: cached_statistics(m, v, list(frame["path"]), args.workers)
                      for m, v in ((clip_statistics, "v1"), (stream_statistics, "stream-v1"))}
        views = diagnose(frame, statistics, y, classes, speaker, mix_folds)
        (args.out / "diagnostics.json").write_text(json.dumps(views, indent=1))
        for name, by_weight in views["changes"].items():
            logger.info("%s: %s", name, {w: round(v["figure"], 4) for w, v in by_weight.items()})
        return 0
    if args.candidate_21 and args.candidate_22:
        parser.error("--candidate-21 and --candidate-22: one candidate per run")
    judged = args.candidate_21 or args.candidate_22
    name = "candidate21" if args.candidate_21 else "candidate22" if args.candidate_22 else "probe"
    measure, version = {"candidate21": (stream_statistics, "stream-v1"),
                        "candidate22": (stream_floor_statistics, "stream-floor-v1"),
                        "probe": (clip_statistics, "v1")}[name]
    statistics = cached_statistics(measure, version, list(frame["path"]), args.workers)
    actor, is_ravdess = frame["actor"].to_numpy(), (frame["corpus"] == "ravdess").to_numpy()
    if judged:
        running = running_inputs(statistics, speaker)
        label = ("candidate 21 (stream, running reference)" if args.candidate_21 else
                 "candidate 22 (stream, frames above the floor, running reference)")
        results = {label: evaluate(running, y, classes, actor, is_ravdess, mix_folds, [0.0, 1 / 3, 1.0])}
    else:
        relative = speaker_relative(statistics, speaker)
        weights = [0.0, 0.2, 1 / 3, 0.5, 1.0]
        results = {"without level (42 statistics)": evaluate(relative[:, WITHOUT_LEVEL], y, classes, actor,
                                                             is_ravdess, mix_folds, weights),
                   "with level (47 statistics)": evaluate(relative, y, classes, actor, is_ravdess, mix_folds,
                                                          weights)}
    for label, by_weight in results.items():
        for w, r in by_weight.items():
            logger.info("%s, weight %.2f: unseen UAR %.3f, EmoDB UAR %.3f (4-class %.3f), figure %.4f %s", label,
                        float(w), r["unseen_uar"], r["emodb_uar"], r["emodb_four_class_uar"], r["figure"],
                        r["figure_per_fold"])
    record = {"classes": classes, "mix": str(args.mix), "groups": {g: list(c) for g, c in GROUPS.items()},
              "results": results}
    if judged:
        record["verdict"] = candidate_21_verdict(next(iter(results.values())), four_class=args.candidate_22)
        logger.info("%s: %s", name, record["verdict"])
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=1))
    plot(results, args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
