from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def model_path():
    from harness.modelfile import default_model_path

    return default_model_path()
