"""Feature caches are shared by runs that start side by side (two training lanes building the same clip bank)."""
import numpy as np
from synth import speechlike

from emostream.train.clipbank import clip_bank
from emostream.train.featurize import save_npz_atomically


def test_a_cache_write_leaves_another_writers_temporary_alone(tmp_path):
    cache = tmp_path / "bank.npz"
    other = tmp_path / "bank.tmp.npz"  # the temporary every writer used to share
    other.write_bytes(b"another run is still writing this")
    save_npz_atomically(cache, db=np.arange(6.0).reshape(2, 3))
    assert other.read_bytes() == b"another run is still writing this"
    with np.load(cache) as z:
        assert np.array_equal(z["db"], np.arange(6.0).reshape(2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.npz", "bank.tmp.npz"]  # its own temporary is gone


def test_a_clip_bank_read_back_from_its_cache_equals_the_one_computed(write_clip, tmp_path, caplog):
    write_clip("a.wav", speechlike(3.0, seed=3))
    computed = clip_bank(tmp_path, ["a.wav"], "orig", 0, tmp_path / "cache", workers=1)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the bank; no temporary left behind
    with caplog.at_level("INFO", logger="emostream.train.clipbank"):
        cached = clip_bank(tmp_path, ["a.wav"], "orig", 0, tmp_path / "cache", workers=1)
    assert "from cache" in caplog.text
    assert np.array_equal(computed.db[0], cached.db[0])
    assert np.array_equal(computed.windows[0], cached.windows[0])
