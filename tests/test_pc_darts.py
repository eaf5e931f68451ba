"""PC-DARTS (partial channels, edge normalization) and the mixed edge's shared ReLU."""

import copy
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import compose_cfg, tiny_darts_args, tiny_darts_network

from darts_lite.config import ConfigError, validate_search
from darts_lite.data import SearchDataModule
from darts_lite.run.build import build_search_module
from darts_lite.search import SearchModule
from darts_lite.spaces.darts.genotype import PRIMITIVES, Genotype
from darts_lite.spaces.darts.search import MixedEdge, SearchNetwork, node_softmax
from darts_lite.spaces.ops import channel_shuffle


def _step(net, x, y, seed):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same Gumbel sample and drop-path masks for both networks
    out = net(x)
    F.cross_entropy(out, y).backward()
    return out.detach()


# ---- the shared ReLU -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("relaxation", ["softmax", "gumbel"])
@pytest.mark.parametrize("partial_channels", [1, 2])
def test_shared_relu_gives_the_outputs_and_gradients_of_running_each_op_whole(relaxation, partial_channels):
    # layers=3: normal, reduction, reduction cells, so stride-1 and stride-2 edges (FactorizedReduce) are covered
    torch.manual_seed(0)
    shared = tiny_darts_network(relaxation=relaxation, drop_path_prob=0.2, partial_channels=partial_channels).double()
    with torch.no_grad():
        for a in shared.arch_parameters():
            a.normal_(0, 1.0)
    whole = copy.deepcopy(shared)
    edges = [m for m in whole.modules() if isinstance(m, MixedEdge)]
    assert any(m.stride == 2 for m in edges) and any(m.stride == 1 for m in edges)
    for m in edges:
        m.share_relu = False
    assert shared.state_dict().keys() == whole.state_dict().keys()
    x, y = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))
    for seed in (1, 2):  # two steps: the second also sees BN running statistics the first one updated
        out_shared, out_whole = _step(shared, x, y, seed), _step(whole, x, y, seed)
        torch.testing.assert_close(out_shared, out_whole, rtol=1e-12, atol=1e-12)
    grads = 0
    for (name, a), b in zip(shared.named_parameters(), whole.parameters()):
        if a.grad is None:  # GDAS: an op sampled in neither step
            assert b.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=name)
        grads += 1
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in shared.arch_parameters())
    assert grads > len(shared.arch_parameters())


def test_the_edge_computes_one_relu_for_its_ops_and_gdas_none_it_does_not_need(monkeypatch):
    calls = [0]

    def counting(relu):  # torch.relu: what F.relu calls; torch.relu_: the fused steps, on a tensor of their own
        def count(*args, **kwargs):
            calls[0] += 1
            return relu(*args, **kwargs)
        return count

    monkeypatch.setattr(torch, "relu", counting(torch.relu))
    monkeypatch.setattr(torch, "relu_", counting(torch.relu_))
    edge = MixedEdge(4, 1, PRIMITIVES, affine=False)
    x, w = torch.randn(2, 4, 6, 6), torch.softmax(torch.randn(len(PRIMITIVES)), -1)

    def relus(index=None, share=True):
        calls[0] = 0
        edge.share_relu = share
        edge(x, w, index, 0.0)
        return calls[0]

    # whole: two ReLUs per sep_conv (x2) and one per dil_conv (x2); shared: one for all, plus each sep_conv's second
    assert relus(share=False) == 6
    assert relus() == 3
    assert relus(PRIMITIVES.index("max_pool_3x3")) == 0
    assert relus(PRIMITIVES.index("skip_connect")) == 0
    assert relus(PRIMITIVES.index("sep_conv_3x3")) == 2


def test_an_op_whose_leading_relu_was_swapped_for_another_activation_runs_whole():
    torch.manual_seed(0)
    edge = MixedEdge(4, 2, PRIMITIVES, affine=False).double()
    for parent in edge.modules():  # as a smoothness test does: every ReLU becomes a Softplus
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, torch.nn.Softplus(beta=2.0))
    x, w = torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.softmax(torch.randn(len(PRIMITIVES)), -1).double()
    expected = sum(wi * op(x) for wi, op in zip(w, edge.ops))
    torch.testing.assert_close(edge(x, w, None, 0.0), expected, rtol=1e-12, atol=1e-12)


