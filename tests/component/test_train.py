"""The Ray-free trainer: per-epoch reports, determinism, bit-identical resume, non-finite loss, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moesweep.checkpoint import CheckpointError, load_model, load_state
from moesweep.config import TrialCfg, TrainCfg, from_dict
from moesweep.data import load_data
from moesweep.train import NonFiniteLossError, TrialRunner, lr_at, train_trial

SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "balance_loss", "lr")


def cfg_of(kind: str = "sparse", epochs: int = 3, **train) -> TrialCfg:
    return from_dict(TrialCfg, {
        "data": {"name": "synthetic", "synthetic_size": 96, "synthetic_image_size": 8, "augment": True,
                 "crop_padding": 1},
        "backbone": {"name": "cnn", "width": 4},
        "head": {"kind": kind, "hidden": 32, "num_experts": 4, "top_k": 2, "dropout": 0.1},
        "train": {"epochs": epochs, "batch_size": 32, "lr": 0.05, **train}, "seed": 3})


def history(res) -> list[tuple]:
    return [tuple(m[k] for k in SCALARS) for m in res.history]


@pytest.mark.parametrize("kind", ["dense", "soft", "sparse"])
def test_reports_once_per_epoch_with_metrics(kind: str, tmp_path: Path) -> None:
    cfg = cfg_of(kind)
    calls: list = []
    res = train_trial(cfg, load_data(cfg.data), report=lambda m, c: calls.append((m, c)),
                      checkpoint_dir=tmp_path)
    assert [m["epoch"] for m, _ in calls] == [0, 1, 2]
    assert all(c == str(tmp_path) for _, c in calls)
    m = calls[-1][0]
    assert 0 <= m["val_acc"] <= 1 and m["images_per_s"] > 0 and m["epoch_s"] > 0
    if kind == "dense":
        assert "val_route_entropy" not in m
    else:
        assert 0 <= m["val_route_entropy"] <= 1 and len(m["val_load"]) == 4
        assert abs(sum(m["train_load"]) - 1) < 1e-9
    assert res.epochs_done == 3 and res.best_val_acc == max(x["val_acc"] for x, _ in calls)
    assert res.params > res.head_params > 0 and res.active_head_macs > 0


def test_same_seed_same_metrics() -> None:
    cfg = cfg_of()
    a = train_trial(cfg, load_data(cfg.data))
    b = train_trial(cfg, load_data(cfg.data))
    assert history(a) == history(b) and a.test_acc == b.test_acc
    other = train_trial(cfg_of().__class__(**{**cfg.__dict__, "seed": 4}), load_data(cfg.data))
    assert history(other) != history(a)


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    cfg = cfg_of(epochs=4)
    data = load_data(cfg.data)
    full = train_trial(cfg, data)
    # run 2 epochs, checkpoint, then resume in a fresh runner (fresh RNG states get overwritten)
    runner = TrialRunner(cfg, data)
    for _ in range(2):
        runner.run_epoch()
    runner.save(tmp_path / "ckpt")
    torch.manual_seed(12345)  # disturb the global RNG: the checkpoint must restore it
    resumed = train_trial(cfg, data, resume=tmp_path / "ckpt")
    assert history(resumed) == history(full)
    assert resumed.test_acc == full.test_acc and resumed.best_epoch == full.best_epoch


def test_nonfinite_loss_names_epoch_and_step() -> None:
    cfg = cfg_of(kind="dense", lr=1e8)
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        train_trial(cfg, load_data(cfg.data))


def test_checkpoint_rebuilds_best_model(tmp_path: Path) -> None:
    cfg = cfg_of()
    data = load_data(cfg.data)
    res = train_trial(cfg, data, checkpoint_dir=tmp_path)
    model, cfg2, state = load_model(tmp_path)
    assert cfg2 == cfg and state["best_epoch"] == res.best_epoch
    with torch.no_grad():
        acc = (model(data.test_x)[0].argmax(1) == data.test_y).float().mean().item()
    assert acc == pytest.approx(res.test_acc)


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_state(tmp_path / "missing")
    bad = tmp_path / "state.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_state(bad)
    torch.save({"hello": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a moesweep checkpoint"):
        load_state(bad)


def test_lr_schedules() -> None:
    multi = TrainCfg(epochs=50, lr=0.1, schedule="multistep", milestones=(30, 40), gamma=0.1)
    assert [lr_at(multi, e) for e in (0, 29.9, 30, 40)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    cos = TrainCfg(epochs=10, lr=0.1, schedule="cosine", warmup_epochs=2)
    assert lr_at(cos, 1.0) == pytest.approx(0.1 * 1.001 / 2)  # linear warm-up
    assert lr_at(cos, 2.0) == pytest.approx(0.1) and lr_at(cos, 10.0) == pytest.approx(0.0)
    assert lr_at(cos, 6.0) == pytest.approx(0.05)  # half-way through the cosine
