"""Time and peak memory of the LM head's log-probs alone: plain (full (N, V) logits, log_softmax, gather) against
`rlhf_ref.logprobs.head_logps` (chunks, custom backward), forward and backward, each in its own process; then each one's
error against the same computation in fp64 (log-probs, and the gradients of the hidden states and of the weight).

Default size: N = 8192 response tokens (16 pairs x 256 tokens a side), d = 576, V = 49152 (SmolLM2-135M's head, tied
or not makes no difference here); fp32 on CPU, bf16 on CUDA. Prints one JSON object.

Usage: python benchmarks/head_logps.py [--n 8192] [--d 576] [--v 49152] [--chunk 1024] [--reps 3]
"""
import argparse, json, statistics, subprocess, sys, time
import torch


def peak_bytes(device):
    if device == "cuda": return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as f: return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))


def run(method, args):
    from rlhf_ref.logprobs import head_logps, selective_logps
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    head = torch.nn.Linear(args.d, args.v, bias=False, device=device, dtype=dtype)
    h = torch.randn(args.n, args.d, device=device, dtype=dtype, requires_grad=True)
    y = torch.randint(0, args.v, (args.n,), device=device)
    def step():
        lp = head_logps(h, head, y, args.chunk) if method == "chunked" else selective_logps(head(h), y, args.chunk)
        lp.sum().backward()
        h.grad = head.weight.grad = None
    step()  # warm-up
    if device == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base, times = peak_bytes(device), []
    for _ in range(args.reps):
        t = time.perf_counter(); step()
        if device == "cuda": torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = peak_bytes(device)  # before the accuracy check below, whose fp64 (N, V) tensors would dominate it
    # accuracy against the same computation in fp64 from the same (rounded) weights and hidden states
    lp = head_logps(h, head, y, args.chunk) if method == "chunked" else selective_logps(head(h), y, args.chunk)
    gh, gw = torch.autograd.grad(lp.sum(), [h, head.weight])
    h64, w64 = h.detach().double().requires_grad_(), head.weight.detach().double().requires_grad_()
    exact = torch.log_softmax(h64 @ w64.t(), -1).gather(-1, y[:, None]).squeeze(-1)
    eh, ew = torch.autograd.grad(exact.sum(), [h64, w64])
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
    print(json.dumps({"median_s": statistics.median(times), "all_s": times, "peak_gb": peak / 2**30,
                      "before_gb": base / 2**30, "max_abs_logp_error": (lp.double() - exact).abs().max().item(),
                      "rel_grad_error_hidden": rel(gh, eh), "rel_grad_error_weight": rel(gw, ew)}))


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(n=8192, d=576, v=49152, chunk=1024, reps=3).items(): ap.add_argument(f"--{k}", type=int, default=v)
    ap.add_argument("--method", default=None)
    args = ap.parse_args()
    if args.method: return run(args.method, args)
    out = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
           "n": args.n, "d": args.d, "v": args.v, "chunk": args.chunk}
    for m in ("plain", "chunked"):
        res = subprocess.run([sys.executable, __file__, "--method", m, *sum(([f"--{k}", str(getattr(args, k))]
                              for k in ("n", "d", "v", "chunk", "reps")), [])], capture_output=True, text=True)
        lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
        out[m] = json.loads(lines[-1]) if lines else {"error": res.stderr[-500:]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
