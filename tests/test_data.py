"""Preference data: formats, validation errors that name the row, truncation, batching."""
import json
import pytest
import torch
from rlhf_ref.core import read_jsonl
from rlhf_ref.data import (DataError, PreferenceCollator, check_row, preference_dataset, tokenize_row, precompute_ref_logps,
                           pad_prompt_response)

CONV = {"prompt": [{"role": "user", "content": "Say something kind."}],
        "chosen": [{"role": "assistant", "content": "You are doing great."}],
        "rejected": [{"role": "assistant", "content": "No."}]}


@pytest.mark.parametrize("row,msg", [
    ({"prompt": "p", "chosen": "c"}, "row 5: missing column 'rejected'"),
    ({"chosen": "c", "rejected": "r"}, "row 5: missing column 'prompt'"),
    ({"prompt": "p", "chosen": "", "rejected": "r"}, "row 5: 'chosen' is empty"),
    ({"prompt": "p", "chosen": "c", "rejected": "   \n"}, "row 5: 'rejected' is empty"),
    ({"prompt": "p", "chosen": None, "rejected": "r"}, "row 5: 'chosen' must be a string or a list of messages, got NoneType"),
    ({"prompt": "p", "chosen": ["a", "b"], "rejected": "r"}, "must be a string or a list of messages, got list"),
    ({"prompt": "p", "chosen": [{"role": "assistant", "content": "x"}], "rejected": "r"}, "mixes"),
    ({"prompt": 3, "chosen": "c", "rejected": "r"}, "'prompt' must be a string"),
    ({**CONV, "chosen": [{"role": "assistant", "content": ""}]}, "'chosen' ends with an empty message"),
    ({**CONV, "chosen": [{"role": "assistant", "content": 7}]}, "non-string content"),
    ("not a row", "row 5: expected a dict"),
])
def test_malformed_rows_are_named(row, msg):
    with pytest.raises(DataError, match=msg.replace("(", r"\(").replace(")", r"\)")): check_row(row, 5)


def test_dataset_reports_the_bad_row_index(tiny, rows):
    _, tok = tiny
    bad = rows[:3] + [{"prompt": "p", "chosen": "c", "rejected": ""}]
    with pytest.raises(DataError, match="row 3: 'rejected' is empty"): preference_dataset(bad, tok)


def test_empty_dataset(tiny):
    with pytest.raises(DataError, match="empty"): preference_dataset([], tiny[1])


def test_malformed_jsonl(tiny, tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n{not json\n")
    with pytest.raises(ValueError, match="d.jsonl, line 2: not valid JSON"): preference_dataset(f, tiny[1])


def test_jsonl_file_is_read(tiny, rows, tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(preference_dataset(f, tiny[1])) == len(rows)


def test_truncation_applies_alike_and_can_be_refused(tiny):
    _, tok = tiny
    row = {"prompt": "one two three four five six seven eight", "chosen": " a" * 40, "rejected": " b" * 30}
    t = tokenize_row(row, tok, max_length=20, max_prompt_length=5)
    assert len(t["prompt_ids"]) == 5 and len(t["chosen_ids"]) == 15 and len(t["rejected_ids"]) == 15
    full = tok(row["prompt"])["input_ids"]
    assert t["prompt_ids"] == full[-5:]  # the prompt keeps its end
    assert t["chosen_ids"] == tok(row["chosen"], add_special_tokens=False)["input_ids"][:15]  # responses keep their start
    with pytest.raises(DataError, match="row 4: prompt has 8 tokens, more than max_prompt_length=5"):
        tokenize_row(row, tok, max_prompt_length=5, truncation=False, i=4)
    with pytest.raises(DataError, match="longer than max_length=20"):
        tokenize_row(row, tok, max_length=20, max_prompt_length=10, truncation=False)


def test_standard_rows_get_eos_and_conversational_rows_get_the_template(tiny):
    _, tok = tiny
    std = tokenize_row({"prompt": "Hi", "chosen": " Hello!", "rejected": " Go."}, tok)
    assert std["chosen_ids"][-1] == tok.eos_token_id and std["rejected_ids"][-1] == tok.eos_token_id
    conv = tokenize_row(CONV, tok)
    assert tok.decode(conv["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert tok.decode(conv["chosen_ids"]) == "You are doing great.<|im_end|>\n"


def test_implicit_prompt_is_extracted(tiny):
    _, tok = tiny
    implicit = {"chosen": CONV["prompt"] + CONV["chosen"], "rejected": CONV["prompt"] + CONV["rejected"]}
    assert tokenize_row(implicit, tok) == tokenize_row(CONV, tok)


def test_collator_layout(tiny, rows):
    _, tok = tiny
    ds = list(preference_dataset(rows[:3], tok))
    batch = PreferenceCollator(tok.pad_token_id)(ds)
    B, R = 3, batch["response_mask"].shape[1]
    assert batch["input_ids"].shape[0] == 2 * B
    for i, e in enumerate(ds):
        for j, side in enumerate(("chosen", "rejected")):
            row, am, rm = batch["input_ids"][j * B + i], batch["attention_mask"][j * B + i], batch["response_mask"][j * B + i]
            n = len(e[f"{side}_ids"])
            assert row[-R:][:n].tolist() == e[f"{side}_ids"] and rm.sum() == n and rm[:n].all()
            assert row[am.bool()].tolist() == e["prompt_ids"] + e[f"{side}_ids"]


def test_numeric_extras_pass_through(tiny, rows):
    _, tok = tiny
    ds = list(preference_dataset([dict(r, margin=float(i), annotator_id=i % 2) for i, r in enumerate(rows[:4])], tok))
    batch = PreferenceCollator(tok.pad_token_id)(ds)
    assert batch["margin"].tolist() == [0.0, 1.0, 2.0, 3.0] and batch["annotator_id"].tolist() == [0, 1, 0, 1]


def test_precomputed_reference_is_saved_with_the_dataset(tiny, rows, tmp_path):
    from datasets import load_from_disk
    model, tok = tiny
    ds = precompute_ref_logps(preference_dataset(rows, tok), model, tok.pad_token_id, batch_size=3)
    ds.save_to_disk(str(tmp_path / "ds"))
    again = load_from_disk(str(tmp_path / "ds"))
    assert again["ref_chosen_logps"] == ds["ref_chosen_logps"] and len(again) == len(rows)
