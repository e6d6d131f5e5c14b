"""Latency records of real models (small CNN + dense / sparse heads): shape, FLOP accounting, restores."""

from __future__ import annotations

import pytest
import torch

from moesweep.analysis import latency
from moesweep.analysis.latency import Timing, count_flops, measure_latency, time_call, torch_threads
from moesweep.config import BackboneCfg, HeadCfg, TrialCfg
from moesweep.models import build_model

FAST = Timing(warmup=1, min_repeats=3, max_repeats=6, budget_s=0.5)
KEYS = {"head", "dispatch", "device", "device_type", "threads", "torch_version", "scope", "batch_size",
        "median_ms", "p10_ms", "p90_ms", "images_per_s", "flops", "active_flops", "n_repeats"}


def model(kind: str, **head):
    torch.manual_seed(0)
    cfg = TrialCfg(backbone=BackboneCfg(name="cnn", width=4),
                   head=HeadCfg(kind=kind, hidden=16, expert_hidden=8, **head))
    return build_model(cfg, in_channels=3, image_size=8, num_classes=5)


def test_sparse_head_records_both_dispatches_and_restores_state():
    net = model("sparse", num_experts=4, top_k=2, dispatch="naive").train()
    with torch_threads(2):  # timed at 1 thread, torch's setting (2 here) restored afterwards
        recs = measure_latency(net, image_shape=(3, 8, 8), batch_sizes=(1, 16), threads=1, timing=FAST,
                               head_name="sparse")
        assert torch.get_num_threads() == 2
    assert len(recs) == 2 * 2 * 2  # scopes x batch sizes x dispatches
    assert {(r["scope"], r["batch_size"], r["dispatch"]) for r in recs} == {
        (s, b, d) for s in ("head", "end_to_end") for b in (1, 16) for d in ("batched", "naive")}
    assert net.head.dispatch == "naive"
    assert all(m.training for m in net.modules())
    for r in recs:
        assert set(r) == KEYS and r["threads"] == 1 and r["torch_version"] == torch.__version__
        assert r["head"] == "sparse" and r["device_type"] == "cpu"
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and 3 <= r["n_repeats"] <= 6
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / r["median_ms"] * 1e3)
    head = {(r["dispatch"], r["batch_size"]): r for r in recs if r["scope"] == "head"}
    for b in (1, 16):
        # Every sample runs the router and exactly top_k experts: the naive loop executes just that;
        # the batched path pads each expert's group to the largest, so it counts at least as many.
        assert head["naive", b]["flops"] == head["naive", b]["active_flops"] == 2 * net.head.active_macs() * b
        assert head["batched", b]["flops"] >= head["batched", b]["active_flops"]
    e2e = [r for r in recs if r["scope"] == "end_to_end" and r["dispatch"] == "naive"]
    x = torch.randn(16, 3, 8, 8)
    backbone = count_flops(lambda: net.backbone(x))
    assert backbone > 0
    head_macs = net.head.active_macs()
    assert [r["active_flops"] for r in e2e] == [backbone // 16 * b + 2 * head_macs * b for b in (1, 16)]


def test_dense_head_has_no_dispatch_and_flops_match():
    net = model("dense")
    recs = measure_latency(net, batch_sizes=(4,), scopes=("head",), timing=FAST, threads=None)
    (r,) = recs
    assert r["dispatch"] is None and r["head"] == "DenseHead" and r["threads"] == torch.get_num_threads()
    assert r["flops"] == r["active_flops"] == 2 * net.head.active_macs() * 4


def test_invalid_arguments_are_rejected():
    net = model("dense")
    with pytest.raises(ValueError, match="image_shape"):
        measure_latency(net, scopes=("end_to_end",), timing=FAST)
    with pytest.raises(ValueError, match="move it first"):
        measure_latency(net, device="meta", scopes=("head",), timing=FAST)


@pytest.mark.parametrize("clock, expected", [("rising", 10), ("steady", 8)])
def test_time_call_stops_when_median_is_stable_or_at_the_cap(monkeypatch, clock, expected):
    # Scripted per-call times: rising ones never give a stable median, so the loop runs to
    # max_repeats; constant ones are stable after the second chunk of min_repeats.
    ticks = iter(range(1, 100))
    monkeypatch.setattr(latency, "_time_once", lambda fn, device: float(next(ticks)) if clock == "rising" else 1.0)
    calls = []
    times = time_call(lambda: calls.append(1), torch.device("cpu"),
                      Timing(warmup=2, min_repeats=4, max_repeats=10, budget_s=60, rtol=0.01))
    assert len(times) == expected and len(calls) == 2  # only the warm-up reached fn itself
