"""Search spaces as plug-ins: one module per space, each with the same parts.

A space module (``darts_lite.spaces.darts``, ``darts_lite.spaces.nb201``) defines:

- ``NAME`` and ``PRIMITIVES`` (the candidate ops, in alpha column order);
- ``SearchNetwork``: the supernet whose mixed edges the shared relaxations drive, with ``arch_parameters()``,
  ``weight_parameters()``, ``op_probabilities()`` ({cell: [edges, ops]}), ``edge_labels()`` and ``genotype()``;
- ``Genotype``: the discrete result (``parse``, ``to_text``, ``to_dict``/``from_dict``/``to_json``, ``cells()``:
  {cell: (op, input) pairs}, the normal cell first), and ``GENOTYPE_PREFIXES``, how its text begins;
- ``EvalNetwork``: the network a genotype describes, for retraining, and ``eval_network_options``;
- ``sample(rng)`` and ``mutate(genotype, rng)``: the moves of random and evolutionary search;
- ``cell_dots(genotype)``: a Graphviz picture per cell;
- ``SEARCH_CHECKS`` / ``check_train``: what its config keys must be.

The search and retraining code, the run files, the dashboards and the sweep summary reach a space only
through these names, so adding a space is one module here and one file in ``conf/space/``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ..genotype import read_genotype_source

# name -> module under darts_lite.spaces; imported on first use
SPACES: tuple[str, ...] = ("darts", "nb201")


def get_space(name: str) -> ModuleType:
    """The space module registered as ``name`` (``space=NAME`` in the config)."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; spaces: {', '.join(SPACES)}")
    return importlib.import_module(f"{__name__}.{name}")


def parse_genotype(text: str) -> tuple[ModuleType, Any]:
    """(space module, genotype) of genotype text or JSON in any space's format; ValueError says what is wrong."""
    source = read_genotype_source(text)
    spaces = [get_space(name) for name in SPACES]
    if isinstance(source, str):
        for space in spaces:
            if source.startswith(space.GENOTYPE_PREFIXES):
                return space, space.Genotype.parse(source)
    else:
        s, named = text.strip(), source.get("space")
        errors = []
        for space in spaces:
            if named not in (None, space.NAME):
                continue
            try:
                return space, space.Genotype.parse(s)
            except ValueError as e:
                errors.append(f"as a {space.NAME} genotype: {e}")
        raise ValueError("genotype JSON is not a genotype of any space (" + "; ".join(errors) + ")")
    formats = "; ".join(f"{space.NAME}: text starting {' or '.join(map(repr, space.GENOTYPE_PREFIXES))}"
                        for space in spaces)
    raise ValueError(f"not genotype text of any space ({formats}; or the JSON a run writes)")


__all__ = ["SPACES", "get_space", "parse_genotype"]
