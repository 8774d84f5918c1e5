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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, saying why, where torch sees no GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def deterministic_cudnn(monkeypatch):
    """Convolution backward without atomics, so two paths (graph and eager) can agree to rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
