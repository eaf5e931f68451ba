"""Hypothesis strategies for what darts_lite reads, shared by the property-based tests.

Valid inputs (genotypes of both spaces, as objects, text and JSON) and the hostile ones a user or a file can
hand over: arbitrary text, text built from the genotype grammar's own characters, and valid text with one edit.
"""

from __future__ import annotations

import json

from hypothesis import assume
from hypothesis import strategies as st

from darts_lite.spaces.darts.genotype import PRIMITIVES as DARTS_PRIMITIVES
from darts_lite.spaces.darts.genotype import Genotype
from darts_lite.spaces.nb201.genotype import EDGES as NB201_EDGES
from darts_lite.spaces.nb201.genotype import PRIMITIVES as NB201_PRIMITIVES
from darts_lite.spaces.nb201.genotype import Genotype as NB201Genotype

DARTS_OPS = tuple(op for op in DARTS_PRIMITIVES if op != "none")  # a derived DARTS cell never keeps `none`

# the characters genotype text is made of, and those a hostile text would add to them
GRAMMAR = "Genotype(normal=[('sep_conv_3x3', 0)], reduce_concat=range(2, 6))|+~none_skip12345{}\":,"
HOSTILE = GRAMMAR + "._;\\\n\t\x00 #@!$%^&*-/<>?`aeiou__import__os system lambda exec eval open"


@st.composite
def darts_cell(draw, steps: int, full_concat: bool = False, distinct_inputs: bool = False,
               inner_concat: bool = False) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    """One DARTS cell: two (op, input) pairs per intermediate node (inputs: the two cell inputs and the nodes
    before it) and the states it concatenates (``full_concat``: every intermediate node, as the papers' cells;
    ``distinct_inputs``: a node's two pairs read two different states, as NAS-Bench-301's cells)."""
    pairs = []
    for node in range(steps):
        if distinct_inputs:
            inputs = draw(st.lists(st.integers(0, node + 1), min_size=2, max_size=2, unique=True))
        else:
            inputs = [draw(st.integers(0, node + 1)) for _ in range(2)]
        pairs += [(draw(st.sampled_from(DARTS_OPS)), i) for i in inputs]
    if full_concat:
        return tuple(pairs), tuple(range(2, steps + 2))
    first = 2 if inner_concat else 0  # inner_concat: intermediate states only (what a network can build)
    concat = draw(st.lists(st.integers(first, steps + 1), min_size=1, max_size=steps + 2 - first, unique=True))
    return tuple(pairs), tuple(concat)


@st.composite
def sparse_cell(draw, steps: int, inner_concat: bool = False) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    """A sparse DARTS cell, as FairDARTS's threshold selection leaves them: any pair may be ``none`` (an edge left
    out, its input any state), no pair reads a node whose two pairs are ``none``, and the concatenation lists only
    states that are there."""
    pairs, absent = [], set()
    for node in range(steps):
        for _ in range(2):
            inp = draw(st.integers(0, node + 1))
            op = draw(st.sampled_from(("none",) + DARTS_OPS)) if inp not in absent else "none"
            pairs.append((op, inp))
        if pairs[-1][0] == pairs[-2][0] == "none":
            absent.add(node + 2)
    assume(len(absent) < steps)  # a cell keeps at least one op
    there = [c for c in range(2 if inner_concat else 0, steps + 2) if c not in absent]
    concat = draw(st.lists(st.sampled_from(there), min_size=1, max_size=len(there), unique=True))
    return tuple(pairs), tuple(concat)


def triples_text(g: Genotype) -> str:
    """``g`` in FairDARTS's text form: (op, node, input) for every kept edge; the concatenation as ``g`` has it."""
    def cell(pairs):
        return "[" + ", ".join(f"('{op}', {k // 2 + 2}, {j})" for k, (op, j) in enumerate(pairs) if op != "none") + "]"

    return (f"Genotype(normal={cell(g.normal)}, normal_concat={list(g.normal_concat)}, reduce={cell(g.reduce)}, "
            f"reduce_concat={list(g.reduce_concat)})")


@st.composite
def darts_genotypes(draw, steps: st.SearchStrategy[int] | None = None, full_concat: bool = False,
                    distinct_inputs: bool = False, fixed_reduction: bool = True, sparse: bool = False,
                    inner_concat: bool = False) -> Genotype:
    """A valid DARTS-space genotype: any number of nodes, any concatenation, sometimes GDAS's fixed reduction
    (``fixed_reduction=False``: never); ``sparse``: sometimes sparse cells (edges left out, ``sparse_cell``);
    ``inner_concat``: cells concatenate intermediate states only, as every network built from a genotype needs."""
    n = draw(steps if steps is not None else st.integers(1, 6))

    def cell():
        if sparse and draw(st.booleans()):
            return draw(sparse_cell(n, inner_concat))
        return draw(darts_cell(n, full_concat, distinct_inputs, inner_concat))

    normal, normal_concat = cell()
    if fixed_reduction and draw(st.booleans()) and draw(st.booleans()):
        return Genotype(normal, normal_concat, (), (), fixed_reduction=True)
    reduce, reduce_concat = cell()
    return Genotype(normal, normal_concat, reduce, reduce_concat)


