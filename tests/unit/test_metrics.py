"""Utilization metrics on a 4-sample routing worked by hand (E = 3 experts, C = 2 classes, K = 1)."""

import math

import pytest
import torch

from moesweep.metrics import SCALARS, UtilizationMeter, entropy, nmi_from_counts, routing_metrics

PROBS = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
INDEX = torch.tensor([[0], [0], [1], [0]])
LABELS = torch.tensor([0, 0, 1, 1])
AUX = {"probs": PROBS, "gates": PROBS, "expert_index": INDEX, "balance_loss": torch.zeros(())}


def test_hand_worked_routing():
    m = routing_metrics(AUX, LABELS, num_classes=2)
    # load counts [3, 1, 0] -> fractions [0.75, 0.25, 0]
    assert m["load"] == pytest.approx([0.75, 0.25, 0.0])
    # mean 4/3; population variance ((5/3)² + (1/3)² + (4/3)²)/3 = 14/9 -> CV = (√14/3)/(4/3) = √14/4
    assert m["load_cv"] == pytest.approx(math.sqrt(14) / 4)  # 0.935414
    assert m["max_overload"] == pytest.approx(3 / (4 / 3))  # 2.25
    # expert 2 has no assignments; 0.1/E = 0.0333 catches only it
    assert m["dead_experts"] == 1 and m["near_dead_experts"] == 1
    # importance = column sums [2.1, 1.25, 0.65] / 4 = [0.525, 0.3125, 0.1625]
    assert m["importance"] == pytest.approx([0.525, 0.3125, 0.1625])
    # H(importance) = 0.338287 + 0.363485 + 0.295275 = 0.997047 nats; / ln 3 = 0.907551
    assert m["route_entropy"] == pytest.approx(0.907551, abs=1e-5)
    # per-sample H: 0.639032, 0.950271, 0.801819, 1.039721 -> mean 0.857711; / ln 3 = 0.780722
    assert m["sample_entropy"] == pytest.approx(0.780722, abs=1e-5)
    # (top-1 expert, label) counts: e0 <- labels 0, 0, 1; e1 <- label 1; e2 none
    assert m["expert_class"] == [[2, 1], [0, 1], [0, 0]]
    # joint [[.5, .25], [0, .25]], rows [.75, .25], cols [.5, .5]
    # MI = .5 ln(4/3) + .25 ln(2/3) + .25 ln 2 = 0.143841 − 0.101366 + 0.173287 = 0.215762
    # H_rows = 0.562335, H_cols = ln 2 = 0.693147 -> NMI = 0.215762 / 0.627741 = 0.343711
    assert m["expert_class_nmi"] == pytest.approx(0.343711, abs=1e-5)
    assert set(SCALARS) <= set(m)


def test_meter_accumulates_batches_like_one_batch():
    meter = UtilizationMeter(num_experts=3, num_classes=2)
    for rows in (slice(0, 1), slice(1, 4)):
        meter.update({k: v[rows] if v.dim() else v for k, v in AUX.items()}, LABELS[rows])
    one = routing_metrics(AUX, LABELS, num_classes=2)
    many = meter.compute()
    for key in SCALARS:
        assert many[key] == pytest.approx(one[key])
    assert many["expert_class"] == one["expert_class"]
    meter.reset()
    assert meter.compute() == {}


def test_top2_load_counts_every_choice():
    # two samples, K = 2: assignments {0, 1}, {0, 2} -> load [2, 1, 1]/4
    aux = {"probs": torch.full((2, 3), 1 / 3), "expert_index": torch.tensor([[0, 1], [0, 2]])}
    m = routing_metrics(aux, torch.tensor([0, 1]), num_classes=2)
    assert m["load"] == pytest.approx([0.5, 0.25, 0.25])
    assert m["route_entropy"] == pytest.approx(1.0) and m["sample_entropy"] == pytest.approx(1.0)
    assert m["dead_experts"] == 0


def test_dense_aux_gives_empty_dict():
    meter = UtilizationMeter(num_experts=4, num_classes=2)
    meter.update({"balance_loss": torch.zeros(())}, LABELS)
    assert meter.compute() == {}
    assert routing_metrics({"balance_loss": torch.zeros(())}, LABELS, num_classes=2) == {}


def test_nmi_matches_entropy_identity_on_random_tables():
    # Independent route to the same number: MI = H(rows) + H(cols) − H(joint), normalized by the
    # arithmetic mean of H(rows), H(cols) (sklearn's default; the hand example above agrees with
    # sklearn's normalized_mutual_info_score, 0.3437110, checked offline to keep this file fast).
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        counts = torch.randint(0, 6, (4, 3), generator=g)
        joint = counts.double() / counts.sum()
        h_rows, h_cols, h_joint = entropy(joint.sum(1)), entropy(joint.sum(0)), entropy(joint.flatten())
        expected = (h_rows + h_cols - h_joint) / ((h_rows + h_cols) / 2)
        assert nmi_from_counts(counts) == pytest.approx(expected.item(), abs=1e-9)
    # degenerate: everything in one cell -> 1.0 (sklearn's convention); one expert, two labels -> 0.0
    assert nmi_from_counts(torch.tensor([[5, 0], [0, 0]])) == 1.0
    assert nmi_from_counts(torch.tensor([[5, 3], [0, 0]])) == 0.0
