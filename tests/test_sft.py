"SFT: the loss against a naive loop, reductions, response data from response and preference rows."
import pytest
import torch
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
    batch = ResponseCollator(tok.pad_token_id)(list(response_dataset(rows, tok)))
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