def surrogate_genotypes(**kw) -> st.SearchStrategy[Genotype]:
    """Genotypes the surrogates encode: 4 nodes, every node concatenated."""
    return darts_genotypes(st.just(4), full_concat=True, **kw)


@st.composite
def nb201_genotypes(draw) -> NB201Genotype:
    """A valid NAS-Bench-201 cell: an op per edge, each edge reading its own input node."""
    return NB201Genotype(tuple((draw(st.sampled_from(NB201_PRIMITIVES)), j) for _, j in NB201_EDGES))


@st.composite
def one_edit(draw, text: str) -> str:
    """``text`` with one character deleted, inserted or replaced (the typo, the truncated file, the stray quote)."""
    if not text:
        return draw(st.text(alphabet=HOSTILE, max_size=1))
    at = draw(st.integers(0, len(text) - 1))
    char = draw(st.sampled_from(HOSTILE))
    how = draw(st.sampled_from(("delete", "insert", "replace", "truncate")))
    if how == "delete":
        return text[:at] + text[at + 1:]
    if how == "insert":
        return text[:at] + char + text[at:]
    if how == "replace":
        return text[:at] + char + text[at + 1:]
    return text[:at]


def json_values(max_leaves: int = 20) -> st.SearchStrategy:
    """Any JSON value: what a hand-edited or foreign genotype file may hold."""
    leaves = st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False) | st.text(max_size=15) \
        | st.sampled_from(DARTS_PRIMITIVES + NB201_PRIMITIVES)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=8) | st.dictionaries(
        st.sampled_from(("normal", "normal_concat", "reduce", "reduce_concat", "fixed_reduction", "space", "cell",
                         "extra")) | st.text(max_size=8), inner, max_size=6), max_leaves=max_leaves)


def darts_texts() -> st.SearchStrategy[str]:
    """Text a DARTS genotype may be read from, valid or not."""
    valid = darts_genotypes(sparse=True)
    return st.one_of(
        st.text(max_size=300),
        st.text(alphabet=GRAMMAR, max_size=300),
        valid.map(Genotype.to_text).flatmap(one_edit),
        valid.filter(lambda g: not g.fixed_reduction).map(triples_text).flatmap(one_edit),
        valid.map(Genotype.to_json).flatmap(one_edit),
        json_values().map(json.dumps),
    )


def nb201_texts() -> st.SearchStrategy[str]:
    """Text a NAS-Bench-201 genotype may be read from, valid or not."""
    valid = nb201_genotypes()
    return st.one_of(
        st.text(max_size=200),
        st.text(alphabet="|+~0123" + "".join(NB201_PRIMITIVES), max_size=200),
        valid.map(NB201Genotype.to_text).flatmap(one_edit),
        valid.map(NB201Genotype.to_json).flatmap(one_edit),
        json_values().map(json.dumps),
    )


# ---- files: what a file darts_lite reads may hold instead of what darts_lite wrote ----------------------------------
def truncated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` cut short at any length (a copy or a write that stopped, a full disk)."""
    return st.integers(0, max(len(data) - 1, 0)).map(lambda n: data[:n])


def one_byte_changed(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with one byte changed to any other value (a flipped bit, an edit in a hex editor)."""
    return st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)).map(
        lambda at: data[:at[0]] + bytes([data[at[0]] ^ at[1]]) + data[at[0] + 1:])


def damaged_bytes(data: bytes) -> st.SearchStrategy[bytes]:
    """Bytes in place of a valid file's ``data``: any bytes, the file truncated, one byte of it changed, nothing."""
    return st.one_of(st.binary(max_size=300), truncated(data), one_byte_changed(data), st.just(b""))


@st.composite
def one_field_changed(draw, value, leaves: st.SearchStrategy | None = None, max_depth: int = 4):
    """``value`` (the dicts and lists a JSON or torch file holds) with one entry at any depth up to ``max_depth``
    deleted or replaced by one of ``leaves`` (default: any JSON value), or the whole of it replaced."""
    leaves = json_values(max_leaves=6) if leaves is None else leaves
    if not isinstance(value, (dict, list)) or not value or max_depth == 0 or draw(st.integers(0, 4)) == 0:
        return draw(leaves)
    key = draw(st.sampled_from(list(value) if isinstance(value, dict) else range(len(value))))
    changed = dict(value) if isinstance(value, dict) else list(value)
    if isinstance(changed, dict) and draw(st.integers(0, 3)) == 0:
        del changed[key]  # a field missing
    else:
        changed[key] = draw(one_field_changed(value[key], leaves, max_depth - 1))
    return changed
