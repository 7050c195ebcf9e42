import numpy as np
import pytest
from synth import tone

from emostream.train.data import (
    EMOTIONS,
    DatasetError,
    class_distribution,
    index_ravdess,
    parse_ravdess_name,
)


@pytest.mark.parametrize("code,emotion", sorted(EMOTIONS.items()))
@pytest.mark.parametrize("channel_code,channel", [("01", "speech"), ("02", "song")])
def test_every_emotion_and_channel_code_parses(code, emotion, channel_code, channel):
    fields = parse_ravdess_name(f"03-{channel_code}-{code}-02-01-02-17.wav")
    assert fields == {
        "emotion": emotion, "channel": channel, "intensity": "strong",
        "statement": 1, "repetition": 2, "actor": 17,
    }


def test_flac_and_wav_parse_alike():
    assert parse_ravdess_name("03-01-05-01-02-01-24.flac") == parse_ravdess_name("03-01-05-01-02-01-24.wav")


@pytest.mark.parametrize(
    "name,field",
    [
        ("03-01-09-01-01-01-01.wav", "emotion"),
        ("03-01-00-01-01-01-01.wav", "emotion"),
        ("03-03-01-01-01-01-01.wav", "channel"),
        ("02-01-01-01-01-01-01.wav", "modality"),
        ("03-01-01-03-01-01-01.wav", "intensity"),
        ("03-01-01-01-03-01-01.wav", "statement"),
        ("03-01-01-01-01-03-01.wav", "repetition"),
        ("03-01-01-01-01-01-25.wav", "actor"),
        ("03-01-01-01-01-01.wav", "7 two-digit"),
        ("03-01-01-01-01-01-1a.wav", "7 two-digit"),
        ("notes.wav", "7 two-digit"),
    ],
)
def test_bad_names_are_rejected_naming_the_field(name, field):
    with pytest.raises(ValueError, match=field):
        parse_ravdess_name(name)


def make_tree(write_clip, root_name="ravdess", suffix=".wav"):
    names = [
        "Audio_Speech_Actors_01-24/Actor_01/03-01-01-01-01-01-01",
        "Audio_Speech_Actors_01-24/Actor_02/03-01-05-02-01-01-02",
        "Audio_Song_Actors_01-24/Actor_01/03-02-03-01-02-02-01",
    ]
    for name in names:
        write_clip(f"{root_name}/{name}{suffix}", tone(0.5))
    return write_clip(f"{root_name}/Audio_Speech_Actors_01-24/Actor_01/oops-copy{suffix}", tone(0.1)).parents[2]


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_index_reads_both_layouts_and_reports_bad_names(write_clip, suffix, caplog):
    root = make_tree(write_clip, suffix=suffix)
    index = index_ravdess(root, seed=0)
    assert len(index.frame) == 3
    assert set(index.frame["channel"]) == {"speech", "song"}
    assert set(index.frame.columns) >= {"path", "emotion", "channel", "intensity", "statement", "repetition", "actor"}
    assert [p for p, _ in index.problems] == [f"Audio_Speech_Actors_01-24/Actor_01/oops-copy{suffix}"]
    assert "oops-copy" in caplog.text


def test_shuffle_is_seeded(write_clip):
    root = make_tree(write_clip)
    assert list(index_ravdess(root, seed=3).frame["path"]) == list(index_ravdess(root, seed=3).frame["path"])


def test_missing_and_empty_roots_are_one_line_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as missing:
        index_ravdess(tmp_path / "nowhere")
    assert "\n" not in str(missing.value)
    with pytest.raises(DatasetError, match="no RAVDESS clips"):
        index_ravdess(tmp_path)


def test_real_dataset_index_matches_its_readme(ravdess_dir):
    index = index_ravdess(ravdess_dir)
    assert index.problems == []
    assert len(index.frame) == 2452
    counts = class_distribution(index.frame)
    assert counts.loc["neutral", "total"] == 188
    assert counts.loc["calm", "total"] == 376
    assert counts.loc["surprised", "total"] == 192
    assert counts["speech"].sum() == 1440 and counts["song"].sum() == 1012
    assert np.isin(index.frame["actor"], range(1, 25)).all()
