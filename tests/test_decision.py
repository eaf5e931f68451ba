"""Decision measures: how far each edge's op distribution is from uniform, and the derived cell's parameter-free share."""

import math

import pytest
import torch

from darts_lite import Genotype
from darts_lite.decision import decision, decision_metrics, describe, edge_decision, param_free_share


def test_edge_measures_by_hand():
    probs = torch.tensor([[0.125] * 8, [0.5, 0.3, 0.2, 0, 0, 0, 0, 0], [1.0] + [0.0] * 7])
    m = edge_decision(probs)
    assert m["max_prob"].tolist() == pytest.approx([0.125, 0.5, 1.0])
    assert m["margin"].tolist() == pytest.approx([0.0, 0.2, 1.0])
    entropy = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert m["entropy"].tolist() == pytest.approx([math.log(8), entropy, 0.0])


def test_cell_means_parameter_free_share_and_metric_names():
    g = Genotype.named("DARTS_V2")
    assert param_free_share(g.normal) == 2 / 8 and param_free_share(g.reduce) == 1.0  # skips; pools and skips
    probs = {"normal": torch.tensor([[0.125] * 8, [0.3] + [0.1] * 7]), "reduce": torch.full((2, 8), 0.125)}
    d = decision(probs, g)
    assert d["normal"]["max_prob"] == pytest.approx((0.125 + 0.3) / 2)
    assert d["normal"]["margin"] == pytest.approx((0 + 0.2) / 2)
    assert d["normal"]["edges"]["max_prob"] == pytest.approx([0.125, 0.3])
    assert d["reduce"]["param_free_share"] == 1.0 and d["uniform"] == pytest.approx(
        {"max_prob": 0.125, "margin": 0.0, "entropy": math.log(8)})
    flat = decision_metrics(d)
    assert flat["decision/normal/param_free_share"] == 0.25 and "decision/uniform/max_prob" not in flat
    assert not any("edges" in k for k in flat)
    assert "normal cell: largest op probability 0.21" in describe(d) and "on average (uniform 0.125)" in describe(d)
    # a fixed reduction cell has no searched reduce pairs: no share for it
    frc = Genotype(normal=g.normal, fixed_reduction=True)
    assert "param_free_share" not in decision({"reduce": torch.full((2, 8), 0.125)}, frc)["reduce"]
