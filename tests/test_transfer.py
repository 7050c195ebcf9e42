"""#14: protocols without speaker or corpus leaks, clips scored inside a stream (never dB-padded), the
transfer augmentations, and a tiny cross-corpus run that writes every output."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from synth import SR, speechlike

from emostream.features import compute_log_mel_spect
from emostream.inference.scoring import clip_windows, embed_in_noise_floor, stream_windows
from emostream.train import evaluate as ev


def _frame(n_ravdess_actors=24, emodb_speakers=(3, 8, 9, 10, 11, 12, 13, 14, 15, 16)):
    corpus = ["ravdess"] * (n_ravdess_actors * 5) + ["emodb"] * (len(emodb_speakers) * 5)
    actors = [a for a in range(1, n_ravdess_actors + 1) for _ in range(5)]
    actors += [s for s in emodb_speakers for _ in range(5)]
    return np.array(corpus), np.array(actors)


def _speakers(corpus, actors, rows):
    return {f"{corpus[r]}-{actors[r]}" for r in rows}


def test_emobox_folds_test_each_actor_once_and_never_train_on_test_validation_or_emodb():
    corpus, actors = _frame()
    folds = ev.emobox_folds(np.where(corpus == "ravdess", actors, -1))
    tested = [a for f in folds for a in set(actors[f["test"]])]
    assert sorted(tested) == list(range(1, 25))
    assert [sorted(set(actors[f["test"]])) for f in folds] == [sorted(a) for a in ev.EMOBOX_FOLDS]
    for f in folds:
        parts = [_speakers(corpus, actors, f[k]) for k in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert set(corpus[f["train"]]) == {"ravdess"} and len(f["train"]) == 16 * 5
    ev.check_no_leaks(folds, corpus, actors, np.flatnonzero(corpus == "emodb"))


def test_song_trains_but_never_validates_or_tests():
    """``train_song``: the training actors' sung clips join training; validation and test stay speech."""
    corpus, actors = _frame()
    channel = np.where((corpus == "ravdess") & (np.arange(len(corpus)) % 5 >= 3), "song", "speech")
    folds = ev.speech_outside_training(ev.emobox_folds(np.where(corpus == "ravdess", actors, -1)), channel)
    (ship,) = ev.speech_outside_training(ev.ship_fold(corpus, actors), channel)
    for f in [*folds, ship]:
        assert set(channel[f["val"]]) == {"speech"} and set(channel[f["test"]]) <= {"speech"}
        assert "song" in set(channel[f["train"]])
    assert set(corpus[ship["val"]]) == {"ravdess", "emodb"}
    for f in folds:
        assert len(f["test"]) == 4 * 3 and len(f["train"]) == 16 * 5  # speech only scored; song of 16 actors trains
    ev.check_no_leaks(folds, corpus, actors, np.flatnonzero(corpus == "emodb"))
    with pytest.raises(ValueError, match="train_song: only for the emobox and ship"):
        ev.prepare("actors", ev.PRESETS["wideband-90ep-song"], data_dir="/nonexistent")


def test_corpus_and_ship_protocols_keep_speakers_apart():
    corpus, actors = _frame()
    (fold,) = ev.corpus_fold(corpus, actors)
    assert set(corpus[fold["train"]]) == {"ravdess"} and set(corpus[fold["test"]]) == {"emodb"}
    assert set(actors[fold["val"]]) == set(ev.CORPUS_VAL_ACTORS)
    (ship,) = ev.ship_fold(corpus, actors)
    assert len(ship["test"]) == 0 and set(corpus[ship["train"]]) == {"ravdess", "emodb"}
    assert not _speakers(corpus, actors, ship["train"]) & _speakers(corpus, actors, ship["val"])
    ev.check_no_leaks([fold, ship], corpus, actors, None)


