"""The Genotype: a discrete DARTS-space cell pair, derived from alphas and exchanged as text or JSON.

The text form is the one the DARTS reference code prints and NAS-Bench-301 reads:

    Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])

It is parsed with a small tokenizer, never with ``eval``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

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
        if op not in PRIMITIVES or op == "none":
            valid = ", ".join(p for p in PRIMITIVES if p != "none")
            raise ValueError(f"{name}[{k}]: unknown op {op!r}; valid ops: {valid}")
        if isinstance(inp, bool) or not isinstance(inp, int):
            raise ValueError(f"{name}[{k}]: input index must be an integer, got {inp!r}")
        node = k // 2  # pairs 2k and 2k+1 feed intermediate node k = state k + 2
        if not 0 <= inp < node + 2:
            raise ValueError(
                f"{name}[{k}]: input {inp} out of range for intermediate node {node} "
                f"(valid: 0..{node + 1})"
            )
    if not concat:
        raise ValueError(f"{name}_concat is empty")
    if len(set(concat)) != len(concat):
        raise ValueError(f"{name}_concat: a state is listed twice in {list(concat)}")
    for c in concat:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < steps + 2:
            raise ValueError(f"{name}_concat: state {c!r} out of range 0..{steps + 1}")


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell as (op, input state) pairs plus the states they concatenate.

    ``reduce`` may be empty with ``reduce_concat`` empty and ``fixed_reduction=True``: the
    GDAS fixed reduction cell is used instead of a searched one.
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

    # ---- derivation -------------------------------------------------------------------------
    @staticmethod
    def cell_from_alphas(alphas: torch.Tensor, steps: int = 4, primitives: Sequence[str] = PRIMITIVES) -> list[Pair]:
        """Derive one cell. alphas: [num_edges, num_ops] logits, edges ordered node by node.

        Per node keep the 2 incoming edges whose strongest non-`none` softmax weight is largest,
        and on each the argmax op excluding `none` (DARTS, Sec. 2.4).
        """
        weights = torch.softmax(alphas.detach().float().cpu(), dim=-1)
        expected = sum(2 + i for i in range(steps))
        if weights.shape != (expected, len(primitives)):
            raise ValueError(f"alphas must be [{expected}, {len(primitives)}], got {list(weights.shape)}")
        mask = torch.tensor([p != "none" for p in primitives])
        masked = weights.masked_fill(~mask, -1.0)
        pairs: list[Pair] = []
        start = 0
        for node in range(steps):
            n_in = node + 2
            block = masked[start:start + n_in]
            best_w, best_op = block.max(dim=-1)
            # stable sort keeps the lower input first on ties, so derivation is deterministic
            order = sorted(range(n_in), key=lambda j: -best_w[j].item())[:2]
            for j in order:
                pairs.append((primitives[int(best_op[j])], j))
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
    ) -> Genotype:
        """Genotype of a search network's alphas; ``alpha_reduce=None`` means a fixed reduction cell."""
        concat = tuple(range(2 + steps - multiplier, steps + 2))
        normal = cls.cell_from_alphas(alpha_normal, steps, primitives)
        if alpha_reduce is None:
            return cls(normal=tuple(normal), normal_concat=concat, fixed_reduction=True)
        reduce = cls.cell_from_alphas(alpha_reduce, steps, primitives)
        return cls(tuple(normal), concat, tuple(reduce), concat)

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
        if not isinstance(data, dict):
            raise ValueError(f"genotype JSON must be an object, got {type(data).__name__}")
        unknown = set(data) - {"normal", "normal_concat", "reduce", "reduce_concat", "fixed_reduction"}
        if unknown:
            raise ValueError(f"genotype JSON has unknown keys: {sorted(unknown)}")
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
    def parse(cls, text: str) -> Genotype:
        """Parse the DARTS text format or JSON. Raises ValueError saying what is wrong and where."""
        if not isinstance(text, str):
            raise ValueError(f"genotype text must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT:
            raise ValueError(f"genotype text is {len(text)} characters long; a genotype is under {MAX_TEXT}")
        s = text.strip()
        if s.startswith("{"):
            try:
                return cls.from_dict(json.loads(s))
            except (json.JSONDecodeError, RecursionError) as e:
                raise ValueError(f"genotype JSON is malformed: {e}") from None
        return cls.from_dict(_parse_darts_text(s))


# A genotype of any search space this library builds is a few hundred characters; the cap keeps
# hostile input from costing time or memory.
MAX_TEXT = 100_000


_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<int>-?\d+)|(?P<str>'[^'\\]*'|\"[^\"\\]*\")|(?P<punct>[()\[\],=]))"
)


