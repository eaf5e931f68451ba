"""Config schemas from signatures: the typed parameters of the class (or function) a config node builds are that
node's schema.

A config group names what it builds with ``_target_`` and gives its arguments as sibling keys, as
``hydra.utils.instantiate`` reads them. Each argument is declared once, in the target's signature: its type, its
default and its constraint side by side, the constraint as ``typing.Annotated`` metadata::

    def __init__(self, epochs: Annotated[int, Ge(1)] = 50, lr: Annotated[float, Gt(0)] = 0.025, ...)

``node_problems`` checks a node against its target before anything is built: every key the target does not take,
every value of the wrong type or outside its constraint, and the target's own rules between its arguments
(``config_problems``, a classmethod), each as one line ``key=value: must be ...``. ``checked`` applies the same
checks when the class is built from Python. Types are checked strictly (``1`` is not ``true``, ``2.5`` not an
integer), by pydantic.

Metadata besides the ``annotated_types`` constraints: ``Allowed("...")`` replaces the generated description of
what a value may be, ``Hint("...")`` adds why after it.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from .errors import ConfigError
from .registry import load_path as locate

__all__ = [
    "Allowed", "ConfigError", "Ge", "Gt", "Hint", "Le", "Lt", "MaxLen", "MinLen", "OneOf", "build", "checked", "describe",
    "locate", "node_problems", "parameters", "raise_problems", "value_problem",
]

Ge, Gt, Le, Lt, MinLen, MaxLen = at.Ge, at.Gt, at.Le, at.Lt, at.MinLen, at.MaxLen


@dataclass(frozen=True)
class Allowed:
    """What a value may be, in words, instead of the description generated from its type."""

    text: str


class OneOf:
    """The value must be one of ``choices``: names, tuples of names, or registries (their names are read when the
    check runs, so entries registered later count)."""

    def __init__(self, *choices: Any):
        self.choices = choices

    def names(self) -> tuple[str, ...]:
        return tuple(n for c in self.choices for n in ((c,) if isinstance(c, str) else c))


@dataclass(frozen=True)
class Hint:
    """Why the constraint is what it is: added after the description in a message."""

    text: str


# ---- targets and their parameters ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: Any  # typing.Any when the signature gives none
    default: Any  # inspect.Parameter.empty when required


@functools.cache
def _parameters(target: Any) -> tuple[tuple[Parameter, ...], bool]:
    if inspect.isclass(target) and target.__init__ is object.__init__:
        return (), False  # a class without an __init__ of its own takes no arguments
    function = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as e:  # an annotation that does not evaluate: the schema would be lost, so say so
        raise TypeError(f"the annotations of {getattr(target, '__qualname__', target)} do not evaluate ({e}); a config "
                        "schema needs them at run time (no names imported only for type checkers)") from e
    params, var_keyword = [], False
    for i, (name, p) in enumerate(signature.parameters.items()):
        if inspect.isclass(target) and i == 0:
            continue  # self
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        params.append(Parameter(name, hints.get(name, Any), p.default))
    return tuple(params), var_keyword


def parameters(target: Any) -> dict[str, Parameter]:
    """The keyword parameters ``target`` (a class: its ``__init__``) takes, with their annotations and defaults."""
    return {p.name: p for p in _parameters(target)[0]}


# ---- values against annotations ------------------------------------------------------------------------------
def _split(annotation: Any) -> tuple[Any, list[Any]]:
    """(the type, its Annotated metadata)."""
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        inner, more = _split(base)
        return inner, [*more, *meta]
    return annotation, []


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _number(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else str(v)


def _bounds(meta: Iterable[Any]) -> str:
    lower = upper = None
    for m in meta:
        if isinstance(m, at.Ge):
            lower = ("[", m.ge)
        elif isinstance(m, at.Gt):
            lower = ("(", m.gt)
        elif isinstance(m, at.Le):
            upper = ("]", m.le)
        elif isinstance(m, at.Lt):
            upper = (")", m.lt)
        elif isinstance(m, at.Interval):
            return _bounds([x for x in (at.Ge(m.ge) if m.ge is not None else None, at.Gt(m.gt) if m.gt is not None else None,
                                        at.Le(m.le) if m.le is not None else None, at.Lt(m.lt) if m.lt is not None else None)
                            if x is not None])
    if lower and upper:
        return f"in {lower[0]}{_number(lower[1])}, {_number(upper[1])}{upper[0]}"
    if lower:
        return f"{'>=' if lower[0] == '[' else '>'} {_number(lower[1])}"
    if upper:
        return f"{'<=' if upper[0] == ']' else '<'} {_number(upper[1])}"
    return ""


def describe(annotation: Any) -> str:
    """What a value of ``annotation`` may be, in the words of a config message ("an integer >= 1", "true or false",
    "one of a, b", "null or > 0", ...)."""
    tp, meta = _split(annotation)
    for m in meta:
        if isinstance(m, Allowed):
            return m.text
    for m in meta:
        if isinstance(m, OneOf):
            return f"one of {', '.join(map(str, m.names()))}"
    bounds = _bounds(meta)
    if tp is type(None):
        return "null"
    if _is_union(tp):
        options = [a for a in get_args(tp) if a is not type(None)]
        text = " or ".join(describe(Annotated[(a, *meta)] if meta else a) for a in options)
        return f"null or {text}" if len(options) < len(get_args(tp)) else text
    if get_origin(tp) is Literal:
        values = ["null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in get_args(tp)]
        return values[0] if len(values) == 1 else f"one of {', '.join(values)}"
    if tp is bool:
        return "true or false"
    if tp is int:
        return f"an integer {bounds}" if bounds else "an integer"
    if tp is float:
        return bounds or "a number"
    if tp is str:
        return "a non-empty string" if any(isinstance(m, at.MinLen) and m.min_length >= 1 for m in meta) else "a string"
    origin = get_origin(tp)
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in get_args(tp):
            return f"a list of {len(args)}: " + ", ".join(describe(a) for a in args)
        return f"a list of values each {describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "a mapping of keys to values"
    return getattr(tp, "__name__", str(tp))


@functools.cache
def _adapter(annotation: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))


def _tuples(annotation: Any, value: Any) -> Any:
    """Lists where the annotation asks for tuples become tuples (a config has lists only)."""
    tp, _ = _split(annotation)
    if _is_union(tp):
        return value
    if get_origin(tp) is tuple and isinstance(value, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if Ellipsis in get_args(tp) and args:
            return tuple(_tuples(args[0], v) for v in value)
        return tuple(_tuples(a, v) for a, v in zip(args, value)) + tuple(value[len(args):])
    return value


def _checkable(annotation: Any) -> bool:
    return annotation is not Any and annotation is not inspect.Parameter.empty


def _valid(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is a valid ``annotation``: pydantic's strict check, and the OneOf choices of whichever arm of
    a union it is (pydantic does not know OneOf)."""
    from pydantic import ValidationError

    tp, meta = _split(annotation)
    if _is_union(tp):
        return any(_valid(Annotated[(arm, *meta)] if meta else arm, value) for arm in get_args(tp))
    try:
        _adapter(annotation).validate_python(_tuples(annotation, value))
    except (ValidationError, TypeError, ValueError):
        return False
    if not all(value in m.names() for m in meta if isinstance(m, OneOf)):
        return False
    # the choices of a list's items (a list of registered names)
    origin, args = get_origin(tp), [a for a in get_args(tp) if a is not Ellipsis]
    if origin in (list, Sequence, typing.Sequence) and len(args) == 1 and not isinstance(value, str):
        return all(_valid(args[0], item) for item in value)
    if origin is tuple and args and isinstance(value, (list, tuple)):
        items = args * len(value) if Ellipsis in get_args(tp) else args
        return all(_valid(a, item) for a, item in zip(items, value))
    return True


