"""Put test tensors where the model lives. Models come from `rlhf_ref.models` on `rlhf_ref.core.default_device()`
(CUDA when present, or `$RLHF_REF_DEVICE`); collators and `torch.tensor` make CPU tensors. Tests that feed a model
move their inputs with `on(model, x)`, so the suite runs unchanged on a GPU machine (tools/gpu_check.sh)."""
import torch
from rlhf_ref.core import to_device


def device_of(model) -> torch.device:
    "The device of `model`'s first parameter (or `model` itself if it is already a device)."
    return model if isinstance(model, torch.device) else next(model.parameters()).device


def on(model, x):
    "`x` (a tensor, or a batch: nested dicts, lists, tuples of tensors) moved to `model`'s device (`rlhf_ref.core.to_device`)."
    return to_device(x, model)
