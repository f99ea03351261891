"""Decisions: the reading of an interval, the calibrated looks, P(A > B), the budget ledger."""
import json
import math

import numpy as np
import pytest

from app.study.decide import (
    Plan,
    classify,
    critical_value,
    critical_values,
    decide,
    ordinal,
    p_outperform,
    parse_margin,
)
from app.study.ledger import Ledger, parse_budget, unit_estimate
from app.study.simulation import UnitModel, fit, intervals, outcome, run_fixed, run_sequential, unit_gaps, unit_images
from app.util.errors import UserError


@pytest.mark.parametrize("lo, hi, verdict", [
    (-3.0, -0.5, "hurts"),
    (-5.0, -2.5, "hurts by 2 or more"),
    (-1.5, -0.5, "hurts"),                   # also below D and above -D: hurts comes first
    (2.5, 4.0, "helps by 2 or more"),
    (0.5, 1.5, "helps, by less than 2"),
    (0.5, 3.0, "helps"),
    (-3.0, 1.5, "cannot help by 2"),
    (-1.0, 1.5, "equivalent within ±2"),
    (-1.0, 3.0, "undecided"),
    (0.0, 1.5, "equivalent within ±2"),      # touching 0 is not above it
    (-1.0, 2.0, "undecided"),                # touching D is not below it
])
def test_an_interval_reads_as_one_decision_in_order(lo, hi, verdict):
    assert classify(lo, hi, 2.0) == verdict


def test_looks_are_named_in_english():
    assert [ordinal(n) for n in (5, 11, 12, 13, 21, 22, 23, 40, 111)] == \
        ["5th", "11th", "12th", "13th", "21st", "22nd", "23rd", "40th", "111th"]
    assert "from the 5th to the 21st" in Plan(21).describe()


def test_no_decision_from_fewer_than_five_units():
    d = decide([9.0, 10.0, 11.0, 10.5], margin=2.0)
    assert d.verdict == "undecided" and d.more_units == 1 and d.lo is None
    assert decide([9.0, 10.0, 11.0, 10.5, 9.5], margin=2.0).verdict == "helps by 2 or more"


def test_the_decision_is_the_first_decided_looks_and_stays():
    gaps = [-0.2, 0.1, -0.1, 0.0, 0.2] + [6.0, 7.0, 8.0]  # decided at 5; later units disagree
    d = decide(gaps, margin=2.0, plan=Plan(max_units=20))
    assert d.units == 5 and d.verdict == "equivalent within ±2"


def test_undecided_projects_the_units_it_would_take():
    gaps = [-2.0, 3.0, -1.0, 2.5, 0.5, -1.5]
    d = decide(gaps, margin=2.0)
    assert d.verdict == "undecided" and d.more_units >= 1
    sd, n = np.std(gaps, ddof=1), len(gaps)
    room = max(np.mean(gaps), 2.0 - np.mean(gaps))
    assert n + d.more_units == math.ceil((d.c * sd / room) ** 2)


def test_a_sequential_projection_uses_the_plans_own_later_looks():
    gaps = [1.9, 0.0, 1.7, -1.4, -0.6]  # the shape of five real units: sd ~1.4, mean ~0.3
    plan = Plan(20)
    d = decide(gaps, margin=2.0, plan=plan)
    assert d.verdict == "undecided"
    sd, room = np.std(gaps, ddof=1), 2.0 - np.mean(gaps)
    k = 5 + d.more_units
    assert plan.critical_value(k) * sd / math.sqrt(k) < room
    assert plan.critical_value(k - 1) * sd / math.sqrt(k - 1) >= room
    assert k < math.ceil((d.c * sd / room) ** 2)  # the 5th look's c would overstate it


