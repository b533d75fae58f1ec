"""The reconstruction tests run torch on one thread: on a small shared CPU, OpenMP worker threads that wait for
each other cost far more than they save on these small tensors (results do not depend on it)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
