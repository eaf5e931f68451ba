"""Property-based tests of the genotype readers: valid input round-trips exactly, any other input is refused with
a ValueError that says what is wrong; never another exception, never code run, never a file written."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    darts_genotypes,
    darts_texts,
    json_values,
    nb201_genotypes,
    nb201_texts,
    one_edit,
    surrogate_genotypes,
    triples_text,
)

from darts_lite.econas.archive import genotype_hash
from darts_lite.spaces.darts.genotype import Genotype, zoo
from darts_lite.spaces.nb201.genotype import Genotype as NB201Genotype
from darts_lite.surrogate.data import SurrogateDataError, genotype_from_nb301, genotype_to_nb301, load_table, write_table

# fixed seeds and bounded examples: the same cases on every run, within the suite's time budget
FIXED = settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def nothing_written():
    """Runs the block in an empty working folder and fails if anything appears in it."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(before)
        assert os.listdir(folder) == [], os.listdir(folder)


def refused_or_read(parse, text: str):
    """``parse(text)``: a genotype, or None after a ValueError whose message is one readable line or more."""
    with nothing_written():
        try:
            return parse(text)
        except ValueError as e:
            message = str(e)
            assert message.strip() and len(message) < 2000, repr(message)
            return None


@FIXED
@given(darts_genotypes(sparse=True))
def test_a_darts_genotype_round_trips_through_text_and_json(g):
    assert Genotype.parse(g.to_text()) == g
    assert Genotype.parse(g.to_json()) == g
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert Genotype.parse("  \n" + g.to_text() + "\t\n") == g  # surrounding white space is not part of it


@settings(FIXED, max_examples=25)
@given(darts_genotypes(st.integers(1, 4), sparse=True, inner_concat=True))
def test_any_genotype_with_edges_left_out_builds_a_network_that_trains(g):
    """A valid genotype, sparse cells included (that concatenates intermediate nodes: a reduction cell cannot join
    its full-size inputs to its reduced nodes), builds its evaluation network, whose forward and backward pass run
    and give finite values; its cells run exactly the kept edges."""
    import torch

    from darts_lite.spaces.darts.eval import EvalNetwork

    torch.manual_seed(0)
    net = EvalNetwork(g, C=4, num_classes=3, layers=3, auxiliary=False, in_channels=1).train()
    logits = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    kept = {name: sum(op != "none" for op, _ in pairs) for name, pairs in g.cells().items()}
    runs = sum(sum(cell.live) for cell in net.cells if hasattr(cell, "live"))  # 1 normal cell, 2 reduction cells
    assert runs == kept["normal"] + 2 * kept.get("reduce", 0)


