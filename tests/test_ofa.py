"""Once-for-All: the elastic network's sub-networks, kernel transformation, channel sorting and depth, and
progressive shrinking's phases (each from its predecessor's checkpoint, resumable)."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
from conftest import ofa_cfg, tiny_ofa_network

from darts_lite.errors import ConfigError
from darts_lite.ofa.elastic import ElasticDepthwiseConv, centre_crop
from darts_lite.ofa.task import check, load_network, run_ofa


def test_the_standalone_subnet_equals_the_elastic_network_for_random_settings():
    net = tiny_ofa_network()
    rng = random.Random(1)
    x = torch.randn(6, 3, 8, 8)
    sizes = set()
    for _ in range(6):
        setting = net.sample_active_subnet(rng)
        net.eval()
        subnet = net.get_active_subnet().eval()
        assert subnet.setting == setting
        assert not any(p is q for p in subnet.parameters() for q in net.parameters())  # copies, not shared
        torch.testing.assert_close(subnet(x), net(x), atol=1e-5, rtol=1e-5)
        sizes.add(sum(p.numel() for p in subnet.parameters()))
    assert len(sizes) > 1  # the settings drawn made sub-networks of different sizes
    net.set_max_net()
    largest = sum(p.numel() for p in net.get_active_subnet().parameters())
    assert max(sizes) < largest


def test_identity_transformations_give_the_centre_crop_and_others_mix_as_specified():
    torch.manual_seed(0)
    conv = ElasticDepthwiseConv(3, (3, 5, 7))
    w = conv.weight.detach()
    assert torch.equal(conv.kernel(7), conv.weight)
    torch.testing.assert_close(conv.kernel(5), centre_crop(w, 5))
    torch.testing.assert_close(conv.kernel(3), centre_crop(w, 3))
    a, b = torch.randn(25, 25), torch.randn(9, 9)
    with torch.no_grad():
        conv.transform(5).copy_(a)
        conv.transform(3).copy_(b)
    # position i of the smaller kernel = sum_j T[i, j] * (position j of the larger kernel's centre), per channel
    five = torch.einsum("ij,cj->ci", a, centre_crop(w, 5).reshape(3, 25)).reshape(3, 1, 5, 5)
    three = torch.einsum("ij,cj->ci", b, centre_crop(five, 3).reshape(3, 9)).reshape(3, 1, 3, 3)
    torch.testing.assert_close(conv.kernel(5), five)
    torch.testing.assert_close(conv.kernel(3), three)
    assert conv.kernel(3, channels=2).shape == (2, 1, 3, 3)
    conv.kernel(3).sum().backward()  # both matrices are learned through the 3x3 kernel
    assert conv.transform(5).grad.abs().sum() > 0 and conv.transform(3).grad.abs().sum() > 0


def test_reordering_by_l1_importance_keeps_the_function_and_sorts_channels():
    net = tiny_ofa_network()
    net.eval()
    x = torch.randn(6, 3, 8, 8)
    net.set_max_net()
    before = net(x)
    old = [block.importance().clone() for block in net.blocks]
    net.reorder_channels()
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)
    for block, imp in zip(net.blocks, old):
        now = block.importance()
        assert torch.all(now[:-1] >= now[1:])  # most important first
        torch.testing.assert_close(now, imp.sort(descending=True).values)
    # a narrower width keeps the most important channels: it loses less than keeping the least important would
    block = net.blocks[0]
    kept = block.width(3)
    assert block.importance()[:kept].sum() >= old[0].sort().values[:kept].sum()

    # keep=[4]: the channel set of expand ratio 4 stays, each segment sorted within
    torch.manual_seed(3)
    net = tiny_ofa_network(seed=3)
    net.eval()
    block = net.blocks[1]
    w4 = block.width(4)
    rows = {tuple(r.tolist()) for r in block.expand.weight[:w4, :, 0, 0]}
    net.set_active_subnet(e=4)
    narrow = net(x)
    net.reorder_channels(keep=[4])
    assert {tuple(r.tolist()) for r in block.expand.weight[:w4, :, 0, 0]} == rows
    torch.testing.assert_close(net(x), narrow, atol=1e-5, rtol=1e-5)  # the width-4 sub-network is unchanged
    imp = block.importance()
    assert torch.all(imp[: w4 - 1] >= imp[1:w4]) and torch.all(imp[w4:-1] >= imp[w4 + 1:])


def test_depth_runs_the_first_d_blocks_of_each_unit():
    net = tiny_ofa_network()
    net.eval()
    ran = []
    for u, unit in enumerate(net.units):
        for i, block in enumerate(unit):
            block.register_forward_hook(lambda *_, u=u, i=i: ran.append((u, i)))
    net.set_active_subnet(d=[2, 3])
    x = torch.randn(2, 3, 8, 8)
    out = net(x)
    assert ran == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    with torch.no_grad():
        net.units[0][3].project.weight.add_(1.0)  # a skipped block's weights change nothing
    torch.testing.assert_close(net(x), out)
    assert len(net.get_active_subnet().blocks) == 5


def test_unknown_values_are_refused_with_one_message():
    net = tiny_ofa_network()
    before = net.setting()
    with pytest.raises(ValueError) as e:
        net.set_active_subnet(ks=4, e=[3, 4, 5, 6, 3, 4, 6, 6], d=1)
    message = str(e.value)
    assert "ks=4" in message and "e=5" in message and "d=1" in message and "[3, 5, 7]" in message
    with pytest.raises(ValueError, match="give one value or 2"):
        net.set_active_subnet(d=[2, 3, 4])
    assert net.setting() == before  # a refused setting changes nothing


# ---- progressive shrinking through task=ofa --------------------------------------------------------------------
def test_a_phase_starts_from_its_predecessor_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    run_ofa(ofa_cfg(run, "ofa.phase=full"))
    full = load_network(run / "network.pt")
    # another epoch of the full phase: resumed from its checkpoint, not started again
    run_ofa(ofa_cfg(run, "ofa.phase=full", "ofa.epochs=[2,1,1,1,1,1]", "resume=true"))
    epochs = [r["epoch"] for r in csv.DictReader(open(run / "full" / "metrics.csv")) if r.get("val/acc_max")]
    assert epochs == ["0", "1"]
    assert torch.load(run / "full/checkpoints/last.ckpt", weights_only=True)["epoch"] == 1
    resumed = load_network(run / "network.pt")
    assert not torch.equal(resumed.head.classifier.weight, full.head.classifier.weight)
    # killed after the phase's last checkpoint, before its summary: the skipped phase's summary comes back from the
    # checkpoint, with the metrics the phase reported
    reported = json.loads((run / "full" / "summary.json").read_text())["metrics"]
    (run / "full" / "summary.json").unlink()
    run_ofa(ofa_cfg(run, "ofa.phase=full", "ofa.epochs=[2,1,1,1,1,1]", "resume=true"))
    assert "full: finished before, skipped" in capsys.readouterr().out
    assert json.loads((run / "full" / "summary.json").read_text())["metrics"] == reported

    # the kernel phase, at a learning rate too small to move anything, ends where the full phase did
    run_ofa(ofa_cfg(run, "ofa.phase=kernel", "ofa.epochs=[2,1,1,1,1,1]", "ofa.lr=[0.1,1e-12,0.1,0.1,0.1,0.1]"))
    kernel = load_network(run / "network.pt")
    assert json.loads((run / "summary.json").read_text())["network"]["phase"] == "kernel"
    for (name, a), b in zip(resumed.named_parameters(), kernel.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    state = torch.load(run / "kernel/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(state["teacher.head.classifier.weight"], resumed.head.classifier.weight)  # the teacher


def test_a_phase_without_its_predecessors_checkpoint_stops_before_writing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        run_ofa(ofa_cfg(run, "ofa.phase=depth1"))
    message = str(e.value)
    assert "the phase before it, kernel" in message and "does not exist" in message
    assert f"ofa.phase=kernel hydra.run.dir={run}" in message
    assert not run.exists()


def test_bad_ofa_values_are_listed_together():
    with pytest.raises(ConfigError) as e:
        check(ofa_cfg("unused", "ofa.epochs=[1,1]", "ofa.resolutions=[2,8]", "ofa.phase=width",
                      "ofa.network.ks_list=[4]"))
    message = str(e.value)
    for part in ("ofa.epochs=[1, 1]", "ofa.resolutions=[2, 8]", "ofa.phase='width'"):
        assert part in message
    check(ofa_cfg("unused"))  # the tiny config itself is valid