def test_an_open_loss_is_projected_on_its_own_and_sooner():
    gaps = [2.5, 0.0, 3.3, 2.5, -0.3, -2.7, -1.9]  # seven real bf16 - float32 units
    plan = Plan(40)
    d = decide(gaps, margin=1.0, plan=plan)
    assert d.verdict == "undecided" and d.lo < -1.0
    sd, room = np.std(gaps, ddof=1), np.mean(gaps) + 1.0
    k = 7 + d.more_units_no_loss
    assert plan.critical_value(k) * sd / math.sqrt(k) < room
    assert plan.critical_value(k - 1) * sd / math.sqrt(k - 1) >= room
    assert d.more_units_no_loss < d.more_units
    ruled_out = decide([2.0, -0.5, 1.5, -0.8, 1.0, 0.0], margin=1.0)
    assert ruled_out.verdict == "undecided" and ruled_out.lo > -1.0
    assert ruled_out.more_units_no_loss is None
    assert decide([-2.0, -1.5, 1.0, -3.0, 0.5], margin=1.0).more_units_no_loss is None  # mean -1


def test_one_look_is_the_t_interval_and_many_looks_widen_it():
    assert critical_value(5, 5) == pytest.approx(2.776, abs=0.02)
    assert critical_value(10, 10) == pytest.approx(2.262, abs=0.02)
    c = critical_values(5, 20)
    assert len(c) == 16 and all(a > b for a, b in zip(c, c[1:]))  # fewer df early: wider
    assert c[0] > critical_value(5, 5) and c[-1] > critical_value(20, 20)


def test_p_outperform_is_never_certain_from_a_few_units():
    two = p_outperform([1.4, 0.3])
    assert two["p"] == 1.0 and two["ci"][0] < 0.5 and two["ci"][1] == 1.0
    many = p_outperform([1.0] * 30)
    assert many["ci"][0] > 0.85
    assert p_outperform([1.0, -1.0, 0.0, 0.0])["p"] == 0.5  # ties count half


@pytest.mark.parametrize("text", ["-1", "abc", "nan", "inf", ""])
def test_margin_must_be_a_number_of_zero_or_more(text):
    with pytest.raises(UserError, match="--margin"):
        parse_margin(text)
    assert parse_margin("1.5") == 1.5 and parse_margin(None) is None


def test_the_vectorised_replay_equals_decide():
    rng = np.random.default_rng(3)
    gaps = unit_gaps(UnitModel(), 1.0, 40, 12, rng)
    plan = Plan(12)
    verdicts, used = run_sequential(gaps, 2.0, plan)
    for row, verdict, n in zip(gaps, verdicts, used):
        d = decide(row, 2.0, plan)
        assert d.verdict == verdict and (not d.decided or d.units == n)
    fixed = run_fixed(gaps, 2.0, 8)
    assert list(fixed) == [decide(row[:8], 2.0).verdict for row in gaps]


def test_the_looks_keep_their_error_bounds_on_generated_studies():
    """Over all looks from 5 to 12 units: a zero gap is called helps/hurts at most 5% of the
    time, a gap of D "cannot help by D" at most 2.5% (allowing Monte Carlo error); a plain
    95% t interval checked at every look errs far more often."""
    rng, plan, studies = np.random.default_rng(11), Plan(12), 1500
    zero = unit_gaps(UnitModel(), 0.0, studies, 12, rng)
    verdicts, used = run_sequential(zero, 2.0, plan)
    false_claims = np.mean([outcome(v) in ("helps", "hurts") for v in verdicts])
    assert false_claims <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / studies)
    assert used.min() >= 5
    at_d = unit_gaps(UnitModel(), 2.0, studies, 12, rng)
    verdicts, _ = run_sequential(at_d, 2.0, plan)
    assert np.mean([outcome(v) == "cannot help" for v in verdicts]) <= \
        0.025 + 3 * math.sqrt(0.025 * 0.975 / studies)
    every_look = Plan(12)
    naive = np.zeros(studies, bool)
    for n in every_look.looks(12):
        naive |= np.array([outcome(v) in ("helps", "hurts") for v in run_fixed(zero, 2.0, n)])
    assert naive.mean() > 0.08


