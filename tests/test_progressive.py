"""DrNAS's progressive learning (search.progressive): ops widened by copying channels (with their momentum), ops pruned
to the largest alphas with the Dirichlet sample renormalised over the rest, stages with their own warm-up, and a
killed search that resumes in either stage to the uninterrupted run's result."""

import csv
import signal
import subprocess
import time

import pytest
import pytorch_lightning as pl
import torch
from conftest import SMALL_DARTS, compose_cfg, run_cli, small_darts_args, start_cli
from torch import nn

from darts_lite.errors import ConfigError
from darts_lite.methods.drnas import DirichletRelaxation, concentration
from darts_lite.spaces.darts import ops as darts_ops
from darts_lite.spaces.nb201 import ops as nb201_ops
from darts_lite.spaces.widen import widen_op, widen_tensor


def _distinct(module: nn.Module) -> nn.Module:
    """Every parameter and BatchNorm statistic set to distinct random values (so a copied channel is recognisable)."""
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand_like(t) + 0.5)
    return module


def _grown(n_old, n_new):
    return torch.cat([torch.arange(n_old), torch.randint(0, n_old, (n_new - n_old,))])


# ---- widening ---------------------------------------------------------------------------------------------------
def test_a_relu_conv_bn_widens_with_drnas_draws_in_drnas_order():
    """NAS-Bench-201's ReLU-conv-BN (conv with bias): the input channels' copies drawn first, then the output
    channels', each uniform over the old ones (DrNAS's InChannelWider, OutChannelWider, BNWider); the BatchNorm
    copies what the conv copied; the conv's bias as its output channels."""
    old = _distinct(nb201_ops.make_op("nor_conv_3x3", 4, 4, 1, affine=False))
    new = nb201_ops.make_op("nor_conv_3x3", 6, 6, 1, affine=False)
    torch.manual_seed(7)
    widened = widen_op(old, new)
    torch.manual_seed(7)
    src_in, src_out = _grown(4, 6), _grown(4, 6)
    conv_old, conv_new = old[1], new[1]
    assert torch.equal(conv_new.weight, conv_old.weight[:, src_in][src_out])
    assert torch.equal(conv_new.bias, conv_old.bias[src_out])
    for name in ("running_mean", "running_var"):
        assert torch.equal(getattr(new[2], name), getattr(old[2], name)[src_out])
    assert {id(w.new) for w in widened} == {id(p) for p in new.parameters()}
    assert all(w.old.shape != w.new.shape for w in widened)


def test_a_separable_conv_ties_each_pointwise_conv_to_its_depthwise_copies():
    """DARTS's sep_conv: each depthwise conv draws its output copies, the 1x1 conv after it reads its added input
    channels through those same copies, then draws its own output copies, which its BatchNorm follows (DrNAS's
    SepConv.wider, draw for draw)."""
    old = _distinct(darts_ops.make_op("sep_conv_3x3", 4, 1, affine=False))
    new = darts_ops.make_op("sep_conv_3x3", 6, 1, affine=False)
    torch.manual_seed(3)
    widen_op(old, new)
    torch.manual_seed(3)
    for block_old, block_new in zip(old, new):  # two DilConv blocks: ReLU, depthwise, 1x1, BN
        dw = _grown(4, 6)
        assert torch.equal(block_new[1].weight, block_old[1].weight[dw])
        out = _grown(4, 6)
        assert torch.equal(block_new[2].weight, block_old[2].weight[:, dw][out])
        assert torch.equal(block_new[3].running_mean, block_old[3].running_mean[out])
    assert block_new[1].groups == 6


def test_a_factorized_reduction_widens_each_half_with_its_own_batchnorm_channels():
    """The stride-2 skip (two 1x1 convs, their outputs concatenated, one BatchNorm): each added channel's statistics
    are those of the channel its conv copied, in that conv's half."""
    old = _distinct(darts_ops.make_op("skip_connect", 4, 2, affine=False))
    new = darts_ops.make_op("skip_connect", 8, 2, affine=False)
    widen_op(old, new)
    for half, conv in enumerate((new.conv_1, new.conv_2)):
        rows_old = (old.conv_1, old.conv_2)[half].weight
        for i in range(4):  # each of the 4 output channels of this half
            (s,) = [s for s in range(2) if torch.equal(conv.weight[i, :4], rows_old[s])]
            assert new.bn.running_mean[4 * half + i] == old.bn.running_mean[2 * half + s]