@FIXED
@given(darts_genotypes(sparse=True, fixed_reduction=False))
def test_fairdarts_triples_read_as_the_same_cells(g):
    """FairDARTS's (op, node, input) text of a genotype reads back as the same kept edges per node and the same
    concatenation; a left-out edge comes back as ('none', 0)."""
    read = Genotype.parse(triples_text(g))

    def kept(pairs):
        return sorted((k // 2, op, j) for k, (op, j) in enumerate(pairs) if op != "none")

    steps = max(g.steps, read.steps)
    for cell in ("normal", "reduce"):
        assert kept(getattr(read, cell)) == kept(getattr(g, cell))
        assert getattr(read, f"{cell}_concat") == getattr(g, f"{cell}_concat")
        assert all(j == 0 for op, j in getattr(read, cell) if op == "none")
    assert read.steps <= steps


@FIXED
@given(nb201_genotypes())
def test_a_nb201_genotype_round_trips_through_text_and_json(g):
    assert NB201Genotype.parse(g.to_text()) == g
    assert NB201Genotype.parse(g.to_json()) == g
    assert NB201Genotype.parse(" " + g.to_text() + "\n") == g


@FIXED
@given(darts_texts())
def test_any_text_is_read_as_a_darts_genotype_or_refused_with_a_value_error(text):
    g = refused_or_read(Genotype.parse, text)
    if g is not None:  # what is read is a valid genotype that writes itself back to the same genotype
        assert Genotype.parse(g.to_text()) == g


@FIXED
@given(nb201_texts())
def test_any_text_is_read_as_a_nb201_genotype_or_refused_with_a_value_error(text):
    g = refused_or_read(NB201Genotype.parse, text)
    if g is not None:
        assert NB201Genotype.parse(g.to_text()) == g


@FIXED
@given(st.one_of(st.text(max_size=30), st.sampled_from(sorted(zoo())).map(str.lower)))
def test_a_published_name_is_found_or_refused_with_the_list_of_names(name):
    g = refused_or_read(Genotype.named, name)
    if g is None:
        with pytest.raises(ValueError, match="published genotypes: DARTS_V1"):
            Genotype.named(name)
    else:
        assert name.upper().replace("-", "_") in zoo()


@pytest.mark.parametrize("parse", [Genotype.parse, NB201Genotype.parse])
@pytest.mark.parametrize("value", [None, 5, b"|none~0|", ["normal"], {"normal": []}])
def test_a_value_that_is_not_text_is_refused(parse, value):
    with pytest.raises(ValueError):
        parse(value)


# ---- surrogate tables ------------------------------------------------------------------------------------------------
@FIXED
@given(st.lists(st.tuples(surrogate_genotypes(), st.integers(0, 10**6)), min_size=2, max_size=8,
                unique_by=lambda row: genotype_hash(row[0])).filter(lambda rows: len({a for _, a in rows}) > 1))
def test_a_surrogate_table_round_trips(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = write_table(os.path.join(folder, "t.csv"), [g for g, _ in rows], [a / 10**6 for _, a in rows])
        table = load_table(path, "fraction")
    assert [genotype_hash(g) for g in table.genotypes] == [genotype_hash(g) for g, _ in rows]
    assert table.accuracies.tolist() == [a / 10**6 for _, a in rows]
    assert table.skipped == [] and table.duplicates == []


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


_ACCURACIES = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8),
                        st.sampled_from(("", "0.5", "93.1", "nan", "-1", "1e309", "0x10", "True")))


@FIXED
@given(st.lists(st.tuples(st.one_of(surrogate_genotypes().map(Genotype.to_text).flatmap(one_edit), darts_texts()),
                          _ACCURACIES), max_size=6),
       st.sampled_from(("genotype,accuracy", "accuracy,genotype", "genotype", "g,a", "")),
       st.sampled_from(("fraction", "percent")))
def test_any_csv_table_is_read_or_refused_with_the_projects_error(rows, header, unit):
    lines = [header] + [f"{_csv_field(g)},{_csv_field(a)}" for g, a in rows]
    _read_table_text("\n".join(lines), ".csv", unit)


@FIXED
@given(st.lists(st.one_of(json_values().map(json.dumps), st.text(max_size=40),
                          st.tuples(surrogate_genotypes().map(Genotype.to_text).flatmap(one_edit), _ACCURACIES).map(
                              lambda r: json.dumps({"genotype": r[0], "accuracy": r[1]}))), max_size=6))
def test_any_jsonl_table_is_read_or_refused_with_the_projects_error(lines):
    _read_table_text("\n".join(lines), ".jsonl", "fraction")


def _read_table_text(text: str, suffix: str, unit: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "table" + suffix)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            table = load_table(path, unit)
        except SurrogateDataError as e:
            assert str(e).strip()
            return
        finally:
            assert os.listdir(folder) == ["table" + suffix]
    assert len(table.genotypes) == len(table.accuracies) >= 2
    assert all(0.0 <= a <= 1.0 for a in table.accuracies)


@FIXED
@given(surrogate_genotypes(distinct_inputs=True, fixed_reduction=False))
def test_a_nb301_configuration_round_trips(g):
    assert genotype_hash(genotype_from_nb301(genotype_to_nb301(g))) == genotype_hash(g)


@FIXED
@given(st.one_of(json_values(), surrogate_genotypes(distinct_inputs=True, fixed_reduction=False).map(
    genotype_to_nb301).flatmap(lambda c: st.dictionaries(st.sampled_from(sorted(c)), st.text(max_size=12)).map(
        lambda changed: {**c, **changed}))))
def test_any_nb301_configuration_is_read_or_refused_with_a_value_error(config):
    g = refused_or_read(genotype_from_nb301, config)
    if g is not None:
        assert genotype_from_nb301(genotype_to_nb301(g)) == g