def test_a_loss_of_d_is_ruled_out_wrongly_at_most_half_the_level():
    """The mirror of "cannot help by D": a true gap of -D has its interval's lower end above -D
    at some look at most 2.5% of the time, so an undecided report may say a loss of D is ruled
    out."""
    rng, plan, studies = np.random.default_rng(12), Plan(12), 4000
    _, _, lower, _ = intervals(unit_gaps(UnitModel(), -2.0, studies, 12, rng), plan)
    assert (lower > -2.0).any(axis=1).mean() <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / studies)


@pytest.mark.parametrize("lo, no_loss, said", [
    (-0.7, None, "; a loss of 1 point or more ruled out"),
    (-1.0, 4, "; ~4 more units would rule out a loss of 1 point"),
    (-1.4, 15, "; ~15 more units (past the plan's 40) would rule out a loss of 1 point")])
def test_an_undecided_row_says_where_a_loss_of_d_stands(lo, no_loss, said):
    from app.study.report import decisions_table
    row = {"model": "towernet_simam bf16", "against": "towernet_simam", "kind": "setting",
           "verdict": "undecided", "decided": False, "mean_pp": 0.3, "interval_pp": [lo, 1.3],
           "more_units": 28, "more_units_no_loss": no_loss, "units": 27,
           "p_outperform": {"p": 0.59, "ci": [0.41, 0.75], "units": 27},
           "cost": {"train_images_per_s": 1.74, "params": 1.0, "gmacs": 1.0}}
    rule = {"margin_pp": 1.0, "min_units": 5, "max_units": 40}
    line = decisions_table({"decision_rule": rule, "decisions": [row]})[2]
    assert "undecided: ~28 more units (past the plan's 40)" + said + " |" in line
    one_look = decisions_table({"decision_rule": dict(rule, max_units=None), "decisions": [row]})
    assert "past the plan" not in one_look[2]


def test_generated_images_carry_the_gap_and_the_fit_recovers_the_noise():
    rng = np.random.default_rng(5)
    model = UnitModel(images=400, discordant=0.1, unit_sd=0.0)
    a, b = unit_images(model, 3.0, 60, rng)
    gaps = [100 * (x.mean() - y.mean()) for x, y in zip(a, b)]
    assert np.mean(gaps) == pytest.approx(3.0, abs=0.5)
    assert np.std(gaps, ddof=1) == pytest.approx(model.gap_sd(), rel=0.25)
    report = {"models": [{"final_mean": 0.8, "vs_baseline": {
        "diffs_pp": gaps, "discordant": [int(sum((~x & y).sum() for x, y in zip(a, b))),
                                          int(sum((x & ~y).sum() for x, y in zip(a, b)))],
        "bootstrap_images": 400 * 60, "bootstrap_units": 60}}]}
    fitted = fit(report)
    assert fitted.images == 400 and fitted.discordant == pytest.approx(0.1, abs=0.01)
    assert fitted.unit_sd < 0.8


def test_budget_adds_up_over_invocations_and_estimates_from_whole_units(tmp_path):
    Ledger(tmp_path).start({"max_units": 20, "min_units": 5, "confidence": 0.95,
                            "margin_pp": 2.0, "budget_seconds": 100.0})
    Ledger(tmp_path).add_unit(0, 30.0, 2, 2)      # first invocation: a whole unit
    Ledger(tmp_path).add_unit(1, 12.0, 0, 2)      # interrupted: its time counts, no estimate
    data = Ledger(tmp_path).start({"max_units": 20, "min_units": 5, "confidence": 0.95,
                                   "margin_pp": 2.0, "budget_seconds": 100.0})  # resumed
    Ledger(tmp_path).add_unit(1, 20.0, 2, 2)      # the rest of unit 1
    data = Ledger(tmp_path).read()
    assert data["spent_seconds"] == pytest.approx(62.0)
    assert data["units"]["1"] == {"seconds": 32.0, "runs_trained": 2, "runs": 2}
    assert unit_estimate(data) == 32.0               # the median of the whole units (30, 32)
    assert unit_estimate({"units": {"0": {"seconds": 5.0, "runs_trained": 1, "runs": 2}}},
                         fallback=9.0) == 9.0
    plan, margin = Ledger(tmp_path).plan()
    assert plan == Plan(20) and margin == 2.0
    assert json.loads((tmp_path / "study.json").read_text())["plan"]["budget_seconds"] == 100.0


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("45s", 45),
                                           ("1.5h", 5400), ("600", 600)])