def test_a_pooling_batchnorm_draws_its_copies_alone_and_keeps_its_old_channels():
    old = _distinct(darts_ops.make_op("max_pool_3x3", 4, 1, affine=False, pool_bn=True))
    new = darts_ops.make_op("max_pool_3x3", 9, 1, affine=False, pool_bn=True)
    widen_op(old, new)
    assert torch.equal(new[1].running_var[:4], old[1].running_var)
    assert all(any(v == w for w in old[1].running_var) for v in new[1].running_var[4:])


def test_widening_refuses_ops_it_cannot_follow():
    with pytest.raises(ValueError, match="only be widened"):
        widen_op(darts_ops.make_op("sep_conv_3x3", 6, 1, False), darts_ops.make_op("sep_conv_3x3", 4, 1, False))
    with pytest.raises(ValueError, match="modules differ"):
        widen_op(darts_ops.make_op("sep_conv_3x3", 4, 1, False), darts_ops.make_op("dil_conv_3x3", 6, 1, False))
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="not depthwise"):
        widen_op(grouped, nn.Sequential(nn.Conv2d(6, 6, 3, groups=2)))


def test_widen_tensor_indexes_each_dimension_in_turn():
    t = torch.arange(12.0).view(3, 4)
    out = widen_tensor(t, ((1, torch.tensor([0, 1, 2, 3, 0])), (0, torch.tensor([0, 1, 2, 2]))))
    assert out.shape == (4, 5) and torch.equal(out[3], t[2, [0, 1, 2, 3, 0]])


# ---- pruning ----------------------------------------------------------------------------------------------------
def _tiny_net(**kw):
    from darts_lite.spaces.darts.search import SearchNetwork

    return SearchNetwork(**small_darts_args(relaxation={"_target_": "darts_lite.methods.drnas.DirichletRelaxation"},
                                            **kw))


def test_pruning_keeps_each_edges_largest_alphas_and_renormalises_the_dirichlet_sample():
    torch.manual_seed(0)
    net = _tiny_net()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a))
    before = {c: a.detach().clone() for c, a in net.cell_alphas().items()}
    masks = net.prune_ops(2)
    for cell, a in net.cell_alphas().items():
        order = before[cell].argsort(dim=-1, descending=True)
        expected = torch.zeros_like(masks[cell])
        for e in range(len(order)):
            expected[e, order[e, :2]] = True
        assert torch.equal(masks[cell], expected)
        assert torch.equal(a.detach(), torch.where(expected, before[cell], torch.zeros_like(a)))  # DrNAS zeroes the rest

    # the renormalised sample of the kept ops is Dirichlet(beta of the kept ops) (the Dirichlet's aggregation
    # property): its mean over many draws is beta_kept / sum(beta_kept); pruned ops weigh exactly 0
    alphas = net.alpha_normal.detach()
    draws = torch.stack([net.relax("normal", alphas).weights for _ in range(4000)])
    assert (draws[:, ~masks["normal"]] == 0).all()
    torch.testing.assert_close(draws.sum(-1), torch.ones(draws.shape[:2]))
    beta = concentration(alphas) * masks["normal"]
    torch.testing.assert_close(draws.mean(0), beta / beta.sum(-1, keepdim=True), atol=0.02, rtol=0)
    assert isinstance(net.relaxation, DirichletRelaxation)


