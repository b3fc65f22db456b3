"SFT: the loss against a naive loop, reductions, response data from response and preference rows."
import pytest
import torch
from devices import on
from rlhf_ref.data import DataError
from rlhf_ref.sft import SFT, ResponseCollator, response_dataset, sft_loss


@pytest.mark.parametrize("seed", range(4))
def test_sft_loss_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    lp, mask = -torch.rand(10, 7, generator=g) * 5, (torch.rand(10, 7, generator=g) > 0.4).long()
    mask[:, 0] = 1
    for average in (True, False):
        naive = []
        for row, m in zip(lp.tolist(), mask.tolist()):
            s = -sum(x for x, k in zip(row, m) if k)
            naive.append(s / sum(m) if average else s)
        torch.testing.assert_close(sft_loss(lp, mask, average=average), torch.tensor(naive))


def test_reductions_and_gradient_direction(tiny):
    from rlhf_ref.models import frozen_copy
    from rlhf_ref.logprobs import response_logps, seq_logps
    model, tok = tiny
    rows = [dict(prompt="Say:", response=" hello there, friend"), dict(prompt="The film was", chosen=" fine.", rejected=" bad.")]
    batch = on(model, ResponseCollator(tok.pad_token_id)(list(response_dataset(rows, tok))))
    policy = frozen_copy(model).requires_grad_(True)
    lp = response_logps(policy, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    m = batch["response_mask"]
    torch.testing.assert_close(SFT("token").loss(batch, policy, None)[0], -(lp * m).sum() / m.sum())
    torch.testing.assert_close(SFT("sequence").loss(batch, policy, None)[0], -seq_logps(lp, m, True).mean())
    torch.testing.assert_close(SFT("sum").loss(batch, policy, None)[0], -seq_logps(lp, m).mean())
    before = seq_logps(lp, m).detach()
    SFT().loss(batch, policy, None)[0].backward()
    torch.optim.SGD(policy.parameters(), lr=0.3).step()
    after = seq_logps(response_logps(policy, batch["input_ids"], batch["attention_mask"], m), m).detach()
    assert (after > before).all()


def test_response_data_rows(tiny):
    _, tok = tiny
    ds = response_dataset([{"prompt": "Q:", "chosen": " yes", "rejected": " no"}, {"prompt": "Q:", "response": " no", "reward": 1}], tok)
    assert tok.decode(ds[0]["response_ids"]) == " yes" + tok.eos_token
    conv = response_dataset([{"prompt": [{"role": "user", "content": "Hi"}],
                              "response": [{"role": "assistant", "content": "Hello!"}]}], tok)
    assert "Hello!" in tok.decode(conv[0]["response_ids"])
    with pytest.raises(DataError, match="missing column 'response'"): response_dataset([{"prompt": "x", "reply": "y"}], tok)
    with pytest.raises(DataError, match="empty"): response_dataset([], tok)
    with pytest.raises(ValueError, match="reduction"): SFT(reduction="mean")


def test_demonstrations_are_the_written_responses_or_the_best_sample(tiny, tmp_path, monkeypatch):
    "References pair each train prompt with its own written response; without them, the best finished sample per prompt."
    import json, zlib
    from rlhf_ref.core import cache_dir
    from rlhf_ref.simplify import load_simplify
    from rlhf_ref.sft import demonstrations
    from rlhf_ref.tasks import Task, get_task
    (tmp_path / "c").mkdir(); (tmp_path / "c" / "models").symlink_to(cache_dir("models"), target_is_directory=True)
    monkeypatch.setenv("RLHF_REF_CACHE", str(tmp_path / "c"))
    policy, tok = tiny
    rows, which = demonstrations(policy, tok, get_task("simplify"))
    train = load_simplify("train")
    assert which == "references" and len(rows) == len(train) == 160
    assert all(r["prompt"][-1]["content"].endswith(t["original"]) and r["response"] == [{"role": "assistant", "content": t["simple"]}]
               for r, t in zip(rows, train))
    task = Task("toy-best", "hash", get_task("sentiment").train_prompts[:3], [],
                lambda p, c: [zlib.crc32(x.encode()) / 2**32 for x in c], max_new_tokens=6)
    import rlhf_ref.prefdata as pd
    real = pd.generate
    monkeypatch.setattr(pd, "generate", lambda *a, **kw: [{**s, "finished": t % 2 == 1} for t, s in enumerate(real(*a, **kw))])
    rows, which = demonstrations(policy, tok, task, k=4)
    samples = pd.scored_samples(policy, tok, task, k=4)
    for i, r in enumerate(rows):
        mine = [s for s in samples if s["prompt_index"] == i and s["finished"]]
        assert r["reward"] == max(s["reward"] for s in mine) and r["finished"]
    assert which == "best of 4" and len(rows) == 3
    with pytest.raises(ValueError, match="responses must be one of"): demonstrations(policy, tok, task, responses="written")
