import importlib
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_the_readme_names_is_an_installed_entry_point_that_imports():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    named = set(re.findall(r"\bemostream-[a-z]+\b", (ROOT / "README.md").read_text()))
    assert named and named <= set(scripts), f"README names commands pyproject does not install: {named - set(scripts)}"
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_the_readme_lists_every_preset_the_evaluate_command_accepts():
    from emostream.train.evaluate import PRESETS

    # in a table row, so each | is escaped (an unescaped one ends the cell, even inside a code span)
    listed = re.search(r"`--preset ([a-z0-9\\|-]+)`", (ROOT / "README.md").read_text())
    assert listed, "the README's emostream-evaluate row lists no --preset choices"
    assert listed.group(1).split("\\|") == list(PRESETS), "README --preset list differs from PRESETS (names or order)"