def test_pruned_ops_never_run_and_are_never_chosen():
    torch.manual_seed(1)
    net = _tiny_net()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(-1 - torch.rand_like(a))  # every alpha below the 0 a pruned op is set to
    masks = net.prune_ops(2)
    calls = {}
    for cell, e, edge in net.mixed_edges():
        for o, op in enumerate(edge.ops):
            for m in op.modules():  # an op after a shared ReLU runs its modules but not its own forward
                if not isinstance(m, nn.ReLU):
                    m.register_forward_hook(lambda m, i, out, key=(cell, e, o): calls.__setitem__(key, 1))
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    ran = {key for key in calls}
    ops = net.primitives
    for cell, e, _ in net.mixed_edges():
        for o in range(len(ops)):
            if not masks[cell][e, o]:
                assert (cell, e, o) not in ran, "a pruned op ran"
            elif ops[o] != "none":
                assert (cell, e, o) in ran
    genotype = net.genotype()
    for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        kept_names = [{ops[o] for o in range(len(ops)) if masks[cell][e, o]} for e in range(len(masks[cell]))]
        starts = [0, 2]  # node 0 reads rows 0-1, node 1 rows 2-4 (2 nodes)
        for k, (op, j) in enumerate(pairs):
            assert op in kept_names[starts[k // 2] + j]
    probs = net.op_probabilities()["normal"]
    assert (probs[~masks["normal"]] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(probs)))


def test_a_second_pruning_ranks_only_the_ops_still_kept():
    torch.manual_seed(2)
    net = _tiny_net()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(-1 - torch.rand_like(a))
    first = net.prune_ops(3)
    second = net.prune_ops(2)
    for cell in first:
        assert (second[cell] <= first[cell]).all() and (second[cell].sum(-1) == 2).all()


# ---- a search in stages -----------------------------------------------------------------------------------------
class _Watch(pl.Callback):
    """Records, at each epoch start, whether the architecture steps are on, and around the stage change the weight
    optimiser's momentum (before the supernet widens, and at the first step after)."""

    def __init__(self, change_epoch):
        self.change_epoch, self.active, self.before, self.after = change_epoch, [], None, None

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.change_epoch:  # callbacks run before the module's own hook
            opt = module.optimizers()[0].optimizer
            self.before = {id(p): (p.detach().clone(), opt.state[p]["momentum_buffer"].clone())
                           for p in opt.param_groups[0]["params"]}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.active.append(module.arch_updates_active)
            if trainer.current_epoch == self.change_epoch:
                opt = module.optimizers()[0].optimizer
                self.after = [(p.detach().clone(), opt.state[p]["momentum_buffer"].clone())
                              for p in opt.param_groups[0]["params"]]


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_a_search_in_stages_prunes_widens_and_warms_up_per_stage(space):
    from darts_lite.data import SearchDataModule
    from darts_lite.search import SearchModule

    pl.seed_everything(0, verbose=False)
    if space == "darts":
        network = small_darts_args(partial_channels=2)
        keep = [4, 2]
    else:
        network = dict(_target_="darts_lite.spaces.nb201.SearchNetwork", C=4, N=1, num_classes=4, partial_channels=2)
        keep = [5, 3]
    module = SearchModule(network=network, relaxation={"_target_": "darts_lite.methods.drnas.DirichletRelaxation"},
                          epochs=4, warmup_epochs=1, lr=0.1, channels_last=space == "darts",
                          progressive={"_target_": "darts_lite.methods.drnas.Progressive", "stage_epochs": [2, 2],
                                       "partial_channels": [2, 1], "keep_ops": keep})
    dm = SearchDataModule(name="synthetic", batch_size=8, seed=0, synthetic_samples=32, synthetic_classes=4,
                          synthetic_size=8)
    watch = _Watch(change_epoch=2)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False,
                         limit_train_batches=2, limit_val_batches=1, callbacks=[watch])
    trainer.fit(module, datamodule=dm)

    assert watch.active == [False, True, False, True]  # DrNAS's warm-up starts again with the second stage
    assert trainer.callback_metrics["search/stage"] == 2
    net = module.net
    assert net.partial_channels == 1 and module._stage == 1
    assert all(edge.partial_channels == 1 for _, _, edge in net.mixed_edges())
    for mask in net.op_masks().values():
        assert (mask.sum(-1) == keep[1]).all()
    from darts_lite.decision import decision

    assert decision(net.op_probabilities())["uniform"]["max_prob"] == 1 / keep[1]  # against the ops still there
    opt = module.optimizers()[0].optimizer
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in net.weight_parameters()]

    # every widened weight: its old channels kept, each added channel a copy of an old one, and the momentum the
    # first step after the change started from widened the same way (the copies' momentum is their sources')
    widened = 0
    for p_new, m_new in watch.after:
        if any(p.shape == p_new.shape and torch.equal(p, p_new) for p, _ in watch.before.values()):
            continue  # not an edge op's weight: left as it was
        olds = [(p, m) for p, m in watch.before.values() if p.dim() == p_new.dim()
                and all(a <= b for a, b in zip(p.shape, p_new.shape))
                and torch.equal(p, p_new[tuple(slice(0, n) for n in p.shape)])]
        assert olds, "a weight changed at the stage change without being widened from one before it"
        p_old, m_old = olds[0]
        widened += 1
        corner = tuple(slice(0, n) for n in p_old.shape)
        assert torch.equal(m_new[corner], m_old)
        for i in range(p_old.shape[0], p_new.shape[0]):
            sources = [s for s in range(p_old.shape[0]) if torch.equal(p_new[i], p_new[s])]
            assert sources and any(torch.equal(m_new[i], m_new[s]) for s in sources)
    assert widened > 0