# ---- partial channels ---------------------------------------------------------------------------------------
def test_partial_channel_network_shapes_and_ops_built_for_c_over_k():
    net = SearchNetwork(C=8, layers=3, num_classes=5, partial_channels=4)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    for cell in net.cells:
        for edge in cell.edges:
            sep = edge.ops[PRIMITIVES.index("sep_conv_3x3")]
            channels = cell.preprocess1[1].out_channels
            assert sep[1][2].out_channels == channels // 4
    for stride in (1, 2):
        edge = MixedEdge(8, stride, PRIMITIVES, affine=False, partial_channels=4)
        out = edge(torch.randn(2, 8, 7, 7), torch.softmax(torch.randn(len(PRIMITIVES)), -1), None, 0.0)
        assert out.shape == (2, 8, 7 if stride == 1 else 4, 7 if stride == 1 else 4)


def test_k1_without_edge_normalization_is_exactly_the_plain_network():
    torch.manual_seed(0)
    plain = tiny_darts_network()
    torch.manual_seed(0)
    same = tiny_darts_network(partial_channels=1, edge_normalization=False)
    assert len(same.arch_parameters()) == 2 and same.edge_probabilities() == {}
    for (name, a), b in zip(plain.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(plain(x), same(x))


def test_channel_shuffle_interleaves_the_processed_and_bypassed_channels():
    C, K = 12, 4
    x = torch.arange(C, dtype=torch.float32).view(1, C, 1, 1).expand(2, C, 3, 3).contiguous()
    out = channel_shuffle(x, K)[0, :, 0, 0].long()
    assert sorted(out.tolist()) == list(range(C))  # a permutation
    processed = set(range(C // K))  # the ops' output comes first in the concatenation
    assert [int(c) in processed for c in out] == [p % K == 0 for p in range(C)]
    assert out.tolist() == [g * (C // K) + i for i in range(C // K) for g in range(K)]


def test_only_c_over_k_channels_reach_the_ops_and_the_rest_bypass_them_unchanged():
    C, K = 8, 4
    seen = []
    edge = MixedEdge(C, 1, PRIMITIVES, affine=False, partial_channels=K)
    for op in edge.ops:
        op.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    x = torch.randn(2, C, 5, 5)
    w = torch.softmax(torch.randn(len(PRIMITIVES)), -1)
    out = edge(x, w, None, 0.0)
    assert seen and set(seen) == {C // K}
    # output channel i*K + g (g >= 1) is bypassed input channel g*C/K + i, untouched
    for i in range(C // K):
        for g in range(1, K):
            assert torch.equal(out[:, i * K + g], x[:, g * (C // K) + i])
        assert not torch.equal(out[:, i * K], x[:, i])
    # stride 2: the bypass is 2x2 max-pooled
    reduce = MixedEdge(C, 2, PRIMITIVES, affine=False, partial_channels=K)
    x = torch.randn(2, C, 6, 6)
    out = reduce(x, w, None, 0.0)
    pooled = F.max_pool2d(x, 2, 2)
    assert torch.equal(out[:, 1], pooled[:, C // K])


# ---- edge normalization ------------------------------------------------------------------------------------
def test_edge_normalization_betas_scale_edges_and_are_arch_parameters():
    torch.manual_seed(0)
    net = tiny_darts_network(edge_normalization=True)
    params = net.arch_parameters()
    assert [tuple(p.shape) for p in params] == [(14, 8), (14, 8), (14,), (14,)]
    assert params[2] is net.beta_normal and params[3] is net.beta_reduce
    probs = net.edge_probabilities()
    starts = [0, 2, 5, 9, 14]
    for cell in ("normal", "reduce"):
        for a, b in zip(starts, starts[1:]):
            assert probs[cell][a:b].sum().item() == pytest.approx(1.0)
    assert set(net.op_probabilities()) == {"normal", "reduce"}
    F.cross_entropy(net(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    frc = SearchNetwork(C=8, layers=3, num_classes=3, edge_normalization=True, fixed_reduction=True,
                        relaxation="gumbel", partial_channels=2)
    assert [tuple(p.shape) for p in frc.arch_parameters()] == [(14, 8), (14,)]
    assert frc(torch.randn(2, 3, 8, 8)).shape == (2, 3) and set(frc.edge_probabilities()) == {"normal"}


def test_the_genotype_picks_edges_by_beta_times_op_weight():
    sep, dil, pool = (PRIMITIVES.index(p) for p in ("sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3"))
    alphas = torch.zeros(14, 8)
    # node 1 (edges 2, 3, 4 from inputs 0, 1, 2): by op weight alone input 0 and 1 win
    alphas[2, sep], alphas[3, dil], alphas[4, pool] = 3.0, 2.0, 1.0
    beta = torch.zeros(14)
    beta[2] = -3.0  # input 0's edge: softmax weight ~0.02 at node 1
    plain = Genotype.cell_from_alphas(alphas)
    scaled = Genotype.cell_from_alphas(alphas, edge_scale=node_softmax(beta, 4))
    assert sorted(plain[2:4], key=lambda p: p[1]) == [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)]
    assert sorted(scaled[2:4], key=lambda p: p[1]) == [("dil_conv_3x3", 1), ("max_pool_3x3", 2)]
    # equal betas change nothing; a beta that is not large enough against the op weight does not either
    assert Genotype.cell_from_alphas(alphas, edge_scale=node_softmax(torch.zeros(14), 4)) == plain
    beta[2] = -0.2
    assert Genotype.cell_from_alphas(alphas, edge_scale=node_softmax(beta, 4))[2:4] == plain[2:4]
    with pytest.raises(ValueError, match="edge_scale"):
        Genotype.cell_from_alphas(alphas, edge_scale=torch.ones(13))
    # the network hands its betas to the genotype
    net = tiny_darts_network(edge_normalization=True)
    with torch.no_grad():
        net.alpha_normal.copy_(alphas)
        net.beta_normal.copy_(beta)
        net.beta_normal[2] = -3.0
    assert sorted(net.genotype().normal[2:4], key=lambda p: p[1]) == [("dil_conv_3x3", 1), ("max_pool_3x3", 2)]


def test_checkpoint_cells_keep_pc_darts_exact():
    nets = []
    for flag in (False, True):
        torch.manual_seed(0)
        nets.append(tiny_darts_network(partial_channels=2, edge_normalization=True, checkpoint_cells=flag, drop_path_prob=0.2))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    assert torch.equal(_step(nets[0], x, y, 1), _step(nets[1], x, y, 1))
    for a, b in zip(nets[0].arch_parameters(), nets[1].arch_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-7)


def test_second_order_gives_finite_gradients_to_alphas_and_betas():
    pl.seed_everything(0, verbose=False)
    network = tiny_darts_args(partial_channels=2, edge_normalization=True)
    module = SearchModule(network=network, order=2, epochs=1, channels_last=False)
    dm = SearchDataModule(name="synthetic", batch_size=8, crop_padding=0, flip=False, seed=0, synthetic_samples=32,
                          synthetic_classes=4, synthetic_size=8)
    before = [a.detach().clone() for a in module.net.arch_parameters()]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         use_distributed_sampler=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    arch = module.net.arch_parameters()
    assert len(arch) == 4
    for a, b in zip(arch, before):
        assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
        assert not torch.equal(a.detach(), b)  # the architecture step moved it
    # each edge's share of its node is logged per epoch, and the shares of a node sum to 1
    shares = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("beta/normal/")}
    assert len(shares) == 14 and abs(shares["beta/normal/edge00"] + shares["beta/normal/edge01"] - 1) < 1e-6


# ---- configuration ------------------------------------------------------------------------------------------
def test_quickstart_with_search_pc_darts_validates_and_builds_the_network():
    cfg = compose_cfg("+experiment=quickstart", "search=pc_darts")
    validate_search(cfg)
    assert cfg.space.partial_channels == 4 and cfg.space.edge_normalization and cfg.space.C % 4 == 0
    module = build_search_module(cfg, SimpleNamespace(in_channels=1, num_classes=10))
    assert module.net.partial_channels == 4 and len(module.net.arch_parameters()) == 4
    assert module.net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    paper = compose_cfg("+experiment=pc_darts")
    validate_search(paper)
    assert (paper.data.batch_size, paper.search.lr, paper.search.arch_lr, paper.search.epochs,
            paper.search.warmup_epochs) == (256, 0.1, 6e-4, 50, 15)


def test_bad_partial_channels_stop_with_one_clear_message():
    with pytest.raises(ValueError, match="partial_channels=4: must divide C=6"):
        SearchNetwork(C=6, layers=3, partial_channels=4)
    cfg = compose_cfg("+experiment=quickstart", "space.C=16", "space.partial_channels=3")
    with pytest.raises(ConfigError, match=r"space.partial_channels=3: must divide space.C=16") as err:
        validate_search(cfg)
    assert str(err.value).count("partial_channels") == 1
    # the NAS-Bench-201 supernet takes the same two keys, with the same check
    with pytest.raises(ConfigError, match=r"space.partial_channels=3: must divide space.C=8"):
        validate_search(compose_cfg("+experiment=nb201_quick", "space.partial_channels=3"))
    validate_search(compose_cfg("+experiment=nb201_quick", "search=pc_darts"))


# ---- PC-DARTS on the NAS-Bench-201 space ----------------------------------------------------------------------
def test_nb201_partial_channels_send_c_over_k_channels_through_the_ops():
    from darts_lite.spaces.nb201 import PRIMITIVES as NB201_OPS
    from darts_lite.spaces.nb201.search import MixedEdge as NB201Edge

    C, K = 8, 4
    edge = NB201Edge(C, C, 1, NB201_OPS, affine=False, track_running_stats=True, partial_channels=K)
    seen = []
    for op in edge.ops:
        op.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    x = torch.randn(2, C, 5, 5)
    w = torch.softmax(torch.randn(len(NB201_OPS)), -1)
    out = edge(x, w, None)
    assert seen and set(seen) == {C // K}
    # the processed quarter is the mixed sum of the ops on it; the rest of the input passes untouched, shuffled
    mixed = sum(wk * op(x[:, :C // K]) for wk, op in zip(w, edge.ops) if not isinstance(op, type(edge.ops[0])))
    torch.testing.assert_close(out, channel_shuffle(torch.cat([mixed, x[:, C // K:]], 1), K))
    for i in range(C // K):
        for g in range(1, K):
            assert torch.equal(out[:, i * K + g], x[:, g * (C // K) + i])


def test_nb201_edge_normalization_scales_each_nodes_edges():
    from darts_lite.spaces.nb201 import EDGES
    from darts_lite.spaces.nb201.search import SearchNetwork as NB201Network

    torch.manual_seed(0)
    net = NB201Network(C=8, N=1, num_classes=3, partial_channels=2, edge_normalization=True)
    alphas, beta = net.arch_parameters()
    assert tuple(alphas.shape) == (6, 5) and tuple(beta.shape) == (6,)
    with torch.no_grad():
        beta.copy_(torch.randn(6))
    scale = net.edge_scale()
    for node in (1, 2, 3):
        into = [e for e, (to, _) in enumerate(EDGES) if to == node]
        torch.testing.assert_close(scale[into], torch.softmax(beta[into], -1))
    assert set(net.edge_probabilities()) == {"cell"}
    F.cross_entropy(net(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 0])).backward()
    assert alphas.grad.abs().sum() > 0 and beta.grad.abs().sum() > 0
    # off, the network is the plain one: same alphas, no betas
    torch.manual_seed(0)
    plain = NB201Network(C=8, N=1, num_classes=3)
    assert plain.arch_parameters() == [plain.alphas] and plain.edge_scale() is None
