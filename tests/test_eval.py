"""Evaluation networks, the zoo of published genotypes, and retraining."""

import json

import pytest
import torch

from darts_lite import EvalNetwork, Genotype, TrainModule
from darts_lite.genotype import zoo
from darts_lite.train import count_flops, resolve_genotype

# parameter counts (millions, without the auxiliary head) as the papers print them
PUBLISHED_PARAMS = {"DARTS_V2": 3.3, "GDAS_V1": 3.4, "GDAS_F1": 2.5, "PC_DARTS": 3.6, "P_DARTS": 3.4}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_published_parameter_counts(name):
    net = EvalNetwork(Genotype.named(name), C=36, num_classes=10, layers=20, auxiliary=True)
    assert round(net.num_parameters() / 1e6, 1) == PUBLISHED_PARAMS[name]
    assert net.num_parameters(auxiliary=True) > net.num_parameters()


def test_darts_imagenet_parameter_count():
    net = EvalNetwork("DARTS_V2", C=48, num_classes=1000, layers=14, auxiliary=True, dataset="imagenet")
    assert round(net.num_parameters() / 1e6, 1) == 4.7


@pytest.mark.parametrize("name", sorted(zoo()))
def test_zoo_genotypes_build_and_run_at_both_sizes(name):
    g = Genotype.named(name)
    assert Genotype.parse(g.to_text()) == g and Genotype.parse(g.to_json()) == g
    cifar = EvalNetwork(g, C=8, num_classes=10, layers=8).eval()
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    imagenet = EvalNetwork(g, C=8, num_classes=1000, layers=8, dataset="imagenet").eval()
    assert imagenet(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_fixed_reduction_genotype_builds_the_fixed_cell():
    net = EvalNetwork("GDAS_F1", C=8, layers=5)
    reductions = [type(c).__name__ for c in net.cells if c.reduction]
    assert reductions == ["_EvalFixedReductionCell"] * 2


def test_eval_network_bn_is_affine_and_pooling_has_no_bn():
    net = EvalNetwork("DARTS_V2", C=8, layers=5, auxiliary=False)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.affine for m in bns)
    pool_cell = next(c for c in net.cells if c.reduction)
    assert isinstance(pool_cell.ops[0], torch.nn.MaxPool2d)  # ('max_pool_3x3', 0): bare pooling


def test_auxiliary_head_and_drop_path_act_only_in_training():
    torch.manual_seed(0)
    net = EvalNetwork("DARTS_V2", C=8, num_classes=10, layers=8, auxiliary=True, drop_path_prob=0.5)
    x = torch.randn(4, 3, 32, 32)
    out = net.train()(x)
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (4, 10)
    torch.manual_seed(1)
    a = net(x)[0]
    torch.manual_seed(2)
    b = net(x)[0]
    assert not torch.allclose(a, b)  # drop path draws differ in training
    net.eval()
    logits = net(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 10)
    torch.testing.assert_close(net(x), logits)
    no_aux = EvalNetwork("DARTS_V2", C=8, layers=8, auxiliary=False).train()
    assert isinstance(no_aux(x), torch.Tensor)


def test_resolve_genotype_from_every_kind_of_spec(tmp_path):
    g = Genotype.named("GDAS_V1")
    (tmp_path / "genotype.json").write_text(g.to_json())
    assert resolve_genotype("GDAS_V1") == g
    assert resolve_genotype("gdas-v1") == g
    assert resolve_genotype(str(tmp_path / "genotype.json")) == g
    assert resolve_genotype(str(tmp_path)) == g  # a search run folder
    assert resolve_genotype(g.to_text()) == g
    with pytest.raises(ValueError, match="not a published name"):
        resolve_genotype("NO_SUCH_CELL")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no genotype.json"):
        resolve_genotype(str(empty))


def test_flop_counter_scales_with_resolution():
    net = EvalNetwork("DARTS_V2", C=8, layers=5, auxiliary=False)
    small, big = count_flops(net, (3, 16, 16)), count_flops(net, (3, 32, 32))
    assert small > 0 and 3.5 < big / small < 4.5


def test_train_module_stores_the_genotype_as_text():
    module = TrainModule("DARTS_V2", network=dict(C=8, layers=5, auxiliary=False), epochs=10, drop_path_prob=0.2)
    assert module.hparams.genotype.startswith("Genotype(normal=")
    json.dumps(dict(module.hparams))  # plain values: checkpoints and loggers can store them


def test_compiled_network_matches_eager():
    """search/train.compile: the compiled network computes the same logits and gradients (CPU inductor)."""
    torch.manual_seed(0)
    eager = TrainModule("DARTS_V2", network=dict(C=4, layers=3, auxiliary=False, in_channels=1), channels_last=False)
    compiled = TrainModule("DARTS_V2", network=dict(C=4, layers=3, auxiliary=False, in_channels=1), channels_last=False,
                           compile=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.setup("fit")
    x = torch.randn(8, 1, 8, 8)
    a, b = eager(x), compiled(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    a.sum().backward()
    b.sum().backward()
    ga = eager.net.classifier.weight.grad
    torch.testing.assert_close(compiled.net.classifier.weight.grad, ga, rtol=1e-4, atol=1e-5)
