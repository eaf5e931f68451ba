"""The suite's own scheduling (tests/conftest.py): the tests of a module marked ``xdist_group`` share one worker."""

from pathlib import Path

from conftest import pytest_xdist_make_scheduler

ROOT = Path(__file__).resolve().parent.parent


class _Config:
    """What the scheduler reads of pytest's config under ``-n 2 --dist loadgroup``."""

    rootpath = ROOT

    def __init__(self, dist: str = "loadgroup"):
        self.values = {"dist": dist, "tx": ["2*popen"]}

    def getvalue(self, name):
        return self.values[name]


def test_a_marked_modules_tests_form_one_group_and_the_rest_go_their_own_way():
    scheduler = pytest_xdist_make_scheduler(_Config(), None)
    scope = scheduler._split_scope
    ddp = {scope("tests/test_ddp.py::test_ddp_search_on_two_processes[gdas]"),
           scope("tests/test_ddp.py::test_alpha_drift_across_ranks_is_caught"),
           scope("tests/test_checkpoint_cells_ddp.py::test_both_ranks_hold_the_same_parameters[darts]")}
    assert ddp == {"ddp"}  # two modules, one group: DDP runs one at a time
    assert scope("tests/test_export.py::test_the_onnx_file_gives_the_programs_logits") == "export"
    unmarked = "tests/test_plots.py::test_study_plots_scatter_and_curves"
    assert scope(unmarked) == unmarked
    assert scope("tests/test_plots.py::test_x@mine") == "mine"  # xdist's own suffix, where pytest keeps it
    assert pytest_xdist_make_scheduler(_Config(dist="load"), None) is None  # another --dist: xdist's own
