"""Shared fixtures: the real SmolLM2 checkpoint and model (loaded once per session)."""

import pytest
import torch

from thermocline.models import build_model, load_checkpoint


@pytest.fixture(scope="session")
def smollm2_checkpoint():
    return load_checkpoint("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2(smollm2_checkpoint):
    return build_model(smollm2_checkpoint, torch.float32)
