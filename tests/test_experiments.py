"The experiment helper's statistics against scipy, and its verdicts."
import math
import pytest
from hypothesis import given, settings, strategies as st
from rlhf_ref.experiments import compare, run_seeds, summarize, t_quantile

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 30, 200])
@pytest.mark.parametrize("p", [0.9, 0.95, 0.975, 0.995, 0.1])
def test_t_quantile_matches_scipy(p, df):
    assert abs(t_quantile(p, df) - scipy_stats.t.ppf(p, df)) < 2e-3 * max(1, abs(scipy_stats.t.ppf(p, df)))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=12))
def test_summary_interval_matches_scipy(values):
    s = summarize(values)
    sem = scipy_stats.sem(values)
    if sem == 0 or not math.isfinite(sem): assert s.low == s.high == s.mean or abs(s.high - s.low) < 1e-9; return
    lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values), scale=sem)
    assert abs(s.low - lo) < 1e-3 * (1 + abs(lo)) and abs(s.high - hi) < 1e-3 * (1 + abs(hi))


def test_verdicts():
    runs = lambda vals: [{"seed": i, "m": v} for i, v in enumerate(vals)]
    assert compare(runs([1.0, 1.1, 0.9]), runs([0.0, 0.1, -0.1]), "m").verdict == "shown"
    assert compare(runs([1.0, 1.1, 0.9]), runs([0.0, 0.1, -0.1]), "m", higher_is_better=False).verdict == "not shown"
    assert compare(runs([1.0, 0.0, 2.0]), runs([1.0, 1.0, 1.0]), "m").verdict == "could not tell"
    tight_null = compare(runs([1.0, 1.01, 0.99]), runs([1.0, 1.0, 1.0]), "m", min_effect=0.2)
    assert tight_null.verdict == "not shown" and tight_null.wins == 1
    with pytest.raises(ValueError, match="different seeds"): compare(runs([1, 2]), runs([1, 2, 3]), "m")


def test_run_seeds_is_deterministic_and_records_seeds():
    import random
    a = run_seeds(lambda s: {"x": random.random()}, seeds=[3, 4], progress=False)
    b = run_seeds(lambda s: {"x": random.random()}, seeds=[3, 4], progress=False)
    assert a == b and [r["seed"] for r in a] == [3, 4] and a[0]["x"] != a[1]["x"]


def test_one_seed_gives_no_verdict():
    "One seed has no interval: however large the difference, the verdict is 'could not tell'."
    from rlhf_ref.experiments import compare
    c = compare([{"seed": 0, "x": 0.9}], [{"seed": 0, "x": 0.1}], "x")
    assert c.verdict == "could not tell" and c.wins == 1