def value_problem(annotation: Any, value: Any) -> str | None:
    """None when ``value`` is a valid ``annotation``; else what it must be ("must be an integer >= 1", with its
    Hint)."""
    if not _checkable(annotation):
        return None
    _, meta = _split(annotation)
    if _valid(annotation, value):
        return None
    hint = next((m.text for m in meta if isinstance(m, Hint)), None)
    return f"must be {describe(annotation)}" + (f" ({hint})" if hint else "")


def _show(value: Any) -> str:
    return repr(value)


# ---- nodes ---------------------------------------------------------------------------------------------------
class Rules:
    """What a target's ``config_problems`` gets: the node's values and how to name a key in a message."""

    def __init__(self, values: Mapping[str, Any], prefix: str):
        self.values, self.prefix = values, prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"


def _resolved(node: Any, prefix: str, problems: list[str]) -> dict[str, Any]:
    """The node's keys with their values resolved; a key whose interpolation fails is reported and left out."""
    if not isinstance(node, DictConfig):
        return dict(node)
    values: dict[str, Any] = {}
    for key in node:
        try:
            value = node[key]
            values[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        except InterpolationResolutionError as e:
            why = str(e).splitlines()[0].split("raised while resolving interpolation: ")[-1]
            problems.append(f"{prefix}{key}: cannot be worked out ({why})")
        except MissingMandatoryValue:
            problems.append(f"{prefix}{key}: must be set (the config leaves it ???)")
        except OmegaConfBaseException as e:
            problems.append(f"{prefix}{key}: {str(e).splitlines()[0]}")
    return values


def node_problems(node: Any, prefix: str, *, provided: Iterable[str] = (), nested: Iterable[str] = (),
                  target: Any = None, types: bool = True) -> list[str]:
    """Every problem of config ``node`` (a DictConfig or dict with ``_target_``), each one line naming the key
    (``prefix`` + key), the value and what is allowed. ``provided``: arguments darts_lite passes itself (a node
    that sets one is told so); ``nested``: keys that are nodes of their own, checked by their own call; ``target``:
    the object to check against when the node has no ``_target_``; ``types=False``: check the keys' names only
    (for third-party targets whose annotations are not schemas)."""
    problems: list[str] = []
    values = _resolved(node, prefix, problems)
    path = values.pop("_target_", None)
    for key in ("_partial_", "_recursive_", "_convert_", "_args_"):
        values.pop(key, None)
    if target is None:
        if path is None:
            return [*problems, f"{prefix.rstrip('.')}: has no _target_ (the class or function it builds)"]
        try:
            target = locate(path)
        except ImportError as e:
            return [*problems, f"{prefix}_target_={path!r}: cannot be imported ({e})"]
    if not callable(target):
        return [*problems, f"{prefix}_target_={path!r}: not a class or function"]
    params, var_keyword = _parameters(target)
    by_name = {p.name: p for p in params}
    provided = set(provided)
    nested = set(nested)
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}".lstrip(".")
    for key in values:
        if key in provided:
            problems.append(f"{prefix}{key}: set by darts_lite itself; remove it from the config")
        elif key not in by_name and key not in nested and not var_keyword:
            problems.append(f"{prefix}{key}: unknown option of {name}; its options: "
                            f"{', '.join(p for p in by_name if p not in provided) or 'none'}")
    for p in params:
        if p.name in provided or p.name in nested:
            continue
        if p.name not in values:
            if p.default is inspect.Parameter.empty:
                problems.append(f"{prefix}{p.name}: missing; {name} needs it ({describe(p.annotation)})")
            continue
        if types:
            why = value_problem(p.annotation, values[p.name])
            if why:
                problems.append(f"{prefix}{p.name}={_show(values[p.name])}: {why}")
    rules = getattr(target, "config_problems", None)
    if types and rules is not None and not any(p.startswith(prefix) for p in problems):
        # the rules between arguments read values already known to be of the right types
        full = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        full.update(values)
        problems.extend(rules(Rules(full, prefix)))
    return problems


