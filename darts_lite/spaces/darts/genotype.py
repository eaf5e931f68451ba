"""The DARTS space's Genotype: a discrete cell pair, derived from alphas and exchanged as text or JSON.

The text form is the one the DARTS reference code prints and NAS-Bench-301 reads:

    Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])

It is read with the standard library's parser (``ast``) and a whitelist of node types, never with ``eval``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ...genotype import check_genotype_object, read_genotype_source

# Order matters: alphas columns follow it (REFERENCE: DARTS candidate ops).
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# A genotype whose reduce cell is this marker asks for GDAS's fixed reduction cell.
FIXED_REDUCTION = "fixed_reduction"

Pair = tuple[str, int]


def _check_cell(name: str, pairs: Sequence[Pair], concat: Sequence[int], steps: int) -> None:
    if len(pairs) != 2 * steps:
        raise ValueError(f"{name}: expected {2 * steps} (op, input) pairs for {steps} nodes, got {len(pairs)}")
    for k, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"{name}[{k}]: expected an (op, input) pair, got {pair!r}")
        op, inp = pair
        if op not in PRIMITIVES:
            valid = ", ".join(p for p in PRIMITIVES if p != "none")
            raise ValueError(f"{name}[{k}]: unknown op {op!r}; valid ops: {valid} (none: an edge left out)")
        if isinstance(inp, bool) or not isinstance(inp, int):
            raise ValueError(f"{name}[{k}]: input index must be an integer, got {inp!r}")
        node = k // 2  # pairs 2k and 2k+1 feed intermediate node k = state k + 2
        if not 0 <= inp < node + 2:
            raise ValueError(
                f"{name}[{k}]: input {inp} out of range for intermediate node {node} "
                f"(valid: 0..{node + 1})"
            )
    absent = set(absent_states(pairs))
    for k, (op, inp) in enumerate(pairs):
        if op != "none" and inp in absent:
            raise ValueError(f"{name}[{k}]: reads state {inp}, which has no op (both its pairs are none)")
    if all(op == "none" for op, _ in pairs):
        raise ValueError(f"{name}: every edge is left out (all its pairs are none); a cell keeps at least one op")
    if not concat:
        raise ValueError(f"{name}_concat is empty")
    if len(set(concat)) != len(concat):
        raise ValueError(f"{name}_concat: a state is listed twice in {list(concat)}")
    for c in concat:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < steps + 2:
            raise ValueError(f"{name}_concat: state {c!r} out of range 0..{steps + 1}")
        if c in absent:
            raise ValueError(f"{name}_concat: state {c} has no op (both its pairs are none); leave it out")


def absent_states(pairs: Sequence[Pair]) -> list[int]:
    """The intermediate states of a cell whose two pairs are both ``none`` (a sparse cell, e.g. FairDARTS's threshold
    selection, leaves them out: nothing reads them and the cell does not concatenate them)."""
    return [k // 2 + 2 for k in range(0, len(pairs), 2) if pairs[k][0] == pairs[k + 1][0] == "none"]


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell as (op, input state) pairs plus the states they concatenate.

    ``reduce`` may be empty with ``reduce_concat`` empty and ``fixed_reduction=True``: the
    GDAS fixed reduction cell is used instead of a searched one.

    A pair whose op is ``none`` is an edge left out: a node of a sparse cell (FairDARTS's threshold selection) keeps
    one input or none. A node with both pairs ``none`` is absent: no pair reads it and the concatenation leaves it
    out. The text format also reads FairDARTS's (op, node, input) triples, one per kept edge.
    """

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...] = (2, 3, 4, 5)
    reduce: tuple[Pair, ...] = ()
    reduce_concat: tuple[int, ...] = (2, 3, 4, 5)
    fixed_reduction: bool = field(default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", tuple((str(o), i) for o, i in self.normal))
        object.__setattr__(self, "reduce", tuple((str(o), i) for o, i in self.reduce))
        object.__setattr__(self, "normal_concat", tuple(self.normal_concat))
        object.__setattr__(self, "reduce_concat", tuple(self.reduce_concat))
        steps = max(1, len(self.normal) // 2)
        _check_cell("normal", self.normal, self.normal_concat, steps)
        if self.fixed_reduction:
            if self.reduce:
                raise ValueError("a genotype with fixed_reduction=True has no searched reduce cell")
            object.__setattr__(self, "reduce_concat", ())
        else:
            _check_cell("reduce", self.reduce, self.reduce_concat, steps)

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def cells(self) -> dict[str, tuple[Pair, ...]]:
        """The (op, input state) pairs per searched cell type, the normal cell first (no "reduce" with the fixed
        reduction cell). The two pairs of a node are summed, so their order carries no meaning: here they come in
        input order, and two genotypes with the same cells give equal ``cells()`` position by position."""
        def canonical(pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
            out: list[Pair] = []
            for k in range(0, len(pairs), 2):
                out += sorted(pairs[k:k + 2], key=lambda p: (p[1], p[0]))
            return tuple(out)

        cells = {"normal": canonical(self.normal)}
        if not self.fixed_reduction:
            cells["reduce"] = canonical(self.reduce)
        return cells

    # ---- derivation -------------------------------------------------------------------------
    @staticmethod
    def cell_from_alphas(alphas: torch.Tensor, steps: int = 4, primitives: Sequence[str] = PRIMITIVES,
                         edge_scale: torch.Tensor | None = None,
                         strengths: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         threshold: float | None = None) -> list[Pair]:
        """Derive one cell. alphas: [num_edges, num_ops] logits, edges ordered node by node.

        Per node keep the 2 incoming edges whose strongest non-`none` softmax weight is largest,
        and on each the argmax op excluding `none` (DARTS, Sec. 2.4). ``edge_scale`` [num_edges] (PC-DARTS's edge
        normalization: the node-softmaxed betas) multiplies each edge's strength before the two are chosen.
        ``strengths``: alphas -> op weights [num_edges, num_ops] in place of the softmax (a relaxation's
        ``strengths``, e.g. FairDARTS's sigmoid). ``threshold`` (FairDARTS's threshold selection): a chosen edge keeps
        its op only if the op's strength is at least this, else it becomes ``('none', input)``; an edge that reads an
        absent node (both its pairs left out) is left out too.
        """
        a = alphas.detach().float().cpu()
        weights = torch.softmax(a, dim=-1) if strengths is None else strengths(a).detach().float()
        expected = sum(2 + i for i in range(steps))
        if weights.shape != (expected, len(primitives)):
            raise ValueError(f"alphas must be [{expected}, {len(primitives)}], got {list(weights.shape)}")
        if edge_scale is not None:
            edge_scale = edge_scale.detach().float().cpu()
            if edge_scale.shape != (expected,):
                raise ValueError(f"edge_scale must be [{expected}], got {list(edge_scale.shape)}")
        mask = torch.tensor([p != "none" for p in primitives])
        masked = weights.masked_fill(~mask, -1.0)
        pairs: list[Pair] = []
        start = 0
        for node in range(steps):
            absent = absent_states(pairs)  # of the nodes before this one
            n_in = node + 2
            block = masked[start:start + n_in]
            best_w, best_op = block.max(dim=-1)
            if edge_scale is not None:
                best_w = best_w * edge_scale[start:start + n_in]
            # stable sort keeps the lower input first on ties, so derivation is deterministic
            order = sorted(range(n_in), key=lambda j: -best_w[j].item())[:2]
            for j in order:
                keep = threshold is None or (block[j, best_op[j]].item() >= threshold and j not in absent)
                pairs.append((primitives[int(best_op[j])] if keep else "none", j))
            start += n_in
        return pairs

    @classmethod
    def from_alphas(
        cls,
        alpha_normal: torch.Tensor,
        alpha_reduce: torch.Tensor | None,
        steps: int = 4,
        multiplier: int = 4,
        primitives: Sequence[str] = PRIMITIVES,
        normal_scale: torch.Tensor | None = None,
        reduce_scale: torch.Tensor | None = None,
        strengths: Callable[[torch.Tensor], torch.Tensor] | None = None,
        threshold: float | None = None,
    ) -> Genotype:
        """Genotype of a search network's alphas; ``alpha_reduce=None`` means a fixed reduction cell.
        ``normal_scale`` / ``reduce_scale``: optional per-edge factors [num_edges] of the edge choice (see
        ``cell_from_alphas``); ``strengths``: what ranks edges and ops in place of the softmax; ``threshold``:
        FairDARTS's threshold selection (a sparse cell concatenates only the nodes that kept an op)."""
        full = tuple(range(2 + steps - multiplier, steps + 2))

        def cell(alphas: torch.Tensor, scale: torch.Tensor | None, name: str) -> tuple[tuple[Pair, ...], tuple[int, ...]]:
            pairs = cls.cell_from_alphas(alphas, steps, primitives, scale, strengths, threshold)
            concat = tuple(c for c in full if c not in absent_states(pairs))
            if not concat:
                raise ValueError(f"no op of the {name} cell reaches the threshold {threshold}: every node it "
                                 "concatenates is left out; lower the threshold")
            return tuple(pairs), concat

        normal, normal_concat = cell(alpha_normal, normal_scale, "normal")
        if alpha_reduce is None:
            return cls(normal=normal, normal_concat=normal_concat, fixed_reduction=True)
        return cls(normal, normal_concat, *cell(alpha_reduce, reduce_scale, "reduction"))

    # ---- text and JSON ----------------------------------------------------------------------
    def to_text(self) -> str:
        """The DARTS reference text format (a fixed reduction cell writes ``reduce=[]``)."""

        def cell(pairs: Sequence[Pair]) -> str:
            return "[" + ", ".join(f"('{o}', {i})" for o, i in pairs) + "]"

        def ints(xs: Sequence[int]) -> str:
            return "[" + ", ".join(str(x) for x in xs) + "]"

        return (
            f"Genotype(normal={cell(self.normal)}, normal_concat={ints(self.normal_concat)}, "
            f"reduce={cell(self.reduce)}, reduce_concat={ints(self.reduce_concat)})"
        )

    __str__ = to_text

    def to_dict(self) -> dict:
        return {
            "normal": [[o, i] for o, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[o, i] for o, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "fixed_reduction": self.fixed_reduction,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        check_genotype_object(data, {"normal", "normal_concat", "reduce", "reduce_concat", "fixed_reduction"})
        if "normal" not in data:
            raise ValueError("genotype JSON needs a 'normal' cell")

        def pairs(key: str) -> tuple[Pair, ...]:
            raw = data.get(key, [])
            if not isinstance(raw, list):
                raise ValueError(f"{key}: expected a list of [op, input] pairs")
            out = []
            for k, p in enumerate(raw):
                if not (isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)):
                    raise ValueError(f"{key}[{k}]: expected [op, input], got {p!r}")
                out.append((p[0], p[1]))
            return tuple(out)

        def concat(key: str) -> tuple[int, ...]:
            raw = data.get(key, [2, 3, 4, 5])
            if not isinstance(raw, (list, tuple)) or any(isinstance(c, bool) or not isinstance(c, int) for c in raw):
                raise ValueError(f"{key}: expected a list of state indices (integers), got {raw!r}")
            return tuple(raw)

        fixed = data.get("fixed_reduction")
        if fixed is not None and not isinstance(fixed, bool):
            raise ValueError(f"fixed_reduction: expected true or false, got {fixed!r}")
        if fixed is None:  # the text format marks the fixed reduction cell by an empty reduce list
            fixed = "reduce" in data and data["reduce"] == []
        elif not fixed and data.get("reduce") == []:
            raise ValueError("reduce: empty, but fixed_reduction is false; give the reduce cell's pairs")
        return cls(
            normal=pairs("normal"),
            normal_concat=concat("normal_concat"),
            reduce=pairs("reduce"),
            reduce_concat=() if fixed else concat("reduce_concat"),
            fixed_reduction=fixed,
        )

    @classmethod
    def named(cls, name: str) -> Genotype:
        """A published genotype by name (see ``zoo()``), e.g. ``Genotype.named("DARTS_V2")``."""
        key = name.upper().replace("-", "_")
        if key not in _ZOO_TEXT:
            raise ValueError(f"unknown genotype name {name!r}; published genotypes: {', '.join(_ZOO_TEXT)}")
        return cls.parse(_ZOO_TEXT[key][0])

    @classmethod
    def parse(cls, text: str) -> Genotype:
        """Parse the DARTS text format or JSON. Raises ValueError saying what is wrong and where."""
        source = read_genotype_source(text)
        return cls.from_dict(source if isinstance(source, dict) else _parse_darts_text(source))


def _position(text: str, node: ast.AST, end: bool = False) -> int:
    """Character offset of where an ast node starts (or ends) in ``text``; ast counts columns in UTF-8 bytes."""
    lineno, col = (node.end_lineno, node.end_col_offset) if end else (node.lineno, node.col_offset)
    lines = text.split("\n")
    column = len(lines[lineno - 1].encode()[:col].decode(errors="ignore"))
    return sum(len(previous) + 1 for previous in lines[: lineno - 1]) + column


def _parse_darts_text(s: str) -> dict:
    """Read ``Genotype(key=value, ...)`` through the standard library's parser, without evaluating it.

    Only these node types are accepted: the ``Genotype`` call with keyword arguments, lists, tuples,
    string and integer constants (a minus sign on an integer included), and ``range(a, b)``; any other
    node (a name, an attribute, an operator, another call, ...) is rejected with its position.
    """
    if not s.strip():
        raise ValueError("genotype text is empty; expected the DARTS text format, e.g. "
                         "\"Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)\", or JSON")
    try:
        tree = ast.parse(s, mode="eval")
    except SyntaxError as e:
        if e.lineno is None or e.offset is None:
            raise ValueError(f"genotype text: {e.msg}") from None
        lines = s.split("\n")
        where = sum(len(line) + 1 for line in lines[: e.lineno - 1]) + e.offset - 1
        if "forgot a comma" in e.msg:
            raise ValueError(f"genotype text: expected ',' or ')' at position {where}: a comma is missing") from None
        got = s[where] if 0 <= where < len(s) else "end of text"
        raise ValueError(f"genotype text: unexpected character {got!r} at position {where} ({e.msg})") from None
    except (RecursionError, MemoryError):
        raise ValueError("genotype text: nested too deeply") from None
    except ValueError as e:  # e.g. a null byte, on Python versions that raise ValueError for it
        raise ValueError(f"genotype text: {e}") from None

    def unexpected(node: ast.AST, wanted: str) -> ValueError:
        operand = node.value if isinstance(node, ast.Attribute) else getattr(node, "left", None)
        if isinstance(node, ast.BoolOp):
            operand = node.values[0]
        if operand is not None:
            # an attribute or an operator (os.system, 5+1): name the character that broke the form
            end = _position(s, operand, end=True)
            where = end + len(s[end:]) - len(s[end:].lstrip())
            return ValueError(f"genotype text: unexpected character {s[where:where + 1]!r} at position {where} "
                              f"(expected {wanted})")
        segment = ast.get_source_segment(s, node.func if isinstance(node, ast.Call) else node) or type(node).__name__
        got = repr(segment if len(segment) <= 40 else segment[:40] + "...")
        return ValueError(f"genotype text: expected {wanted} at position {_position(s, node)}, got {got}")

    def integer(node: ast.AST) -> int:
        # a leading minus is part of the number, as in the DARTS text; the cell check then rejects it
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return sign * node.value
        raise unexpected(node, "an integer")

    def pair(node: ast.AST) -> tuple:
        # (op, input), or FairDARTS's (op, node, input)
        if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) in (2, 3):
            op, *numbers = node.elts
            if isinstance(op, ast.Constant) and type(op.value) is str:
                return (op.value, *(integer(n) for n in numbers))
            raise unexpected(op, "an op name in quotes")
        raise unexpected(node, "an (op, input) pair")

    def value(key: str, node: ast.AST) -> list:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            if len(node.args) != 2 or node.keywords:
                raise unexpected(node, "range(a, b)")
            a, b = integer(node.args[0]), integer(node.args[1])
            if b - a > 64:
                raise ValueError(f"genotype text: range({a}, {b}) at position {_position(s, node)} is too long")
            return list(range(a, b))
        if not isinstance(node, ast.List):
            raise unexpected(node, "a list or range(...)")
        if key.endswith("_concat"):
            return [integer(item) for item in node.elts]
        return [pair(item) for item in node.elts]

    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise unexpected(call.func if isinstance(call, ast.Call) else call, "'Genotype'")
    if call.args:
        raise unexpected(call.args[0], "key=value arguments only")
    fields: dict = {}
    for keyword in call.keywords:
        key = keyword.arg
        if key is None:
            raise ValueError(f"genotype text: '**' at position {_position(s, keyword)}: give each field as key=value")
        if key not in ("normal", "normal_concat", "reduce", "reduce_concat"):
            raise ValueError(f"genotype text: unknown field {key!r} at position {_position(s, keyword)}")
        if key in fields:
            raise ValueError(f"genotype text: field {key!r} given twice (position {_position(s, keyword)})")
        fields[key] = value(key, keyword.value)
    return _pairs_of_triples(fields)


def _pairs_of_triples(fields: dict) -> dict:
    """FairDARTS's text lists a sparse cell as (op, node, input) triples, one per kept edge: the same cell as pairs,
    two per node, ``('none', 0)`` where a node keeps fewer than two edges; the concatenation keeps only the nodes
    that kept an edge (FairDARTS's cell concatenates exactly those). Fields of pairs come back as they are."""
    cells = {key: fields[key] for key in ("normal", "reduce") if key in fields}
    kinds = {len(item) for items in cells.values() for item in items}
    if 3 not in kinds:
        return fields
    if kinds != {3}:
        raise ValueError("genotype text: mixes (op, input) pairs and (op, node, input) triples; give one form")
    last = max([n for items in cells.values() for _, n, _ in items]
               + [c for key in ("normal_concat", "reduce_concat") for c in fields.get(key, [])])
    out = dict(fields)
    for key, triples in cells.items():
        if not triples:
            continue  # reduce=[]: the fixed reduction cell
        kept: dict[int, list[Pair]] = {n: [] for n in range(2, last + 1)}
        for k, (op, n, i) in enumerate(triples):
            if n not in kept:
                raise ValueError(f"genotype text: {key}[{k}] ({op!r}, {n}, {i}): node {n} out of range 2..{last}")
            kept[n].append((op, i))
        pairs: list[Pair] = []
        for n, edges in kept.items():
            if len(edges) > 2:
                raise ValueError(f"genotype text: {key} node {n} keeps {len(edges)} edges; a DARTS cell takes at most "
                                 "two per node")
            pairs += edges + [("none", 0)] * (2 - len(edges))
        present = [n for n, edges in kept.items() if edges]
        out[key] = pairs
        out[f"{key}_concat"] = [c for c in fields.get(f"{key}_concat", present) if c < 2 or c in present]
    return out


# Published cells. Each entry: (text in the DARTS format, where it comes from). CIFAR-10 numbers
# are test error, parameters without the auxiliary head.
_ZOO_TEXT: dict[str, tuple[str, str]] = {
    "DARTS_V1": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
        "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], "
        "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
        "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
        "DARTS first order (Liu et al., ICLR 2019): 3.00% error, 3.3M params in the paper's table; "
        "this cell builds 3.17M at C=36, 20 cells (the same network code gives DARTS_V2 its published 3.35M)",
    ),
    "DARTS_V2": (
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
        "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
        "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
        "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",
        "DARTS second order (Liu et al., ICLR 2019): 2.76% error, 3.3M params; ImageNet 4.7M",
    ),
    "GDAS_V1": (
        "Genotype(normal=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), ('sep_conv_5x5', 2), "
        "('sep_conv_3x3', 3), ('skip_connect', 0), ('sep_conv_5x5', 4), ('sep_conv_3x3', 3)], normal_concat=[2, 3, 4, 5], "
        "reduce=[('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('sep_conv_5x5', 2), ('sep_conv_5x5', 1), ('dil_conv_5x5', 2), "
        "('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_5x5', 1)], reduce_concat=[2, 3, 4, 5])",
        "GDAS (Dong & Yang, CVPR 2019): 2.93% error, 3.4M params",
    ),
    "GDAS_F1": (
        "Genotype(normal=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), ('sep_conv_3x3', 2), "
        "('skip_connect', 0), ('sep_conv_3x3', 2), ('skip_connect', 0), ('sep_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
        "reduce=[], reduce_concat=[])",
        "GDAS with the fixed reduction cell (Dong & Yang, CVPR 2019): 2.82% error, 2.5M params",
    ),
    "PC_DARTS": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
        "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=[2, 3, 4, 5], "
        "reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), "
        "('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=[2, 3, 4, 5])",
        "PC-DARTS (Xu et al., ICLR 2020), CIFAR-10 search: 2.57% error, 3.6M params",
    ),
    "P_DARTS": (
        "Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), "
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)], normal_concat=[2, 3, 4, 5], "
        "reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), "
        "('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=[2, 3, 4, 5])",
        "P-DARTS (Chen et al., ICCV 2019), CIFAR-10 search: 2.50% error, 3.4M params",
    ),
    # FairDARTS's threshold selection keeps fewer than two inputs on some nodes: its code writes (op, node, input)
    "FAIRDARTS_A": (
        "Genotype(normal=[('sep_conv_3x3', 2, 0), ('sep_conv_5x5', 2, 1), ('max_pool_3x3', 4, 0), ('sep_conv_3x3', 5, 0)], "
        "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 2, 0), ('avg_pool_3x3', 2, 1), ('avg_pool_3x3', 3, 0), "
        "('dil_conv_5x5', 3, 1), ('avg_pool_3x3', 4, 0), ('sep_conv_5x5', 4, 1), ('skip_connect', 5, 0), "
        "('skip_connect', 5, 1)], reduce_concat=range(2, 6))",
        "FairDARTS (Chu et al., ECCV 2020), threshold selection: 2.54% error, 2.83M params counted with the "
        "auxiliary head (this cell builds 2.837M with it, 2.36M without), 373M FLOPs",
    ),
    "FAIRDARTS_B": (
        "Genotype(normal=[('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 2, 1), ('sep_conv_3x3', 3, 1), ('dil_conv_3x3', 4, 0), "
        "('sep_conv_5x5', 4, 1), ('dil_conv_5x5', 5, 1)], normal_concat=range(2, 6), reduce=[('skip_connect', 2, 0), "
        "('dil_conv_3x3', 2, 1), ('skip_connect', 3, 0), ('dil_conv_3x3', 3, 1), ('max_pool_3x3', 4, 0), "
        "('sep_conv_3x3', 4, 1), ('skip_connect', 5, 2), ('max_pool_3x3', 5, 0)], reduce_concat=range(2, 6))",
        "FairDARTS (Chu et al., ECCV 2020), threshold selection: 2.51% error, 3.88M params counted with the "
        "auxiliary head (this cell builds 3.884M with it, 3.41M without), 536M FLOPs",
    ),
}


def zoo() -> dict[str, str]:
    """Names of the published genotypes with their sources."""
    return {name: source for name, (_, source) in _ZOO_TEXT.items()}
