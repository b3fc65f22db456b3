"""Where one DPO optimizer step spends its time: torch.profiler over one step of a `dpo_step.py` contender.

Builds the contender exactly as `benchmarks/dpo_step.py` does (same model, batch and optimizer), runs `--warmup` steps,
then profiles one step and prints the operators that took the most device time (CUDA) or CPU time (CPU), and the step's
wall time, so that a slow contender can be compared operator by operator with the plain-PyTorch floor. Not a timing
benchmark (the profiler adds its own overhead); use `dpo_step.py` for ratios.

Usage: python benchmarks/profile_step.py [--contenders rlhf_ref,floor] [--pairs 32] [--resp-tokens 512] [--prompt-tokens 0] [--arch 135m]
       [--rows 25] [--warmup 2]
"""
import argparse, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
import dpo_step  # noqa: E402  (the contenders' set-up, shared)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contenders", default="rlhf_ref,floor", help=f"comma-separated, from {dpo_step.ALL}")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--resp-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=0)
    ap.add_argument("--arch", choices=sorted(dpo_step.ARCHS), default=None)
    ap.add_argument("--rows", type=int, default=25, help="operators listed per contender")
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    unknown = set(args.contenders.split(",")) - set(dpo_step.ALL)
    if unknown: ap.error(f"unknown contenders {sorted(unknown)}; choose from {dpo_step.ALL}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    for name in args.contenders.split(","):
        step = dpo_step.setup(name, device, args)
        for _ in range(args.warmup): step()
        dpo_step.sync(device)
        t = time.perf_counter(); step(); dpo_step.sync(device); wall = time.perf_counter() - t
        with torch.profiler.profile(activities=acts) as prof:
            step(); dpo_step.sync(device)
        print(f"==== {name}: one step {wall:.3f} s unprofiled ({device}, {args.arch or 'embedded'}, {args.pairs} pairs, "
              f"~{args.resp_tokens} tokens a response); operators by {key}")
        print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
        del step
        if device == "cuda": torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
