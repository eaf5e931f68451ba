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
- ``check_train``: what the train group's network keys must be (the space group's keys are ``SearchNetwork``'s
  arguments, checked against its signature).

The search and retraining code, the run files, the dashboards and the sweep summary reach a space only
through these names, so adding a space is one module here and one file in ``conf/space/``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import ConfigError
from ..genotype import read_genotype_source
from ..registry import Registry, load_path

# name -> the space's module, imported on first use
SPACES: Registry[ModuleType] = Registry("space")
SPACES.register("darts", "darts_lite.spaces.darts", summary="the DARTS cell space: 8 ops, 14 edges per cell, normal and "
                "reduction cells (Liu et al., 2019)")
SPACES.register("nb201", "darts_lite.spaces.nb201", summary="NAS-Bench-201: 5 ops, 6 edges, one cell shared by 15 cells, "
                "15,625 cells with published accuracies (Dong & Yang, 2020)")

# what every space module defines (see the module docstring)
INTERFACE = ("NAME", "PRIMITIVES", "SearchNetwork", "Genotype", "GENOTYPE_PREFIXES", "EvalNetwork", "eval_network_options",
             "sample", "mutate", "cell_dots", "check_train")


def get_space(name: str) -> ModuleType:
    """The space module registered as ``name`` (``space=NAME`` in the config), or a user's space module given by its
    import path (``my_package.my_space``), which is then registered under its ``NAME``."""
    if name in SPACES or not isinstance(name, str) or not name:
        return SPACES[name]  # an unknown non-name raises UnknownName, listing the spaces
    try:
        module = load_path(name)
    except ImportError as e:
        raise ConfigError(f"space {name!r}: unknown; spaces: {SPACES.choices()}, or the import path of a space "
                          f"module of your own ({e})") from None
    missing = [part for part in INTERFACE if not hasattr(module, part)]
    if not _is_space(module):
        raise ConfigError(f"space {name!r}: not a space module; it lacks {', '.join(missing) or 'being a module'} "
                          "(docs/extending.md lists what a space module defines)")
    for key in {module.NAME, name}:
        if key not in SPACES:
            SPACES.register(key, module, summary=((module.__doc__ or "").strip().splitlines() or [""])[0])
    return module


def _is_space(module: Any) -> bool:
    return isinstance(module, ModuleType) and all(hasattr(module, part) for part in INTERFACE)


def space_of(obj: Any) -> ModuleType:
    """The space module a network (or its class) belongs to: the registered space that exports its class, else the
    nearest module above the class's own that defines the space interface (a user's space), then registered."""
    import sys

    cls = obj if isinstance(obj, type) else type(obj)
    for name in SPACES:
        space = SPACES[name]
        if cls in (getattr(space, "SearchNetwork", None), getattr(space, "EvalNetwork", None)):
            return space
    module = cls.__module__
    while module:
        found = sys.modules.get(module)
        if _is_space(found):
            return get_space(module)
        module = module.rpartition(".")[0]
    raise ConfigError(f"{cls.__qualname__} ({cls.__module__}) belongs to no search space: a space is a module that defines "
                      f"{', '.join(INTERFACE)} (docs/extending.md)")


def space_name(target: str) -> str:
    """The name of the space whose network class ``target`` (an import path) is: what ``space.name`` derives."""
    try:
        return space_of(load_path(target)).NAME
    except ImportError as e:
        raise ValueError(f"space._target_={target!r}: cannot be imported ({e})") from None


def parse_genotype(text: str) -> tuple[ModuleType, Any]:
    """(space module, genotype) of genotype text or JSON in any space's format; ValueError says what is wrong."""
    source = read_genotype_source(text)
    spaces = list(dict.fromkeys(get_space(name) for name in SPACES))  # a plug-in is registered by name and path
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


__all__ = ["INTERFACE", "SPACES", "get_space", "parse_genotype", "space_name", "space_of"]