def test_every_protocol_is_known_again_by_the_names_of_its_folds():
    """A saved model keeps its fold's name, not its protocol; unpacking a shipped ensemble reads it back."""
    corpus, actors = _frame()
    ravdess = np.where(corpus == "ravdess", actors, -1)
    built = {"actors": ev.actor_folds(actors[corpus == "ravdess"]), "emobox": ev.emobox_folds(ravdess),
             "corpus": ev.corpus_fold(corpus, actors), "ship": ev.ship_fold(corpus, actors),
             "random": ev.random_split(np.arange(len(corpus)) % 8, seed=3)}
    assert set(built) == set(ev.PROTOCOLS)
    for protocol, folds in built.items():
        for fold in folds:
            assert ev.protocol_of_fold(fold["name"]) == protocol
            assert ev.protocol_of_fold(f"{fold['name']} tail average") == protocol
    with pytest.raises(ValueError, match="not a fold name"):
        ev.protocol_of_fold("fold 1")


def test_leak_check_fails_on_a_shared_speaker_or_a_trained_cross_corpus():
    corpus, actors = _frame()
    (fold,) = ev.corpus_fold(corpus, actors)
    leaky = {**fold, "val": np.concatenate([fold["val"], fold["train"][:1]])}
    with pytest.raises(AssertionError, match="in both train and val"):
        ev.check_no_leaks([leaky], corpus, actors, None)
    with pytest.raises(AssertionError, match="cross-corpus"):
        ev.check_no_leaks(ev.ship_fold(corpus, actors), corpus, actors, np.flatnonzero(corpus == "emodb"))


def _padded_at_the_top(window: np.ndarray) -> bool:
    """The old dB-domain pad: whole columns at the window's loudest value (0 dB before standardising)."""
    return bool(np.any(np.all(np.isclose(window, window.max()), axis=0)))


def test_short_clips_are_embedded_in_a_noise_floor_never_padded_in_db():
    short = speechlike(1.2, seed=3)
    assert _padded_at_the_top(compute_log_mel_spect(short))  # what the old scoring fed the model
    windows = clip_windows(short)
    assert len(windows) >= 1 and not any(_padded_at_the_top(w) for w in windows)
    stream = embed_in_noise_floor(short)
    assert stream.size >= 99 * 512 and np.all(np.isfinite(stream))
    floor = stream[: int(0.4 * SR)]
    assert -63 < 20 * np.log10(np.sqrt(np.mean(floor**2))) < -57  # −60 dBFS floor before the clip


def test_the_level_gate_keeps_windows_of_speech_and_drops_floor_only_windows():
    y = np.concatenate([speechlike(3.0, seed=5), np.zeros(4 * SR, np.float32), speechlike(3.0, seed=6)])
    everything, voiced = stream_windows(y)
    assert 0 < len(voiced) < len(everything)  # windows wholly inside the 4 s pause hold only the −60 dBFS floor
    assert all(w.level_dbfs >= -50 for w in voiced)
    assert all(w.level_dbfs < -50 for w in everything if w not in voiced)


def test_clip_bank_windows_of_a_short_clip_are_streamed_and_its_training_frames_cover_a_window(write_clip, tmp_path):
    from emostream.train.clipbank import clip_bank

    path = write_clip("short.wav", speechlike(1.0, seed=8))
    bank = clip_bank(tmp_path, ["short.wav"], "orig", 0, tmp_path / "cache", workers=1)
    assert bank.db[0].shape[1] >= 100  # crops never need a dB pad
    assert not any(_padded_at_the_top(w.astype(np.float32)) for w in bank.windows[0])
    assert path.is_file()