_TRAILING_SPACE = re.compile(r"\s*\Z")


def _tokenize(s: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(s):
        if _TRAILING_SPACE.match(s, pos):
            break
        m = _TOKEN.match(s, pos)
        if not m:
            raise ValueError(f"genotype text: unexpected character {s[pos:].lstrip()[:1]!r} at position {pos}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


def _parse_darts_text(s: str) -> dict:
    """Recursive-descent parser for ``Genotype(key=value, ...)``; values are lists of (str, int)
    pairs, lists of ints or ``range(a, b)``. Anything else is rejected."""
    toks = _tokenize(s)
    i = 0

    def peek() -> tuple[str, str, int]:
        return toks[i] if i < len(toks) else ("end", "", len(s))

    def take(kind: str, value: str | None = None) -> str:
        nonlocal i
        k, v, p = peek()
        if k != kind or (value is not None and v != value):
            want = value if value is not None else kind
            got = v if k != "end" else "end of text"
            raise ValueError(f"genotype text: expected {want!r} at position {p}, got {got!r}")
        i += 1
        return v

    def integer() -> int:
        return int(take("int"))

    def value():
        k, v, p = peek()
        if k == "name" and v == "range":
            take("name")
            take("punct", "(")
            a = integer()
            take("punct", ",")
            b = integer()
            take("punct", ")")
            if b - a > 64:
                raise ValueError(f"genotype text: range({a}, {b}) at position {p} is too long")
            return list(range(a, b))
        if k == "punct" and v == "[":
            take("punct", "[")
            items = []
            while peek()[1] != "]":
                items.append(item())
                if peek()[1] == ",":
                    take("punct", ",")
                elif peek()[1] != "]":
                    kk, vv, pp = peek()
                    raise ValueError(f"genotype text: expected ',' or ']' at position {pp}, got {vv or 'end of text'!r}")
            take("punct", "]")
            return items
        raise ValueError(f"genotype text: expected a list or range(...) at position {p}, got {v or 'end of text'!r}")

    def item():
        k, v, p = peek()
        if k == "int":
            return integer()
        if k == "punct" and v in "([":
            close = ")" if v == "(" else "]"
            take("punct", v)
            op = take("str")[1:-1]
            take("punct", ",")
            inp = integer()
            if peek()[1] == ",":
                take("punct", ",")
            take("punct", close)
            return (op, inp)
        raise ValueError(f"genotype text: expected an (op, input) pair or an integer at position {p}, got {v!r}")

    take("name", "Genotype")
    take("punct", "(")
    fields: dict = {}
    while peek()[1] != ")":
        key_pos = peek()[2]
        key = take("name")
        if key not in ("normal", "normal_concat", "reduce", "reduce_concat"):
            raise ValueError(f"genotype text: unknown field {key!r} at position {key_pos}")
        if key in fields:
            raise ValueError(f"genotype text: field {key!r} given twice (position {key_pos})")
        take("punct", "=")
        fields[key] = value()
        if peek()[1] == ",":
            take("punct", ",")
        elif peek()[1] != ")":
            _, v, p = peek()
            raise ValueError(f"genotype text: expected ',' or ')' at position {p}, got {v or 'end of text'!r}")
    take("punct", ")")
    if i != len(toks):
        raise ValueError(f"genotype text: unexpected text after the closing ')' at position {toks[i][2]}")
    for key in ("normal", "reduce"):
        if key in fields and any(not isinstance(p, tuple) for p in fields[key]):
            raise ValueError(f"genotype text: {key} must be a list of (op, input) pairs")
    for key in ("normal_concat", "reduce_concat"):
        if key in fields and any(not isinstance(c, int) for c in fields[key]):
            raise ValueError(f"genotype text: {key} must be a list of integers")
    return fields


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
}


def zoo() -> dict[str, str]:
    """Names of the published genotypes with their sources."""
    return {name: source for name, (_, source) in _ZOO_TEXT.items()}


def _named(cls, name: str) -> Genotype:
    """A published genotype by name (see ``zoo()``), e.g. Genotype.named("DARTS_V2")."""
    key = name.upper().replace("-", "_")
    if key not in _ZOO_TEXT:
        raise ValueError(f"unknown genotype name {name!r}; published genotypes: {', '.join(_ZOO_TEXT)}")
    return cls.parse(_ZOO_TEXT[key][0])


Genotype.named = classmethod(_named)