def raise_problems(problems: Sequence[str]) -> None:
    """ConfigError listing ``problems`` (nothing when there are none)."""
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def checked(init: Callable) -> Callable:
    """Decorate ``__init__`` so that building the class from Python checks its arguments as a config node would
    be checked (types, constraints, ``config_problems``): one ConfigError listing every bad argument."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        values = {k: v for k, v in list(bound.arguments.items())[1:]}
        extra = values.pop(next((n for n, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD), ""), {})
        cls = type(self)
        owner = next(c for c in cls.__mro__ if c.__dict__.get("__init__") is wrapper)
        problems = node_problems({**values, **extra}, "", target=owner)
        if problems:
            raise ConfigError(f"{owner.__name__}: " + "; ".join(problems))
        init(self, *args, **kwargs)

    return wrapper


def build(node: Any, prefix: str = "", /, **provided: Any) -> Any:
    """What config ``node`` (``_target_`` + arguments, a DictConfig or a dict) describes, built by
    ``hydra.utils.instantiate`` after ``node_problems`` found nothing (else ConfigError listing every problem).
    ``provided``: arguments darts_lite adds (the data's class count, a built sub-object, ...). Nested mappings are
    passed on as plain dicts, not built: the target decides what they become (and can save them as they are)."""
    import hydra.utils

    prefix = f"{prefix}." if prefix and not prefix.endswith(".") else prefix
    raise_problems(node_problems(node, prefix, provided=provided))
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return hydra.utils.instantiate(dict(node), _recursive_=False, _convert_="all", **provided)
