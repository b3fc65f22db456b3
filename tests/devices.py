"""Put test tensors where the model lives. Models come from `rlhf_ref.models` on `rlhf_ref.core.default_device()`
(CUDA when present, or `$RLHF_REF_DEVICE`); collators and `torch.tensor` make CPU tensors. Tests that feed a model
move their inputs with `on(model, x)`, so the suite runs unchanged on a GPU machine (tools/gpu_check.sh)."""
import torch


def device_of(model) -> torch.device:
    "The device of `model`'s first parameter (or `model` itself if it is already a device)."
    return model if isinstance(model, torch.device) else next(model.parameters()).device


def on(model, x):
    "`x` (a tensor, or a dict such as a batch: its tensors) moved to `model`'s device."
    device = device_of(model)
    if isinstance(x, dict): return {k: v.to(device) if torch.is_tensor(v) else v for k, v in x.items()}
    return x.to(device)
