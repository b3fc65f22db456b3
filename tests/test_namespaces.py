"`from rlhf_ref.<module> import *` gives only what a user imports: no methods attached to classes after their definition."
import importlib, inspect, pkgutil, subprocess, sys
import pytest
import rlhf_ref

MODULES = sorted(m.name for m in pkgutil.iter_modules(rlhf_ref.__path__) if not m.name.startswith("_"))


@pytest.mark.parametrize("module", MODULES)
def test_all_lists_no_method(module):
    mod = importlib.import_module(f"rlhf_ref.{module}")
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)  # every listed name exists
        if inspect.isfunction(obj):
            params = list(inspect.signature(obj).parameters)
            assert not params or params[0] not in ("self", "cls"), f"rlhf_ref.{module}.__all__ exports the method {name}{inspect.signature(obj)}"


def test_star_import_of_train_in_a_clean_interpreter():
    code = "from rlhf_ref.train import *; import json; print(json.dumps(sorted(k for k in dir() if not k.startswith('_'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = set(__import__("json").loads(out))
    assert {"Trainer", "TrainConfig", "latest_checkpoint"} <= names
    assert not names & {"train", "save_checkpoint", "load_checkpoint", "request_stop", "save_trained_policy"}, names
