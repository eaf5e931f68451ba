"""checkpoint_cells: the same outputs, gradients, BN statistics and search trajectory with less kept for backward."""

import pytest
import torch
from conftest import one_epoch_search, saved_bytes, seeded_step

from darts_lite.spaces.darts.search import SearchNetwork
from darts_lite.spaces.nb201 import SearchNetwork as NB201SearchNetwork


def _pair(cls, **kw):
    nets = []
    for flag in (False, True):
        torch.manual_seed(0)
        nets.append(cls(checkpoint_cells=flag, **kw))
    return nets


@pytest.mark.parametrize("cls,kw", [
    (SearchNetwork, dict(C=4, layers=3, num_classes=4, drop_path_prob=0.3)),
    (SearchNetwork, dict(C=4, layers=3, num_classes=4, relaxation="gumbel", drop_path_prob=0.3)),
    (NB201SearchNetwork, dict(C=4, N=1, num_classes=4, relaxation="gumbel")),
    (NB201SearchNetwork, dict(C=4, N=1, num_classes=4)),
], ids=["darts", "gdas-drop-path", "nb201-gdas", "nb201-darts"])
def test_outputs_gradients_and_bn_statistics_equal_the_plain_supernet(cls, kw):
    plain, lean = _pair(cls, **kw)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    for seed in (1, 2):
        assert torch.equal(seeded_step(plain, x, y, seed), seeded_step(lean, x, y, seed))
    for (name, a), b in zip(plain.named_parameters(), lean.parameters()):
        if a.grad is None:  # GDAS: an op sampled in neither step
            assert b.grad is None, name
            continue
        assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-7), name
    for (name, a), b in zip(plain.named_buffers(), lean.buffers()):
        assert torch.equal(a, b), name  # running statistics updated once per forward, not again in the recompute


def test_less_is_kept_for_the_backward_pass():
    plain, lean = _pair(SearchNetwork, C=8, layers=5, num_classes=4)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,))
    kept, kept_lean = saved_bytes(plain, x, y), saved_bytes(lean, x, y)
    # only each cell's inputs are kept across the forward pass; a cell's inside lives during its own recompute
    assert kept_lean < 0.25 * kept, (kept_lean, kept)
    lean.eval()
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), lean(x))  # no checkpointing without a backward pass


@pytest.mark.parametrize("order,hvp,relaxation", [(1, "central", "gumbel"), (2, "central", "softmax"),
                                                  (2, "exact", "softmax")])
def test_a_search_follows_the_same_trajectory(order, hvp, relaxation):
    plain = one_epoch_search(order, hvp, relaxation)
    lean = one_epoch_search(order, hvp, relaxation, checkpoint_cells=True)
    for (name, a), b in zip(plain.state_dict().items(), lean.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=0, atol=1e-6), name
    assert lean.net.checkpoint_cells and not plain.net.checkpoint_cells
