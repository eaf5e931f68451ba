"""One registry type for every named thing: names, lazy entries, the error for an unknown name."""

import pytest

from darts_lite.errors import ConfigError
from darts_lite.registry import Registry, UnknownName, load_path


def test_register_by_decorator_value_and_import_path():
    reg = Registry("widget")

    @reg.register("plain")
    class Plain:
        """A plain widget."""

    reg.register("lazy", "collections:OrderedDict", summary="loaded when first asked for")
    assert list(reg) == ["plain", "lazy"] and len(reg) == 2 and "lazy" in reg and "other" not in reg
    assert reg["plain"] is Plain and reg.summary("plain") == "A plain widget."
    import collections

    assert reg["lazy"] is collections.OrderedDict  # imported on first use
    assert reg.summaries() == {"plain": "A plain widget.", "lazy": "loaded when first asked for"}
    assert reg.choices() == "plain, lazy"


def test_an_unknown_name_is_one_config_error_listing_the_names():
    reg = Registry("widget")
    reg.register("a", 1)
    reg.register("b", 2)
    with pytest.raises(UnknownName, match=r"widget 'c': unknown; widgets: a, b") as info:
        reg["c"]
    assert isinstance(info.value, ConfigError)
    with pytest.raises(UnknownName):
        reg.summary("c")
    with pytest.raises(UnknownName):
        reg[3]  # not even a string


def test_a_taken_name_is_refused_unless_it_is_the_same_thing_again():
    reg = Registry("widget")
    reg.register("x", "collections:OrderedDict")
    import collections

    reg.register("x", collections.OrderedDict)  # what the lazy path names: the same entry
    reg.register("x", "collections:OrderedDict")
    with pytest.raises(ValueError, match="widget 'x' is registered already"):
        reg.register("x", dict)


def test_load_path_takes_colon_dot_and_module_paths_and_says_what_is_missing():
    import darts_lite.relax as relax

    assert load_path("darts_lite.relax:GumbelRelaxation") is relax.GumbelRelaxation
    assert load_path("darts_lite.relax.GumbelRelaxation.set_epoch") is relax.GumbelRelaxation.set_epoch
    assert load_path("darts_lite.relax") is relax
    with pytest.raises(ImportError, match="no module named 'nope'"):
        load_path("nope.thing")
    with pytest.raises(ImportError, match="darts_lite.relax has no 'Nope'"):
        load_path("darts_lite.relax.Nope")


def test_every_named_thing_of_the_package_is_one_registry_type_whose_entries_load():
    from darts_lite.evolve import ALGORITHMS
    from darts_lite.leaderboard import METHODS
    from darts_lite.relax import RELAXATIONS
    from darts_lite.run.tasks import TASKS
    from darts_lite.spaces import SPACES
    from darts_lite.surrogate.benchmark import ALGORITHMS as SURROGATE_SEARCHES
    from darts_lite.surrogate.models import MODELS
    from darts_lite.tricks import RESOURCES, SELECTIONS

    registries = {"task": TASKS, "space": SPACES, "relaxation": RELAXATIONS, "evolution algorithm": ALGORITHMS,
                  "surrogate-search algorithm": SURROGATE_SEARCHES, "surrogate model": MODELS, "selection": SELECTIONS,
                  "resource kind": RESOURCES, "leaderboard method": METHODS}
    for kind, reg in registries.items():
        assert isinstance(reg, Registry) and reg.kind == kind and len(reg) >= 2, kind
        for name in reg:
            assert reg[name] is not None and reg.summary(name), (kind, name)
    assert set(TASKS) == {"search", "train", "select", "proxy_study", "econas", "surrogate", "surrogate_search",
                          "surrogate_predict", "leaderboard", "ofa", "export"}
    assert list(RELAXATIONS) == ["softmax", "gumbel"] and set(SPACES) >= {"darts", "nb201"}


def test_the_entry_point_dispatches_an_unknown_task_as_one_message(tmp_path):
    from conftest import run_cli

    proc = run_cli("task=dance", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "task 'dance': unknown; tasks: search, train, select, proxy_study, econas" in proc.stderr