def test_a_progressive_search_refuses_ddp():
    from types import SimpleNamespace

    from darts_lite.search import SearchModule

    module = SearchModule(network=small_darts_args(partial_channels=2), epochs=2,
                          relaxation={"_target_": "darts_lite.methods.drnas.DirichletRelaxation"},
                          progressive={"_target_": "darts_lite.methods.drnas.Progressive", "stage_epochs": [1, 1],
                                       "partial_channels": [2, 1], "keep_ops": [4, 2]})
    module._trainer = SimpleNamespace(world_size=2)
    with pytest.raises(ConfigError, match="one process"):
        module.setup("fit")


@pytest.mark.parametrize("record", [
    "stage 1", {"stage": 5, "op_masks": {}}, {"stage": True, "op_masks": {}}, {"stage": 1, "op_masks": None},
    {"stage": 1, "op_masks": {"normal": torch.ones(3, 3, dtype=torch.bool)}},
    {"stage": 1, "op_masks": {"normal": "all"}}, {"stage": 1, "op_masks": {"cell": torch.ones(5, 4, dtype=torch.bool)}},
])
def test_a_stage_record_that_does_not_fit_is_refused_by_name(record):
    """A checkpoint's progressive record is read before the weights: one that cannot be the search's is a ConfigError
    (damaged, or of another search), not a half-changed supernet."""
    from darts_lite.search import SearchModule

    module = SearchModule(network=small_darts_args(partial_channels=2), epochs=2,
                          relaxation={"_target_": "darts_lite.methods.drnas.DirichletRelaxation"},
                          progressive={"_target_": "darts_lite.methods.drnas.Progressive", "stage_epochs": [1, 1],
                                       "partial_channels": [2, 1], "keep_ops": [4, 2]})
    edges = [id(edge.ops) for _, _, edge in module.net.mixed_edges()]
    with pytest.raises(ConfigError, match="progressive stage record|op masks do not fit"):
        module.restore_progressive({"progressive": record})
    assert [id(edge.ops) for _, _, edge in module.net.mixed_edges()] == edges  # nothing rebuilt
    assert module.net.op_masks() == {} and module._stage == 0


