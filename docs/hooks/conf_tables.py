"""A mkdocs hook: the tables of configuration.md that conf/ writes itself.

A marker ``<!-- options of GROUP -->`` in a page becomes a table of the group's options, one row per file of
``conf/GROUP/``: the option and the comment the file opens with. A method added as one module and one YAML file is
then documented by that file's own words; tests/test_docs.py reads the page through the same function.
"""

from __future__ import annotations

import re
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"
MARKER = re.compile(r"<!-- options of (\w+) -->")


def header(path: Path) -> str:
    """The comment a config file opens with, as one paragraph: without its `@package` line and without the command
    lines it shows (`#   python -m ...`)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if text.startswith("@package") or text.startswith("python -m") or line.startswith("#  "):
            continue
        lines.append(text)
    return " ".join(lines).replace("|", "\\|")


def options_table(group: str) -> str:
    """The markdown table of ``conf/<group>/``'s options, in file-name order."""
    rows = ["| option | what |", "| --- | --- |"]
    for path in sorted((CONF / group).glob("*.yaml")):
        rows.append(f"| `{group}={path.stem}` | {header(path) or '(no description: the file opens with no comment)'} |")
    return "\n".join(rows)


def expand(markdown: str) -> str:
    """The page with every ``<!-- options of GROUP -->`` marker replaced by its table."""
    return MARKER.sub(lambda m: options_table(m.group(1)), markdown)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return expand(markdown)
