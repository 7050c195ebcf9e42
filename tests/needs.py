"""What tests do when something they need is absent: skip with the reason, or fail under CI=true."""

import os

import pytest


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)