@pytest.mark.parametrize("override, message", [
    ("search.progressive.stage_epochs=[20,20]", r"stage_epochs=\[20, 20\]: must add up to search.epochs=50"),
    ("space.partial_channels=4", r"the first stage's K is the supernet's own, space.partial_channels=4"),
    ("search.progressive.keep_ops=[8,4]", r"the first stage keeps every op of the space \(space.primitives has 7\)"),
    ("search.warmup_epochs=25", r"search.warmup_epochs=25: counts from the start of every stage"),
    ("search.progressive.partial_channels=[6,9]", r"must not grow from stage to stage"),
    ("search.progressive.keep_ops=[7,1]", r"at least 2 ops per edge"),
    ("search.progressive.stage_epochs=[0,50]", r"stage_epochs=\[0, 50\]: must be a list of integers >= 1"),
    ("space.C=16", r"each must divide space.C=16"),
    ("search.relaxation._target_=darts_lite.relax.GumbelRelaxation", r"samples one op per edge"),
    ("search.selection=perturbation", r"search.selection=perturbation: not with search.progressive"),
])
def test_a_progressive_config_that_cannot_run_is_refused_by_name(override, message):
    from darts_lite.config import validate_search

    with pytest.raises(ConfigError, match=message):
        validate_search(compose_cfg("search=drnas_progressive", override))


def test_the_published_progressive_configs_validate():
    from darts_lite.config import validate_search

    validate_search(compose_cfg("+experiment=drnas_progressive"))
    validate_search(compose_cfg("+experiment=nb201_drnas_progressive"))


# ---- killed and resumed -----------------------------------------------------------------------------------------
ARGS = ["data=synthetic", "trainer=cpu", "search=drnas_progressive", "space.C=4", "space.layers=3", *SMALL_DARTS,
        "space.partial_channels=2", "search.progressive.partial_channels=[2,1]", "search.progressive.keep_ops=[4,2]",
        "search.epochs=6", "search.progressive.stage_epochs=[3,3]", "search.warmup_epochs=1", "data.batch_size=16",
        "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "seed=5"]


def _kill_after(run, cwd, epochs):
    proc = start_cli(*ARGS, f"hydra.run.dir={run}", cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history, deadline = run / "genotype_history.jsonl", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= epochs and \
                (run / "checkpoints/last.ckpt").is_file():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the search finished before it could be killed"
    return torch.load(run / "checkpoints/last.ckpt", weights_only=True)


def test_a_progressive_search_killed_in_either_stage_resumes_to_the_same_result(tmp_path):
    from darts_lite.run.checkpoints import load_search_module
    from darts_lite.spaces.darts.genotype import Genotype

    # every run in a process of its own, as the killed ones: a test process's earlier tests may have changed settings
    # (threads, say) that decide the last bits of a float sum
    straight = tmp_path / "straight"
    done = run_cli(*ARGS, f"hydra.run.dir={straight}", cwd=tmp_path, isolated=True)
    assert done.returncode == 0, done.stderr[-3000:]
    final = torch.load(straight / "checkpoints/last.ckpt", weights_only=True)
    assert final["progressive"]["stage"] == 1
    assert final["state_dict"]["net.cells.0.edges.0.ops.2.0.1.weight"].shape[0] == 4  # sep_conv at C/1 = 4 channels

    stages = set()
    for name, epochs in (("first", 1), ("second", 5)):
        run = tmp_path / name
        saved = _kill_after(run, tmp_path, epochs)
        stages.add(saved["progressive"]["stage"])
        where = f"{name}: killed after epoch {saved['epoch']} in stage {saved['progressive']['stage']}"
        resumed = run_cli(*ARGS, f"hydra.run.dir={run}", "resume=true", cwd=tmp_path, isolated=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        a, b = (torch.load(r / "alphas.pt", weights_only=True) for r in (straight, run))
        for cell in a:
            assert torch.equal(a[cell], b[cell]), f"{where}: {cell} alphas differ after resume"
        assert Genotype.parse((run / "genotype.json").read_text()) == Genotype.parse((straight / "genotype.json").read_text())

        def losses(r):
            return [row["search/train_loss"] for row in csv.DictReader(open(r / "metrics.csv"))
                    if row.get("search/train_loss")]

        assert losses(run) == losses(straight), where
    assert stages == {0, 1}, f"the kills did not land one in each stage: {stages}"

    # a stage-2 checkpoint loads on its own (task=select's path), its wider ops and pruned ops restored
    module = load_search_module(straight / "checkpoints/last.ckpt")
    assert module.net.partial_channels == 1
    assert module.net.genotype() == Genotype.parse((straight / "genotype.json").read_text())
