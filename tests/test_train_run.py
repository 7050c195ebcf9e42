import json

import numpy as np
import pandas as pd

from emostream.train.cli import RUN_FILES, main


def test_short_training_run_on_real_clips_writes_every_output(ravdess_dir, tmp_path):
    out = tmp_path / "run"
    models = tmp_path / "models"
    code = main(["--data-dir", str(ravdess_dir), "--max-clips-per-class", "5", "--epochs", "2",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--publish", str(models)])
    assert code == 0
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
        assert (models / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history["val_accuracy"]) == 2 and {"loss", "accuracy", "val_uar"} <= set(history)
    labels = json.loads((out / "labels.json").read_text())
    assert labels == sorted(labels) and len(labels) == 8
    test_files = pd.read_csv(out / "test_files.csv")
    assert len(test_files) == 8 and set(test_files["emotion"]) == set(labels)
    assert all((ravdess_dir / p).is_file() for p in test_files["path"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_clips"] == 40 and summary["n_params"] == 1_118_216
    assert summary["n_train"] + summary["n_val"] + summary["n_test"] == 40 and summary["n_val"] >= 8
    assert summary["final_val_accuracy"] == history["val_accuracy"][-1]
    report = json.loads((out / "classification_report.json").read_text())
    assert 0 <= report["accuracy"] <= 1 and set(labels) <= set(report)
    card = (out / "metrics.md").read_text()
    assert "81.26%" in card and "final epoch" in card and "carved from the training side" in card

    import keras

    model = keras.models.load_model(out / "model.keras")  # saved without optimizer state
    assert getattr(model, "optimizer", None) is None
    assert model.predict(np.zeros((1, 128, 100, 1), np.float32), verbose=0).shape == (1, 8)


def test_missing_data_dir_exits_with_a_one_line_error(tmp_path, caplog):
    assert main(["--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "does not exist" in errors[0].getMessage()