def test_the_training_floor_sits_its_drawn_distance_below_the_loud_frames_at_any_recording_level():
    from emostream.train.augment import floor_under, loud_level_dbfs

    speech = speechlike(2.0, seed=3)
    take = np.concatenate([speech, np.zeros(SR, dtype=np.float32)])  # a second of digital silence after
    for gain_db in (0.0, -30.0):
        quiet = take * 10 ** (gain_db / 20)
        loud = loud_level_dbfs(quiet)
        assert loud == pytest.approx(loud_level_dbfs(take) + gain_db, abs=1e-6)
        heard = floor_under(quiet, np.random.default_rng(1), (20, 20))
        pause = heard[-SR // 2:]
        assert 20 * np.log10(np.sqrt(np.mean(pause**2))) == pytest.approx(loud - 20, abs=0.3)
    drawn = [loud_level_dbfs(take) - 20 * np.log10(np.sqrt(np.mean(floor_under(take, np.random.default_rng(s),
                                                                               (15, 50))[-SR // 2:] ** 2)))
             for s in range(40)]
    assert 15 - 0.3 <= min(drawn) < 25 and 40 < max(drawn) <= 50 + 0.3  # spread over the range, never outside


def test_a_take_s_loud_level_is_its_speech_not_its_bursts_or_pauses():
    from emostream.train.augment import loud_level_dbfs

    t = np.arange(3 * SR) / SR
    speech = 0.05 * np.sin(2 * np.pi * 220 * t)  # RMS 0.05 / √2: −29.0 dBFS
    take = np.concatenate([speech, np.zeros(SR)])  # a quarter of the take in digital silence
    take[SR : SR + SR // 20] *= 10  # 50 ms of burst, 20 dB louder
    assert loud_level_dbfs(take) == pytest.approx(20 * np.log10(0.05 / np.sqrt(2)), abs=0.1)


def test_clip_bank_training_frames_hear_the_relative_floor_and_its_test_windows_do_not(write_clip, tmp_path):
    from emostream.train.clipbank import clip_bank

    take = np.concatenate([np.zeros(SR // 2, dtype=np.float32), speechlike(3.0, seed=5),
                           np.zeros(SR // 2, dtype=np.float32)]) * 0.5
    write_clip("loud/a.wav", take)
    write_clip("quiet/a.wav", take * 10 ** (-30 / 20))  # the same take 30 dB quieter, the same name (same draws)
    cache = tmp_path / "cache"
    plain = clip_bank(tmp_path, ["loud/a.wav"], "orig", 0, cache, workers=1)
    floored = {k: clip_bank(tmp_path, [f"{k}/a.wav"], "orig", 0, cache, workers=1, floor_snr_db=(20, 40))
               for k in ("loud", "quiet")}
    relative = {k: b.db[0].astype(np.float32) - b.db[0].astype(np.float32).max() for k, b in floored.items()}
    # Level no longer tells takes apart: the quiet take's frames are the loud take's, shifted.
    assert np.median(np.abs(relative["loud"] - relative["quiet"])) < 0.5
    pause = slice(0, 15)  # the first half second's frames: the floor, not the 80 dB clamp of digital silence
    plain_pause = plain.db[0][:, pause].astype(np.float32).mean() - plain.db[0].astype(np.float32).max()
    assert relative["loud"][:, pause].mean() > plain_pause + 20
    np.testing.assert_array_equal(floored["loud"].windows[0], plain.windows[0])  # scoring is untouched
    assert len(list(cache.glob("clipbank-orig-*.npz"))) == 3  # the floor is part of the cache key


def test_mel_axis_warp_moves_formants_and_keeps_identity():
    db = np.full((128, 10), -80.0, np.float32)
    db[40] = 0.0
    assert np.allclose(ev.warp_mel_axis(db, 1.0), db)
    assert np.argmax(ev.warp_mel_axis(db, 1.1)[:, 0]) > 40 > np.argmax(ev.warp_mel_axis(db, 0.9)[:, 0])


def test_the_pitch_copy_moves_f0_by_its_semitones_and_keeps_the_formants_where_a_plain_shift_moves_them():
    import librosa

    from emostream.train.augment import SR, shift_pitch_keep_formants, spectral_envelope

    t = np.arange(int(1.5 * SR)) / SR
    f0, formant_hz = 120.0, 1000.0
    harmonics = np.arange(1, int(5000 / f0))
    amplitudes = 0.05 + np.exp(-0.5 * ((harmonics * f0 - formant_hz) / 150.0) ** 2)  # one formant at 1 kHz
    voice = (amplitudes[:, None] * np.sin(2 * np.pi * f0 * harmonics[:, None] * t)).sum(0)
    voice = (0.5 * voice / np.abs(voice).max()).astype(np.float32)

    def pitch_hz(y):  # the autocorrelation's strongest lag between 2 and 12.5 ms
        seg = y[SR // 4 : SR // 4 + 4096]
        ac = np.correlate(seg, seg, "full")[seg.size - 1 :]
        return SR / (SR // 500 + int(np.argmax(ac[SR // 500 : SR // 80])))

    def formant_peak_hz(y):
        mean = np.abs(librosa.stft(y, n_fft=1024, hop_length=256)).mean(axis=1, keepdims=True)
        return np.fft.rfftfreq(1024, 1 / SR)[int(np.argmax(spectral_envelope(mean, 33)[:, 0]))]

    up = shift_pitch_keep_formants(voice, np.random.default_rng(0), semitones=(4.0, 4.0))
    assert up.dtype == np.float32 and up.shape == voice.shape and np.all(np.isfinite(up))
    assert pitch_hz(up) == pytest.approx(f0 * 2 ** (4 / 12), rel=0.03)
    plain = librosa.effects.pitch_shift(voice, sr=SR, n_steps=4.0, n_fft=1024, hop_length=256)
    assert formant_peak_hz(voice) == pytest.approx(formant_hz, rel=0.08)
    assert formant_peak_hz(up) == pytest.approx(formant_hz, rel=0.08)  # the vocal tract stays
    assert formant_peak_hz(plain) > 1.15 * formant_hz  # a plain shift moves it with the pitch (×1.26)


def test_the_spectral_envelope_is_smooth_across_harmonics_where_the_raw_spectrum_is_not():
    from emostream.train.augment import SR, spectral_envelope

    t = np.arange(4096) / SR
    comb = sum(np.sin(2 * np.pi * 120.0 * k * t) for k in range(1, 80))  # a flat 120 Hz harmonic comb
    magnitude = np.abs(np.fft.rfft(comb[:1024] * np.hanning(1024)))[:, None]
    band = (np.fft.rfftfreq(1024, 1 / SR) > 500) & (np.fft.rfftfreq(1024, 1 / SR) < 4000)

    def ripple_db(m):
        db = 20 * np.log10(m[band, 0])
        return db.max() - db.min()

    assert ripple_db(magnitude) > 30  # harmonics and the gaps between them (≈ 43 dB)
    assert ripple_db(spectral_envelope(magnitude, 33)) < 8  # 1.5 ms lifter: the harmonics are gone (≈ 4.5 dB)
    assert ripple_db(spectral_envelope(magnitude, 400)) > 30  # a lifter past the 8.3 ms period keeps them


def test_a_changed_copy_is_computed_afresh_and_the_other_copies_keep_their_cache(monkeypatch):
    from emostream.train import augment, clipbank

    before = {v: clipbank.bank_file_name(["a.wav"], v, 42) for v in ("orig", *ev.VARIANTS, ev.PITCH_VARIANT)}
    monkeypatch.setitem(augment.AUGMENTATION_VERSIONS, ev.PITCH_VARIANT, augment.AUGMENTATION_VERSIONS["pitch"] + 1)
    after = {v: clipbank.bank_file_name(["a.wav"], v, 42) for v in before}
    assert after["pitch"] != before["pitch"] and {v: after[v] for v in after if v != "pitch"} == {
        v: before[v] for v in before if v != "pitch"}


def test_a_recipe_with_the_pitch_copy_draws_training_windows_from_it_and_one_without_never_does():
    from emostream.train.clipbank import ClipBank

    copies = {v: ClipBank(["a.wav"], [np.full((128, 120), -40.0 - i, np.float16)], None)
              for i, v in enumerate(("orig", *ev.VARIANTS, ev.PITCH_VARIANT))}
    pitch = ev.PRESETS["wideband-90ep-freq-pool-pitch"]
    assert pitch.pitch_copy and pitch.augment_variants == (*ev.VARIANTS, "pitch") and pitch.freq_pool == 3
    assert ev.PRESETS["wideband-90ep-freq-pool"].augment_variants == ev.VARIANTS
    for preset, expected in ((pitch, {"orig", *ev.VARIANTS, "pitch"}),
                             (ev.PRESETS["wideband-90ep-freq-pool"], {"orig", *ev.VARIANTS})):
        windows = ev.TrainingWindows(preset, copies, seed=1)
        assert {windows.crop(0)[0] for _ in range(400)} == expected
    with pytest.raises(ValueError, match="pitch_copy"):
        dataclasses.replace(pitch, augment_share=0.0)
    assert "pitch_copy" in ev.MEMBER_SETTINGS  # it shapes training only: members of a mix may differ in it


def test_time_stretch_changes_tempo_and_keeps_the_spectrum():
    ramp = np.tile(np.arange(120, dtype=np.float32), (128, 1))  # each frame holds its own index
    assert np.allclose(ev.resample_time_axis(ramp[:, :100], 100), ramp[:, :100])
    fast = ev.resample_time_axis(ramp, 100)  # 120 frames of speech in 100: 1.2 times as fast
    assert np.allclose(np.diff(fast[0]), 119 / 99)
    bands = np.zeros((128, 120), np.float32)
    bands[40] = 1.0  # a formant stays in its band whatever the tempo
    assert np.array_equal(np.flatnonzero(ev.resample_time_axis(bands, 100).any(axis=1)), [40])


def test_stretched_training_windows_draw_slower_and_faster_tempi_and_off_reproduces_earlier_draws():
    from emostream.train.clipbank import ClipBank

    t = np.arange(400)
    db = np.tile(-40 + 10 * np.sin(2 * np.pi * (t + 0.25) / 10), (128, 1))  # a 10-frame rhythm in every band
    banks = {"orig": ClipBank(["a.wav"], [db.astype(np.float16)], None)}
    plain = dataclasses.replace(ev.PRESETS["wideband-90ep"], augment_share=0.0, spec_augment=False)
    stretch = dataclasses.replace(plain, time_stretch=0.2)
    assert ev.PRESETS["wideband-90ep-stretch"].time_stretch == 0.2

    def beats(window):  # crossings of band 0's mean, two per period: 20 at the clip's own tempo
        row = window[0] - window[0].mean()
        return int(np.sum(np.signbit(row[1:]) != np.signbit(row[:-1])))

    plain_windows, stretched = ev.TrainingWindows(plain, banks, seed=3), ev.TrainingWindows(stretch, banks, seed=3)
    counts = []
    for _ in range(200):
        w, x = plain_windows.window(0), stretched.window(0)
        assert x.shape == w.shape == (128, 100) and np.all(np.isfinite(x))
        assert 19 <= beats(w) <= 21
        counts.append(beats(x))
    assert min(counts) <= 17 and max(counts) >= 23  # ×0.83 … ×1.2: about 16.7 … 24
    assert 15 <= min(counts) and max(counts) <= 25
    from emostream.features import standardise_db

    start = int(np.random.default_rng(5).integers(0, 400 - 100 + 1))  # off: the crop is the only draw, as before
    expected = standardise_db(db.astype(np.float16).astype(np.float32)[:, start : start + 100], plain.features)
    np.testing.assert_array_equal(ev.TrainingWindows(plain, banks, seed=5).window(0), expected)


def test_a_preset_setting_out_of_its_range_is_refused_when_the_preset_is_made():
    plain = ev.PRESETS["wideband-90ep"]
    with pytest.raises(ValueError, match="time_stretch"):
        dataclasses.replace(plain, time_stretch=0.7)
    with pytest.raises(ValueError, match="dropout"):
        dataclasses.replace(plain, dropout=0.9)
    for share in (1.5, -0.1):  # a chance of drawing an augmented copy: 0 … 1
        with pytest.raises(ValueError, match="augment_share"):
            dataclasses.replace(plain, augment_share=share)
    for alpha in (4.5, -0.2):  # Beta(α, α) needs α > 0 when on; 0 = off
        with pytest.raises(ValueError, match="mixup_alpha"):
            dataclasses.replace(plain, mixup_alpha=alpha)
    assert dataclasses.replace(plain, mixup_alpha=0.0).mixup_alpha == 0.0  # off stays allowed
    with pytest.raises(ValueError, match="time_pooling"):
        dataclasses.replace(plain, time_pooling="max")
    assert ev.PRESETS["wideband-90ep-freq-pool"].freq_pool == 3
    assert ev.PRESETS["wideband-90ep-freq-pool"].crnn_config(8).freq_pool == 3
    pooled_v4 = ev.PRESETS["wideband-90ep-baseline-freq-pool"]
    assert (pooled_v4.feature_version, pooled_v4.crnn_config(8).freq_pool) == ("4", 3)
    assert ev.PRESETS["wideband-90ep-freq-pool-5"].crnn_config(8).freq_pool == 5  # a divisor of the 30 rows
    for rows in (0, 4, 11):  # 1 = none … 10 of the 30 frequency rows; 4 would drop two of them
        with pytest.raises(ValueError, match="freq_pool"):
            dataclasses.replace(plain, freq_pool=rows)
    with pytest.raises(ValueError, match="only the CRNN"):
        dataclasses.replace(ev.PRESETS["cnn"], freq_pool=3)
    with pytest.raises(ValueError, match="time_pooling"):  # the compact CNN has no final state to choose
        dataclasses.replace(ev.PRESETS["cnn"], time_pooling="mean")
    for snr in ((50, 15), (15, 90), (-5, 20), (15,)):  # low ≤ high within the features' 80 dB; two values
        with pytest.raises(ValueError, match="train_floor_snr_db"):
            dataclasses.replace(plain, train_floor_snr_db=snr)
    assert plain.with_overrides(["train_floor_snr_db=15,50"]).train_floor_snr_db == (15, 50)


def test_band_masks_can_be_kept_off_the_bands_version_3_holds_at_the_floor():
    """Version 3 holds the bands above 7.1 kHz at the floor; a SpecAugment mask there sets them to 0, a pattern
    the daemon never produces. With the preset's ``mask_kept_bands`` the masks stay below; without it they do
    not (earlier runs reproduce)."""
    from emostream.features import DEFAULT_CONFIG, kept_bands, standardise_db

    v3 = ev.PRESETS["wideband"]
    n_kept = kept_bands(v3.features)
    assert 100 < n_kept < v3.features.n_mels == 128
    assert kept_bands(DEFAULT_CONFIG) == 128
    db = np.random.default_rng(0).uniform(-80, 0, (128, 100)).astype(np.float32)
    held = standardise_db(db, v3.features)
    assert np.ptp(held[n_kept:]) == 0  # one floor value up there

    def masked_tops(n_bands):
        rng = np.random.default_rng(1)
        tops = [ev.mask_bands_and_frames(held.copy(), rng, n_bands)[n_kept:] for _ in range(200)]
        return sum(not np.array_equal(top, held[n_kept:]) for top in tops)

    assert masked_tops(128) > 20
    assert masked_tops(n_kept) == 0
    windows = ev.TrainingWindows(dataclasses.replace(v3, mask_kept_bands=True), {}, seed=0)
    assert windows.mask_bands == n_kept
    assert ev.TrainingWindows(v3, {}, seed=0).mask_bands == 128


def test_full_scores_show_a_collapse_and_the_four_class_view():
    classes = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    y = np.array([0, 4, 5, 6] * 5)
    p = np.zeros((20, 8))
    p[:, 2] = 0.6  # "disgust" always wins over all 8
    p[np.arange(20), y] = 0.3  # but the true class leads among the four
    s = ev.full_scores(y, p, classes)
    assert s["max_share"] == 1.0 and s["predicted_share"]["disgust"] == 1.0 and s["uar"] == 0.0
    assert s["four_class"]["uar"] == 1.0


def test_shared_classes_view_takes_the_argmax_over_the_classes_the_set_has():
    classes = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    y = np.array([5, 5, 6, 0])  # neutral, neutral, sad, angry: no calm in this set
    p = np.full((4, 8), 0.01)
    p[0, [1, 5]] = 0.5, 0.3  # "calm" wins over all 8; "neutral" among the classes the set has
    p[1, [1, 6]] = 0.5, 0.3  # "calm" wins; "sad" among the set's classes — still wrong
    p[2, 6] = p[3, 0] = 0.9
    s = ev.full_scores(y, p, classes)
    assert s["uar"] == pytest.approx((0 + 1 + 1) / 3) and s["predicted_share"]["calm"] == 0.5
    assert s["shared_classes"]["uar"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert s["shared_classes"]["accuracy"] == 0.75
    assert "shared_classes" not in ev.full_scores(np.arange(8), np.eye(8), classes)  # every class present: no view
    crossed = {"fold": "f", "val": {"uar": 0.5}, "cross": s, "tail_average": {"cross": s}}
    summary = ev.summarise([crossed])
    assert summary["cross_shared_classes_uar"]["mean"] == pytest.approx(2.5 / 3)
    assert summary["tail_average"]["cross_shared_classes_uar"]["mean"] == pytest.approx(2.5 / 3)
    assert summary["cross_uar"]["mean"] == pytest.approx(2 / 3)  # the figure the rule uses is untouched


def test_tiny_corpus_run_writes_every_output(ravdess_dir, emodb_dir, tmp_path):
    out = tmp_path / "run"
    code = ev.main(["--protocol", "corpus", "--preset", "transfer", "--epochs", "1", "--max-clips-per-class", "5",
                    "--set", "conv_filters=4,8", "--set", "lstm_units=8,8", "--set", "augment_share=0",
                    "--data-dir", str(ravdess_dir), "--emodb-dir", str(emodb_dir),
                    "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    for name in ("evaluation.json", "evaluation.md", "confusion.png", "folds.json"):
        assert (out / name).is_file(), name
    result = json.loads((out / "evaluation.json").read_text())
    summary = result["summary"]
    assert result["protocol"] == "corpus" and {"uar", "macro_f1", "max_share", "four_class_uar"} <= set(summary)
    (fold,) = result["folds"]
    assert set(fold["test"]["predicted_share"]) == set(result["classes"])
    assert abs(sum(fold["test"]["predicted_share"].values()) - 1) < 1e-6
    assert fold["n_test"] == 5 * 6  # six EmoDB classes, five clips each; boredom left out


def test_a_ship_run_lists_its_clips_per_corpus_and_exports_with_parity_on_both(ravdess_dir, emodb_dir, tmp_path,
                                                                               monkeypatch):
    """The model to ship has no test part: its validation clips (RAVDESS and EmoDB) are the parity list, stored
    relative to each corpus's root so the list holds on another machine."""
    import pandas as pd

    from emostream.export.cli import main as export_main
    from emostream.inference.model import EmotionModel

    out = tmp_path / "ship"
    assert ev.main(["--protocol", "ship", "--preset", "shipped-v1", "--epochs", "1", "--max-clips-per-class", "4",
                    "--set", "augment_share=0", "--data-dir", str(ravdess_dir), "--emodb-dir", str(emodb_dir),
                    "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--save-model"]) == 0
    listed = pd.read_csv(out / "model-fold1" / "test_files.csv")
    assert set(listed["corpus"]) == {"ravdess", "emodb"}
    assert not any(p.startswith("/") for p in listed["path"])
    summary = json.loads((out / "model-fold1" / "summary.json").read_text())
    assert summary["test_accuracy"] is None and summary["scored_on"].startswith("validation")
    monkeypatch.chdir(tmp_path)  # the corpora are found through the options, not the working directory
    onnx_path = tmp_path / "ship.onnx"
    assert export_main(["--keras", str(out / "model-fold1" / "model.keras"), "--out", str(onnx_path),
                        "--data-dir", str(ravdess_dir), "--emodb-dir", str(emodb_dir),
                        "--cache-dir", str(tmp_path / "cache"), "--min-windows", str(len(listed))]) == 0
    parity = json.loads((out / "model-fold1" / "ship.parity.json").read_text())
    assert parity["n_windows"] == len(listed) and parity["max_abs_diff"] < 1e-5 and parity["top1_agreement"] == 1.0
    assert EmotionModel(onnx_path).contract.test_accuracy is None
    # Scoring the exported model on the ship protocol: no test part, so the validation speakers, per corpus.
    # The preset named here (feature version 3) does not describe the exported model (version 1): the record must
    # carry the version that was computed for the model.
    scored = tmp_path / "scored"
    assert ev.main(["--protocol", "ship", "--preset", "wideband", "--max-clips-per-class", "4",
                    "--set", "augment_share=0", "--data-dir", str(ravdess_dir), "--emodb-dir", str(emodb_dir),
                    "--cache-dir", str(tmp_path / "cache"), "--out", str(scored), "--onnx", str(onnx_path)]) == 0
    evaluation = json.loads((scored / "evaluation.json").read_text())
    assert evaluation["preset"]["feature_version"] == "1"
    run_id = EmotionModel(onnx_path).contract.run_id
    assert evaluation["exported_model"] == {"file": "ship.onnx", "run_id": run_id, "feature_version": "1",
                                           "input_versions": ["1"]}
    # which clips it scored (before: not said, so a quick slice read as a full run), and each clip's answer
    assert (evaluation["data_seed"], evaluation["max_clips_per_class"]) == (42, 4)
    listed_folds = json.loads((scored / "folds.json").read_text())
    assert [f["fold"] for f in listed_folds] == [f["fold"] for f in evaluation["folds"]]
    settings = next(line for line in (scored / "evaluation.md").read_text().splitlines() if line.startswith("Settings"))
    assert run_id in settings and "epochs" not in settings  # not the training settings of the preset named here
    (fold,) = evaluation["folds"]
    assert set(fold["val_by_corpus"]) == {"ravdess", "emodb"}
    assert sum(v["n"] for v in fold["val_by_corpus"].values()) == fold["val"]["n"] == len(listed)


def test_spliced_windows_join_two_speakers_saying_the_same_emotion_at_a_cut_and_off_draws_nothing():
    from emostream.train.clipbank import ClipBank

    ramp = np.linspace(-3, 3, 300)[None, :] + np.linspace(-1, 1, 128)[:, None]  # not constant: standardisable
    levels = [-60.0, -20.0, -60.0, -20.0, -40.0]  # rows 0, 2: speaker a; 1, 3: speaker b; 4: speaker c alone
    banks = {"orig": ClipBank([f"{i}.wav" for i in range(5)],
                              [(level + ramp).astype(np.float16) for level in levels], None)}
    labels, speakers = np.array([0, 0, 1, 1, 2]), np.array(["a", "b", "a", "b", "c"])
    plain = dataclasses.replace(ev.PRESETS["wideband-90ep"], augment_share=0.0, spec_augment=False)
    spliced = dataclasses.replace(plain, splice_share=1.0)
    assert ev.PRESETS["wideband-90ep-splice"].splice_share == 0.5
    windows = ev.TrainingWindows(spliced, banks, 0, labels=labels, speakers=speakers)
    rows = np.array([0, 1, 2, 3, 4] * 20)
    partners = windows.splice_partners(rows)
    for r, q in zip(rows, partners, strict=True):
        if r == 4:
            assert q is None  # no other speaker with that emotion
        else:
            assert labels[q] == labels[r] and speakers[q] != speakers[r]
    cuts = []
    for _ in range(40):
        x = windows.window(0, 1)  # −60 dB then −20 dB: one step up in every band
        steps = np.diff(x.mean(axis=0))
        cut = int(np.argmax(steps)) + 1
        assert steps.max() > 1.0 and np.sum(steps > 0.5) == 1
        cuts.append(cut)
    assert 25 <= min(cuts) and max(cuts) <= 75 and max(cuts) - min(cuts) >= 20
    half = ev.TrainingWindows(dataclasses.replace(plain, splice_share=0.5), banks, 0, labels=labels,
                              speakers=speakers).splice_partners(np.array([0, 1, 2, 3] * 250))
    assert 0.4 < np.mean([q is not None for q in half]) < 0.6
    off = ev.TrainingWindows(plain, banks, 7)
    assert off.splice_partners(rows) == [None] * len(rows)
    np.testing.assert_array_equal(off.window(2), ev.TrainingWindows(plain, banks, 7).window(2))  # no draw spent
    with pytest.raises(ValueError, match="label and speaker"):
        ev.TrainingWindows(spliced, banks, 0)
    with pytest.raises(ValueError, match="splice_share with feature version 4"):
        dataclasses.replace(ev.PRESETS["wideband-90ep-baseline"], splice_share=0.5)
    with pytest.raises(ValueError, match="splice_share"):
        dataclasses.replace(plain, splice_share=1.5)
    with pytest.raises(ValueError, match="speaker_adversarial"):
        dataclasses.replace(spliced, speaker_adversarial=0.5)
    corpora = np.array(["ravdess", "emodb", "ravdess", "ravdess", "emodb"])  # row 1's voice is another corpus's
    across = ev.TrainingWindows(spliced, banks, 0, labels=labels, speakers=speakers, corpora=corpora)
    assert across.splice_partners(np.array([0, 1] * 10)) == [None] * 20  # label 0: speakers a, b in two corpora
