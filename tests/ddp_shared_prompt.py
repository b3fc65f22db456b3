"""Run by tests/test_logprobs.py under `torch.distributed.run --nproc_per_node 2` (gloo, CPU): two DPO-style backward
passes through `concatenated_forward` on a DistributedDataParallel model (prompt run once per process), then rank 0
compares the synchronised gradients with those of one process on the whole batch and prints the largest difference."""
import json, os, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from rlhf_ref.logprobs import concatenated_forward
from rlhf_ref.models import tiny_policy
from rlhf_ref.data import preference_dataset, PreferenceCollator

rank = int(os.environ["RANK"]); dist.init_process_group("gloo")
torch.manual_seed(0)
model, tok = tiny_policy(device="cpu")  # gloo on the CPU, whatever the machine has
rows = [dict(prompt="Review " + "very " * i + "short:", chosen=" good" * (1 + i % 3), rejected=" bad film" * (2 - i % 2))
        for i in range(4)]
collate = lambda rs: PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rs, tok)))
ddp = DistributedDataParallel(model, find_unused_parameters=sys.argv[1:] == ["find_unused"])
calls = []
model.register_forward_pre_hook(lambda m, a, kw: calls.append(list(kw["input_ids"].shape)), with_kwargs=True)
for _ in range(2):  # two backward passes: gradients accumulate, each synchronised
    out = concatenated_forward(ddp, collate(rows[2 * rank:2 * rank + 2]), share_prompt=True)
    (out["chosen_logps"] - 2 * out["rejected_logps"]).sum().backward()
if rank == 0:
    one, _ = tiny_policy(device="cpu"); one.load_state_dict(model.state_dict())
    for _ in range(2):
        out = concatenated_forward(one, collate(rows), share_prompt=False)
        ((out["chosen_logps"] - 2 * out["rejected_logps"]).sum() / 2).backward()  # DDP averages over the 2 processes
    err = max((p.grad - q.grad).abs().max().item() for p, q in zip(model.parameters(), one.parameters()))
    scale = max(q.grad.abs().max().item() for q in one.parameters())
    print(json.dumps({"calls": calls[:2], "max_grad_err": err, "max_grad": scale}))
dist.destroy_process_group()
