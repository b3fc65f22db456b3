import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    "A tiny random policy and the embedded model's tokenizer (built once per test session)."
    from rlhf_ref.models import tiny_policy
    torch.set_num_threads(1)
    return tiny_policy()


@pytest.fixture
def rows():
    "A few standard-format preference rows."
    return [{"prompt": f"Review {i}: the film", "chosen": " was warm and funny." if i % 2 else " moved me deeply.",
             "rejected": " was dull." if i % 3 else " dragged on and on for hours."} for i in range(8)]
