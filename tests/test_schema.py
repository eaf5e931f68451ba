"""Config schemas from signatures: every problem of a node in one message, strict types, the rules between
arguments, and every _target_ of conf/ declaring its arguments."""

from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml
from omegaconf import OmegaConf

from darts_lite.errors import ConfigError
from darts_lite.schema import Allowed, Ge, Gt, Hint, Lt, OneOf, build, checked, describe, node_problems, parameters, value_problem


class Widget:
    @checked
    def __init__(self, size: Annotated[int, Ge(1)] = 2, ratio: Annotated[float, Gt(0), Lt(1)] = 0.5,
                 flag: bool = False, kind: Literal["a", "b"] = "a", limit: Annotated[float, Ge(0)] | None = None,
                 pair: Annotated[tuple[float, float], Allowed("two numbers")] = (0.1, 0.2),
                 color: Annotated[str, OneOf(("red",), ("green", "blue")), Hint("the paint")] = "red"):
        self.size, self.ratio, self.pair = size, ratio, pair

    @classmethod
    def config_problems(cls, rules):
        v = rules.values
        return [f"{rules.key('limit')}={v['limit']}: must be >= {rules.key('size')}"] if (v["limit"] or 99) < v["size"] else []


class NeedsOne:
    def __init__(self, required: int, other: int = 0):
        pass


def test_describe_says_what_a_value_may_be():
    assert describe(Annotated[int, Ge(1)]) == "an integer >= 1"
    assert describe(Annotated[float, Gt(0), Lt(1)]) == "in (0, 1)"
    assert describe(Annotated[float, Ge(0)] | None) == "null or >= 0"
    assert describe(bool) == "true or false" and describe(Literal["x", "y"]) == "one of x, y"
    assert describe(Annotated[str, OneOf("a", ("b", "c"))]) == "one of a, b, c"


def test_values_are_checked_strictly():
    assert value_problem(Annotated[int, Ge(1)], 3) is None
    assert value_problem(Annotated[int, Ge(1)], 0) == "must be an integer >= 1"
    assert value_problem(Annotated[int, Ge(1)], True)  # a bool is not an integer
    assert value_problem(Annotated[int, Ge(1)], 2.5)
    assert value_problem(bool, 1) == "must be true or false" and value_problem(bool, "yes")
    assert value_problem(float, 1) is None  # an integer is a number
    assert value_problem(tuple[float, float], [0.5, 0.9]) is None  # a config's list for a tuple
    assert value_problem(Annotated[str, OneOf("a", "b"), Hint("why")], "c") == "must be one of a, b (why)"


def test_a_node_reports_every_problem_at_once():
    problems = node_problems({"size": 0, "ratio": 1.5, "flag": 1, "kind": "c", "pair": [1], "colour": "red"}, "w.",
                             target=Widget)
    assert problems == [
        "w.colour: unknown option of test_schema.Widget; its options: size, ratio, flag, kind, limit, pair, color",
        "w.size=0: must be an integer >= 1", "w.ratio=1.5: must be in (0, 1)", "w.flag=1: must be true or false",
        "w.kind='c': must be one of a, b", "w.pair=[1]: must be two numbers",
    ]
    # the rules between arguments run once each argument is right
    assert node_problems({"size": 5, "limit": 2.0}, "w.", target=Widget) == ["w.limit=2.0: must be >= w.size"]
    assert node_problems({"other": 1}, "n.", target=NeedsOne) == [
        "n.required: missing; test_schema.NeedsOne needs it (an integer)"]


def test_targets_interpolations_missing_values_and_given_keys():
    assert node_problems({"_target_": "nope.Thing"}, "x.")[0].startswith("x._target_='nope.Thing': cannot be imported")
    assert node_problems({"a": 1}, "x.") == ["x: has no _target_ (the class or function it builds)"]
    cfg = OmegaConf.create({"x": {"_target_": "test_schema.Widget", "size": "${nowhere}", "ratio": "???"}})
    problems = node_problems(cfg.x, "x.")
    assert any(p.startswith("x.size: cannot be worked out") for p in problems)
    assert "x.ratio: must be set (the config leaves it ???)" in problems
    assert node_problems({"_target_": "test_schema.Widget", "size": 3}, "x.", provided=("size",)) == [
        "x.size: set by darts_lite itself; remove it from the config"]


def test_checked_classes_refuse_bad_python_arguments_the_same_way():
    with pytest.raises(ConfigError, match=r"Widget: size=0: must be an integer >= 1; ratio=2: must be in \(0, 1\)"):
        Widget(size=0, ratio=2)
    with pytest.raises(ConfigError, match="limit=1.0: must be >= size"):
        Widget(size=3, limit=1.0)
    assert Widget(size=3, pair=[0.3, 0.4]).pair == [0.3, 0.4]


def test_build_checks_then_instantiates_with_what_darts_lite_adds():
    widget = build({"_target_": "test_schema.Widget", "ratio": 0.25}, "w", size=4)
    assert (widget.size, widget.ratio) == (4, 0.25)
    with pytest.raises(ConfigError, match=r"w.ratio=0: must be in \(0, 1\)"):
        build({"_target_": "test_schema.Widget", "ratio": 0}, "w")


def _targets(node, prefix=""):
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str) and node["_target_"].startswith("darts_lite."):
            yield prefix, node["_target_"]
        for key, value in node.items():
            yield from _targets(value, f"{prefix}{key}.")


def test_every_darts_lite_target_in_conf_declares_its_arguments():
    """Each class a config group builds has a signature the checks can read: annotations that evaluate (typed
    arguments: the schema), and every key its config files set is one of its arguments."""
    conf = Path(__file__).resolve().parents[1] / "conf"
    seen = {}
    for path in conf.rglob("*.yaml"):
        for _prefix, target in _targets(yaml.safe_load(path.read_text()) or {}):
            seen.setdefault(target, path)
    assert {"darts_lite.data.ImageDataModule", "darts_lite.search.SearchModule", "darts_lite.relax.GumbelRelaxation",
            "darts_lite.spaces.darts.SearchNetwork", "darts_lite.spaces.nb201.SearchNetwork",
            "darts_lite.tricks.CollapseGuard"} <= set(seen)
    from darts_lite.registry import load_path

    for target in seen:
        params = parameters(load_path(target))  # raises when an annotation does not evaluate
        typed = [p for p in params.values() if p.annotation is not Any]
        assert typed or not params, f"{target} ({seen[target]}): no typed argument"
