"One test over every registered algorithm: metadata, finite losses and gradients, and hyperparameter checks."
import dataclasses, math
import pytest
import torch
from rlhf_ref.algos import DATA_KINDS, algo_params, algorithms, build_algo

ALGOS = sorted(algorithms())
OFFLINE = [n for n in ALGOS if not algorithms()[n].online]  # online algorithms' losses take rollout batches: own tests


def test_registry_is_not_empty_and_consistent():
    assert "dpo" in ALGOS
    for name, info in algorithms().items():
        assert info.name == name and info.data in DATA_KINDS
        assert info.notebook and (info.cls.__module__.startswith("rlhf_ref."))
        assert info.precompute_ref is False or info.needs_ref, f"{name}: a precomputable reference implies needing one"


def _batch(data: str, tiny) -> dict:
    "A small batch of the kind of data an algorithm consumes, built with the package's own datasets and collators."
    model, tok = tiny
    if data == "pairs":
        from rlhf_ref.data import PreferenceCollator, precompute_ref_logps, preference_dataset
        rows = [{"prompt": f"Review {i}: the film", "chosen": " was warm and funny." if i % 2 else " moved me deeply.",
                 "rejected": " was dull." if i % 3 else " dragged on and on."} for i in range(4)]
        return PreferenceCollator(tok.pad_token_id)(list(precompute_ref_logps(preference_dataset(rows, tok), model, tok.pad_token_id)))
    if data in ("responses", "scored"):
        from rlhf_ref.sft import ResponseCollator, response_dataset
        rows = [{"prompt": f"Review {i}: the film", "response": " was warm and funny." if i % 2 else " dragged on.",
                 "reward": 0.9 if i % 2 else 0.1, "advantage": 0.4 if i % 2 else -0.3} for i in range(4)]
        return ResponseCollator(tok.pad_token_id)(list(response_dataset(rows, tok)))
    raise NotImplementedError(f"tests/test_algos.py builds no batch of {data!r} data yet: add it here")


@pytest.mark.parametrize("name", OFFLINE)
def test_loss_and_gradients_are_finite(name, tiny):
    "At default hyperparameters, on a batch of the data the algorithm consumes: a finite scalar loss, finite metrics, finite and non-zero gradients."
    from rlhf_ref.models import frozen_copy
    info = algorithms()[name]
    model, _ = tiny
    policy, ref = frozen_copy(model).requires_grad_(True), frozen_copy(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for p in policy.parameters(): p.data += 0.01 * torch.randn_like(p)  # policy != reference: margins are not all 0
    batch = {k: v.to(next(policy.parameters()).device) if torch.is_tensor(v) else v for k, v in _batch(info.data, tiny).items()}
    loss, metrics = info.cls().loss(batch, policy, ref)
    assert loss.dim() == 0 and torch.isfinite(loss), loss
    assert all(math.isfinite(float(v)) for v in metrics.values()), metrics
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.norm() for g in grads) > 0


def _invalid_values(spec: dict) -> list:
    "Values no hyperparameter of that type may take."
    kinds = {k.strip() for k in spec["type"].split("|")}
    if "float" in kinds: return [math.nan, math.inf]
    if kinds == {"str"}: return ["no-such-choice"]
    return []


CASES = [(n, f, v) for n in ALGOS for f, s in algo_params(algorithms()[n].cls).items() for v in _invalid_values(s)]


@pytest.mark.parametrize("name,field,value", CASES, ids=[f"{n}-{f}-{v}" for n, f, v in CASES])
def test_invalid_hyperparameter_raises_a_value_error_naming_it(name, field, value):
    with pytest.raises(ValueError, match=field):
        algorithms()[name].cls(**{field: value})


@pytest.mark.parametrize("name", ALGOS)
def test_defaults_build_and_round_trip_through_strings(name):
    "Every hyperparameter's default, written as the CLI would pass it, builds the same algorithm."
    info = algorithms()[name]
    params = algo_params(info.cls)
    as_text = {k: "none" if v["default"] is None else str(v["default"]) for k, v in params.items()}
    assert dataclasses.asdict(build_algo(name, **as_text)) == dataclasses.asdict(info.cls())
