"""Report info frames, text and page helpers against the fixture's known numbers (tests/fixtures/make_results.py).

Fixture arithmetic used below: a config's seeds are base + (-0.004, 0, +0.004), so mean = base and
std = 0.004; the 95% t half-width is t_{0.975,2} * 0.004 / sqrt(3) = 4.302653 * 0.0023094 = 0.0099365.
Test accuracy = validation - 0.003 + offset / 2 (mean base - 0.003, std 0.002).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import stats as st

from moesweep.report import analysis_info as ai
from moesweep.report import info
from moesweep.report.build import export_png
from moesweep.report.page import Fig, table
from moesweep.report.summary import summary_table
from moesweep.report.text import comparison_sentence, findings, fmt_interval, fmt_mean_ci
from tests.fixtures.make_results import BEST, VAL_BASE, make_results

HALF = 4.302653 * 0.004 / math.sqrt(3)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return info.load_results(make_results(tmp_path_factory.mktemp("full")))


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    return info.load_results(make_results(tmp_path_factory.mktemp("one"), with_analysis=False, seeds=1))


def test_status_counts_and_config_stats(full):
    counts = dict(zip(*info.status_counts(full["trials"]).to_dict("list").values()))
    assert counts == {"done": 18, "error": 1}
    cs = info.config_stats(full["trials"]).set_index("config_id")
    assert list(cs.index) == ["d0", "d1", "s0", "s1", "p0", "p1"]  # dense, soft, sparse order
    for cid, base in VAL_BASE.items():
        assert cs.loc[cid, "n"] == 3  # the failed 4th seed of p1 is not counted
        assert cs.loc[cid, "val_mean"] == pytest.approx(base)
        assert cs.loc[cid, "val_std"] == pytest.approx(0.004)
        assert cs.loc[cid, "val_hi"] - base == pytest.approx(HALF, rel=1e-5)
        assert cs.loc[cid, "test_mean"] == pytest.approx(base - 0.003)
    assert cs.loc["p1", "label"] == "sparse E=8 k=2 w=0.01"
    assert cs.loc["d0", "label"] == "dense (d0)"  # two dense configs: the id tells them apart


def test_best_configs_picks_highest_mean(full):
    best = info.best_configs(full["trials"])
    assert list(best["config_id"]) == list(BEST)


def _trials(rows):
    return pd.DataFrame([{"head": "sparse", "status": "done", "num_experts": 4, "top_k": 1, "balance_weight": 0.0,
                          "balance_loss": "none", "test_acc": 0.5, **r} for r in rows])


def test_best_configs_tie_breaks_on_seeds_then_std():
    # a: 2 seeds mean 0.8; b: 3 seeds mean 0.8 -> b (more seeds).
    t = _trials([{"config_id": "a", "best_val_acc": v} for v in (0.79, 0.81)]
                + [{"config_id": "b", "best_val_acc": v} for v in (0.78, 0.80, 0.82)])
    assert info.best_configs(t)["config_id"].tolist() == ["b"]
    # Same seeds and mean, std 0.01 vs 0.02 -> the steadier one.
    t = _trials([{"config_id": "wide", "best_val_acc": v} for v in (0.78, 0.80, 0.82)]
                + [{"config_id": "tight", "best_val_acc": v} for v in (0.79, 0.80, 0.81)])
    assert info.best_configs(t)["config_id"].tolist() == ["tight"]


def test_compare_to_baseline_matches_welch_and_means(full):
    cmp = info.compare_to_baseline(full["trials"], n_boot=2000).set_index("head")
    assert list(cmp.index) == ["soft", "sparse"]
    done = info.completed(full["trials"])
    sparse = done.loc[done["config_id"] == "p1", "test_acc"]
    dense = done.loc[done["config_id"] == "d1", "test_acc"]
    # 0.877 - 0.867 = 0.010
    assert cmp.loc["sparse", "diff"] == pytest.approx(0.010)
    assert cmp.loc["sparse", "lo"] < 0.010 < cmp.loc["sparse", "hi"]
    assert cmp.loc["sparse", "p"] == pytest.approx(st.ttest_ind(sparse, dense, equal_var=False).pvalue)
    sig = cmp.loc["sparse", "significant"]
    assert sig is not None and not sig  # p = 0.11 with 3 seeds


def test_one_seed_gives_na_not_numbers(one_seed):
    best = info.best_configs(one_seed["trials"])
    assert best["n"].tolist() == [1, 1, 1] and best["val_lo"].isna().all()
    cmp = info.compare_to_baseline(one_seed["trials"])
    assert cmp["p"].isna().all() and cmp["significant"].isna().all()
    s = comparison_sentence(cmp.iloc[1], best.iloc[2], best.iloc[0])
    assert "(CI n/a)" in s and "not testable" in s and "1 seed)" in s


def test_hparam_points_and_effects(full):
    pts = info.hparam_points(full["trials"])
    assert "dense" not in set(pts["head"])
    assert "top_k" not in set(pts.loc[pts["head"] == "soft", "param"])  # soft has no top-k
    eff = info.hparam_effects(full["trials"]).set_index(["head", "param", "value"])
    # sparse w=0.01 pools p0 and p1: 6 trials, mean test (0.869 + 0.877) / 2 = 0.873.
    row = eff.loc[("sparse", "balance_weight", 0.01)]
    assert (row["n"], row["n_configs"]) == (6, 2)
    assert row["mean"] == pytest.approx(0.873)


def test_epoch_curves_end_at_best_val(full):
    best = info.best_configs(full["trials"])
    curves = info.epoch_curves(full["epochs"], best)
    last = curves[(curves["metric"] == "val_acc") & (curves["epoch"] == 3)].set_index("config_id")
    for cid in BEST:  # the fixture's curve reaches best_val_acc at the last epoch
        assert last.loc[cid, "mean"] == pytest.approx(VAL_BASE[cid])
        band = (last.loc[cid, "lo"], last.loc[cid, "hi"])
        assert band == pytest.approx((VAL_BASE[cid] - 0.004, VAL_BASE[cid] + 0.004))
        assert last.loc[cid, "n"] == 3


def test_expert_load_relative_to_uniform(full):
    moe = info.best_configs(full["trials"]).query("head != 'dense'")
    load = ai.expert_load(full["experts"], moe)
    sums = load.groupby(["config_id", "epoch"])["rel_load"].sum()
    assert np.allclose(sums, 8)  # 8 experts, mean relative load 1
    # Epoch 0: shares proportional to exp(-i), expert 0 gets 1 / sum_i exp(-i) of the load.
    first = load[(load["config_id"] == "p1") & (load["epoch"] == 0) & (load["expert"] == 0)]["rel_load"].item()
    assert first == pytest.approx(8 / np.exp(-np.arange(8)).sum())


def test_expert_class_share_columns_sum_to_one(full):
    moe = info.best_configs(full["trials"]).query("head != 'dense'")
    share = ai.expert_class_share(full["expert_class"], moe)
    assert np.allclose(share.groupby(["config_id", "label"])["share"].sum(), 1.0)
    # E=8: class c goes to expert c % 8 with count 40, to the 7 others with 3 each -> 40 / 61.
    hit = share[(share["config_id"] == "s1") & (share["label"] == 9) & (share["expert"] == 1)]["share"].item()
    assert hit == pytest.approx(40 / 61)


def test_dead_experts_at_last_epoch(full):
    dead = ai.dead_experts(full["epochs"], full["trials"])
    per = dead.groupby("config_id")["dead"].mean().to_dict()
    assert per == {"s0": 0.0, "s1": 0.0, "p0": 1.0, "p1": 0.0}


def test_sharpness_spectrum_landscape(full):
    sh = ai.sharpness_info(full["sharpness"]).set_index(["head", "split"])
    # dense lambda_max = (20 + 0.5 * seed) * 1.3 on test: mean 20.5 * 1.3 = 26.65
    assert sh.loc[("dense", "test"), "lambda_mean"] == pytest.approx(26.65)
    assert sh.loc[("dense", "test"), "n"] == 3
    assert sh.loc[("dense", "test"), "lambda_resid"] == pytest.approx(0.02 * 26.65)
    lines = ai.spectrum_lines(full["spectrum"])
    assert len(lines) == 60 * len(full["spectrum"])
    land = ai.landscape_info(full["landscape"])
    at0 = land[land["alpha"].abs() < 1e-12].set_index(["head", "split", "direction_kind"])
    assert np.allclose(at0["loss_mean"], 0.3)
    assert at0.loc[("sparse", "test", "random"), "n"] == 6  # 3 seeds x 2 random directions
    assert at0.loc[("dense", "test", "eigvec"), "flip_mean"] != at0.loc[("dense", "test", "eigvec"), "flip_mean"]
    checks = ai.landscape_checks_info(full["landscape_checks"])
    assert np.allclose(checks["ratio"], 0.97)


def test_latency_and_speedup(full):
    lat = ai.latency_info(full["latency"])
    assert set(lat["series"]) == {"Dense", "SoftMoE", "SparseMoE · batched", "SparseMoE · naive"}
    sp = ai.sparse_speedup(full["latency"]).set_index(["dispatch", "batch_size"])
    # batch 256: soft 0.2 + 0.05 * 256 = 13.0 ms, sparse batched 0.2 + 0.015 * 256 = 4.04 ms.
    assert sp.loc[("batched", 256), "speedup"] == pytest.approx(13.0 / 4.04)


def test_formatting_and_the_briefs_example_sentence():
    assert fmt_mean_ci(0.874, 0.871, 0.877) == "87.4 ± 0.3%"
    assert fmt_mean_ci(0.874, float("nan"), float("nan")) == "87.4% (CI n/a)"
    assert fmt_interval(-0.001, 0.007) == "[\u22120.1, +0.7]"
    cmp = pd.Series({"head": "sparse", "metric": "test_acc", "n": 5, "n_base": 5, "mean": 0.874, "base_mean": 0.871,
                     "diff": 0.003, "lo": -0.001, "hi": 0.007, "p": 0.21, "significant": False})
    own = pd.Series({"test_mean": 0.874, "test_lo": 0.871, "test_hi": 0.877})
    base = pd.Series({"test_mean": 0.871, "test_lo": 0.869, "test_hi": 0.873})
    assert comparison_sentence(cmp, own, base) == (
        "SparseMoE test accuracy 87.4 ± 0.3% vs dense 87.1 ± 0.2% (5 seeds): difference +0.3 points, "
        "95% CI [\u22120.1, +0.7], p = 0.21 (Welch), not significant.")


def test_findings_carry_numbers_and_skip_missing(full, one_seed):
    t = full["trials"]
    best = info.best_configs(t)
    lines = findings(t, best, info.compare_to_baseline(t, n_boot=500), ai.sharpness_info(full["sharpness"]),
                     ai.sparse_speedup(full["latency"]), ai.dead_experts(full["epochs"], t))
    text = "\n".join(lines)
    assert "1 of 19 trials did not complete" in text
    assert "SparseMoE test accuracy 87.7 ± 1.5% vs dense 86.7 ± 1.5% (3 seeds)" in text
    assert "3.22× faster" in text
    t1 = one_seed["trials"]
    lines1 = findings(t1, info.best_configs(t1), info.compare_to_baseline(t1), ai.sharpness_info(one_seed["sharpness"]),
                      ai.sparse_speedup(one_seed["latency"]), ai.dead_experts(one_seed["epochs"], t1))
    assert not any("λmax" in s or "faster" in s for s in lines1)


def test_empty_results_dir(tmp_path):
    R = info.load_results(tmp_path)
    assert R.manifest == {} and all(df.empty for df in R.tables.values())
    assert info.best_configs(R["trials"]).empty and info.compare_to_baseline(R["trials"]).empty
    assert info.epoch_curves(R["epochs"], info.best_configs(R["trials"])).empty
    assert ai.latency_info(R["latency"]).empty and ai.sparse_speedup(R["latency"]).empty
    assert findings(R["trials"], info.best_configs(R["trials"]), info.compare_to_baseline(R["trials"]),
                    ai.sharpness_info(R["sharpness"]), ai.sparse_speedup(R["latency"]),
                    ai.dead_experts(R["epochs"], R["trials"])) == ["No trials were recorded: run the sweep first."]


def test_build_report_on_empty_dir_says_what_is_missing(tmp_path):
    from moesweep.report import build_report

    html = build_report(tmp_path, png=True).read_text()
    for sid in ("overview", "accuracy", "hyperparameters", "learning-curves", "utilization", "sharpness",
                "landscape", "latency", "findings"):
        assert f'<section id="{sid}">' in html
    assert "manifest.json is missing" in html and "No completed trials" in html
    assert "No trials were recorded" in html


def test_table_escapes_data():
    html = table(pd.DataFrame({"a": ["<img src=x onerror=alert(1)>"], "b": [1.5]}), {"a": "A & B", "b": "b"})
    assert "<img" not in html and "&lt;img src=x" in html and "A &amp; B" in html


def test_png_export_says_how_to_fix(monkeypatch, tmp_path):
    import plotly.graph_objects as go

    from moesweep.report import build

    import sys
    import types

    said: list[str] = []
    monkeypatch.setitem(sys.modules, "kaleido", types.ModuleType("kaleido"))  # installed or not
    monkeypatch.setattr(build, "find_browser", lambda: None)
    assert export_png([Fig("x", go.Figure())], tmp_path, said.append) == []
    assert len(said) == 1 and "apt-get install chromium" in said[0]
    said.clear()
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido -> ImportError
    assert export_png([Fig("x", go.Figure())], tmp_path, said.append) == []
    assert len(said) == 1 and "pip install kaleido" in said[0]


def test_summary_table(full, one_seed):
    t = summary_table(full.dir)
    headers = [c.header for c in t.columns]
    assert headers[:5] == ["head", "configuration", "seeds", "val acc", "test acc"]
    assert {"λmax (test)", "trace (test)", "latency"} <= set(headers)
    con = Console(record=True, width=200)
    con.print(t)
    out = con.export_text()
    assert "SparseMoE" in out and "88.0 ± 1.0%" in out and "4.04 ms @ 256" in out
    assert [c.header for c in summary_table(one_seed.dir).columns][-1] == "test acc"  # no analysis columns
