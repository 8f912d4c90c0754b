"""Shared fixtures: the real SmolLM2 checkpoint and model (loaded once per session), and one
torch thread for the tests of tiny models."""

import pytest
import torch

from thermocline.models import build_model, load_checkpoint


@pytest.fixture(scope="session")
def smollm2_checkpoint():
    return load_checkpoint("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2(smollm2_checkpoint):
    return build_model(smollm2_checkpoint, torch.float32)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: with one thread torch does not spin-wait on a
    second one that another job holds (steps get erratic, several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
