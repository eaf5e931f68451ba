"""Reading genotype text: the checks every search space's ``Genotype.parse`` starts with (a string, a length cap
against hostile input, JSON decoded when the text is an object) and the ones its ``from_dict`` starts with. The
genotypes themselves belong to their spaces (``darts_lite.spaces.darts.genotype``, ``darts_lite.spaces.nb201.genotype``)."""

from __future__ import annotations

import json

__all__ = ["MAX_TEXT", "check_genotype_object", "read_genotype_source"]

# A genotype of any search space this library builds is a few hundred characters; the cap keeps
# hostile input from costing time or memory.
MAX_TEXT = 100_000


def read_genotype_source(text: object, limit: int = MAX_TEXT) -> str | dict:
    """Where every space's ``Genotype.parse`` starts: ``text`` stripped, or the JSON object it holds when it opens
    with "{". ValueError for a non-string, text over ``limit`` characters or malformed JSON."""
    if not isinstance(text, str):
        raise ValueError(f"genotype text must be a string, got {type(text).__name__}")
    if len(text) > limit:
        raise ValueError(f"genotype text is {len(text)} characters long; a genotype is under {limit}")
    s = text.strip()
    if not s.startswith("{"):
        return s
    try:
        return json.loads(s)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"genotype JSON is malformed: {e}") from None


def check_genotype_object(data: object, keys: set[str], what: str = "genotype JSON") -> None:
    """Where every space's ``Genotype.from_dict`` starts: ValueError unless ``data`` is a dict whose keys are among
    ``keys`` (the message names the unknown ones and the keys it takes)."""
    if not isinstance(data, dict):
        raise ValueError(f"genotype JSON must be an object, got {type(data).__name__}")
    unknown = set(data) - keys
    if unknown:
        raise ValueError(f"{what} has unknown keys: {sorted(unknown)} (it takes {', '.join(sorted(keys))})")