def test_budget_durations(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1h", "2d", "h", "nan", ""])
def test_bad_budget_is_one_line(text):
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)


def test_a_kfold_models_units_are_listed_by_seed_with_their_own_folds():
    from app.study.report import _units_text
    from app.study.summary import summarize
    rng = np.random.default_rng(0)
    runs = [{"model": model, "seed": seed, "fold": fold, "predictions": None,
             "rows": [{"eval_acc": float(rng.uniform(0.8, 0.9)), "train_images_per_s": 100.0,
                       "epoch_seconds": 10.0}]}
            for model in ("towernet", "towernet_simam") for fold in (2, 0, 1) for seed in (1, 0)]
    summary = summarize(runs, costs={})
    assert [_units_text(m) for m in summary["models"]] == ["s0 f0,1,2; s1 f0,1,2"] * 2


def test_a_setting_of_the_baseline_model_is_decided_once():
    from app.study.summary import summarize
    rng = np.random.default_rng(1)
    runs = [{"model": "towernet_simam" + (" bf16" if amp else ""), "seed": seed, "fold": None,
             "predictions": None,
             "rows": [{"epoch": 1, "eval_acc": float(rng.uniform(0.8, 0.9)),
                       "train_images_per_s": 100.0, "epoch_seconds": 10.0}]}
            for amp in (False, True) for seed in range(5)]
    rows = [(d["model"], d["against"], d["kind"]) for d in summarize(runs, costs={}, margin=1.0)["decisions"]]
    assert rows == [("towernet_simam bf16", "towernet_simam", "setting")]


def test_going_past_a_finished_plan_raises_its_error_and_the_script_says_so():
    # Each plan holds 5% on its own; the first spent it all by its last look, so looks added
    # after it (under a longer plan) can only add false calls.
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "experiments"))
    from plan_extension import false_calls

    rates = false_calls(8, 16, 40_000, seed=3)
    bound = 3 * math.sqrt(0.05 * 0.95 / 40_000)
    assert abs(rates["first"] - 0.05) < bound and abs(rates["last"] - 0.05) < bound
    assert rates["joined"] > rates["first"] + bound
    one_side = 3 * math.sqrt(0.025 * 0.975 / 40_000)
    assert abs(rates["first_one_side"] - 0.025) < one_side
    assert abs(rates["last_one_side"] - 0.025) < one_side
    assert rates["joined_one_side"] > rates["first_one_side"] + one_side


def test_a_running_study_prints_each_look_as_one_line():
    from app.study.report import decision_line
    gaps = [2.5, 0.0, 3.3, 2.5, -0.3, -2.7, -1.9]
    d = {"model": "resnet50 bf16", "against": "resnet50",
         **decide(gaps, margin=1.0, plan=Plan(40)).as_dict()}
    rule = {"margin_pp": 1.0, "min_units": 5, "max_units": 40}
    assert d["more_units"] > 33 and d["more_units_no_loss"] <= 33
    assert decision_line(d, rule) == (
        f"after 7 units: resnet50 bf16 vs resnet50: +0.5 (-3.1 to +4.1), undecided: "
        f"~{d['more_units']} more units (past the plan's 40); ~{d['more_units_no_loss']} more "
        f"units would rule out a loss of 1 point")
    d = {"model": "a", "against": "b", **decide([0.1, -0.2, 0.0, 0.2, -0.1], 2.0).as_dict()}
    assert decision_line(d, dict(rule, margin_pp=2.0)).endswith(", equivalent within ±2")
