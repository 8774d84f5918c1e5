import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run two at a time (pytest -n 2) on 2 cores: one intra-op thread each avoids
    oversubscription, where threads spin-wait on each other and small convs run 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
