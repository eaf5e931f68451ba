"""The evaluation archive: every evaluation of an architecture (a genotype trained under a named training setting)
as one row of an SQLite file, plus the driver's resumable state.

One driver process writes the file; workers report to it. The archive only ever adds rows: a finished ('done')
evaluation of (genotype hash, setting, seed, epochs) is stored once and never replaced, failed attempts are kept
beside it. The one thing replaced in place is the driver state (``save_state``), e.g. an evolution's population.

The file keeps SQLite's default rollback journal (no write-ahead log), which works on network file systems.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError

FORMAT = "darts_lite-evaluations"
VERSION = 1

_HEADER = b"SQLite format 3\x00"

# (column, SQL type) in table order; id and created are set by the archive
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "INTEGER PRIMARY KEY"),
    ("genotype", "TEXT NOT NULL"),
    ("genotype_hash", "TEXT NOT NULL"),
    ("space", "TEXT"),
    ("setting", "TEXT NOT NULL"),
    ("setting_values", "TEXT"),
    ("seed", "INTEGER NOT NULL"),
    ("epochs", "INTEGER NOT NULL"),
    ("val_accs", "TEXT"),
    ("val_acc", "REAL"),
    ("test_acc", "REAL"),
    ("params", "INTEGER"),
    ("flops", "INTEGER"),
    ("wall_time_s", "REAL"),
    ("status", "TEXT NOT NULL"),
    ("error", "TEXT"),
    ("worker", "TEXT"),
    ("created", "TEXT NOT NULL"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
_WRITABLE = tuple(n for n in COLUMN_NAMES if n not in ("id", "created"))
_REQUIRED = ("genotype", "genotype_hash", "setting", "seed", "epochs", "status")
_JSON_COLUMNS = ("setting_values", "val_accs")
STATUSES = ("done", "failed")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS evaluations (" + ", ".join(f"{n} {t}" for n, t in COLUMNS) + ")",
    "CREATE INDEX IF NOT EXISTS evaluations_key ON evaluations (genotype_hash, setting, seed, epochs)",
    # a done evaluation exists once; failed attempts of the same key may repeat
    "CREATE UNIQUE INDEX IF NOT EXISTS evaluations_done ON evaluations (genotype_hash, setting, seed, epochs) "
    "WHERE status = 'done'",
    "CREATE TABLE IF NOT EXISTS driver_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, updated TEXT NOT NULL)",
)


class ArchiveError(ConfigError):
    """A file given as the archive is not an evaluation archive this darts_lite can read; nothing was changed."""


def genotype_hash(genotype: Any) -> str:
    """sha256 hex of a canonical form of a genotype of any darts_lite space.

    The form holds the space name, the cells as ``genotype.cells()`` gives them (a node's two inputs in input order,
    so their order in the genotype does not matter) and, when the genotype has them, ``normal_concat``,
    ``reduce_concat`` and ``fixed_reduction``.
    """
    from ..spaces import parse_genotype  # the spaces pull in torch; the archive itself does not need it

    space, _ = parse_genotype(genotype.to_text())
    form: dict[str, Any] = {"space": space.NAME, "cells": genotype.cells()}
    for key in ("normal_concat", "reduce_concat", "fixed_reduction"):
        if hasattr(genotype, key):
            value = getattr(genotype, key)
            form[key] = value if isinstance(value, bool) else list(value)
    text = json.dumps(form, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Archive:
    """The evaluation archive at ``path`` (SQLite). A missing or empty file becomes a new archive; any other file
    must already be one of ours, else ``ArchiveError`` and the file is left as it was."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn: sqlite3.Connection | None = None
        new = self._check_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            if not new:
                self._check_meta(conn)
            else:
                with conn:
                    # DDL runs outside the implicit transaction otherwise: a new archive is all or nothing
                    conn.execute("BEGIN")
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                     [("format", FORMAT), ("version", str(VERSION))])
                self._check_meta(conn)  # another process may have created it first; it must be ours all the same
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    # ---- opening --------------------------------------------------------------------------------------------
    def _refuse(self, what: str) -> ArchiveError:
        return ArchiveError(f"archive {self.path} {what}; nothing was changed. Give another archive=PATH or move the file "
                            "away.")

    def _check_file(self) -> bool:
        """True when the archive is to be created (no file, or an empty one); raises when the file is no SQLite file."""
        if not self.path.exists():
            return True
        if not self.path.is_file():
            raise self._refuse("is not a file")
        with open(self.path, "rb") as f:
            head = f.read(len(_HEADER))
        if not head:
            return True
        if head != _HEADER:
            raise self._refuse("is not an SQLite database (corrupt, truncated or another kind of file)")
        return False

    def _check_meta(self, conn: sqlite3.Connection) -> None:
        """Only reads: an existing file must say it is our format and version before anything is written to it."""
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                raise self._refuse("is an SQLite database but not a darts_lite evaluation archive (no meta table)")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise self._refuse(f"is not an SQLite database (corrupt, truncated or another kind of file: {e})") from e
        if meta.get("format") != FORMAT:
            raise self._refuse(f"is an SQLite database but not a darts_lite evaluation archive (format {meta.get('format')!r}, "
                               f"expected {FORMAT!r})")
        version = meta.get("version")
        try:
            number = int(str(version))
        except ValueError:
            raise self._refuse(f"has an unreadable archive version {version!r}") from None
        if number != VERSION:
            raise self._refuse(f"was written by archive version {number}; this darts_lite reads version {VERSION}")

    # ---- evaluations ----------------------------------------------------------------------------------------
    def add(self, row: dict) -> int:
        """Store one evaluation and return its id. Keys are the columns but id and created; ``setting_values`` is a
        dict, ``val_accs`` a list (``val_acc`` defaults to its last entry). A 'done' row whose (genotype_hash,
        setting, seed, epochs) is already done leaves the stored row as it is and returns its id."""
        unknown = sorted(set(row) - set(_WRITABLE))
        if unknown:
            raise ValueError(f"archive row: unknown keys {unknown}; columns: {', '.join(_WRITABLE)}")
        missing = [k for k in _REQUIRED if row.get(k) is None]
        if missing:
            raise ValueError(f"archive row: missing {', '.join(missing)}")
        if row["status"] not in STATUSES:
            raise ValueError(f"archive row: status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
        for key in ("seed", "epochs"):
            if isinstance(row[key], bool) or not isinstance(row[key], int):
                raise ValueError(f"archive row: {key} must be an integer, got {row[key]!r}")
        values = {k: row.get(k) for k in _WRITABLE}
        if values["setting_values"] is not None and not isinstance(values["setting_values"], dict):
            raise ValueError(f"archive row: setting_values must be a dict, got {type(values['setting_values']).__name__}")
        if values["val_accs"] is not None:
            values["val_accs"] = list(values["val_accs"])
            if values["val_acc"] is None and values["val_accs"]:
                values["val_acc"] = values["val_accs"][-1]
        for key in _JSON_COLUMNS:
            if values[key] is not None:
                values[key] = json.dumps(values[key])
        values["created"] = _now()
        conn = self._conn()
        key = (values["genotype_hash"], values["setting"], values["seed"], values["epochs"])
        with conn:
            if values["status"] == "done":
                existing = self._done_id(*key)
                if existing is not None:
                    return existing
            names = list(values)
            cur = conn.execute(f"INSERT INTO evaluations ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                               [values[n] for n in names])
            return int(cur.lastrowid)

    def _done_id(self, genotype_hash: str, setting: str, seed: int, epochs: int) -> int | None:
        found = self._conn().execute(
            "SELECT id FROM evaluations WHERE genotype_hash = ? AND setting = ? AND seed = ? AND epochs = ? AND status = 'done'",
            (genotype_hash, setting, seed, epochs)).fetchone()
        return None if found is None else int(found[0])

    def find(self, genotype_hash: str, setting: str, seed: int, epochs: int) -> dict | None:
        """The done evaluation of this genotype under this setting, seed and epoch count (JSON columns decoded), or None."""
        found = self._conn().execute(
            "SELECT * FROM evaluations WHERE genotype_hash = ? AND setting = ? AND seed = ? AND epochs = ? AND status = 'done'",
            (genotype_hash, setting, seed, epochs)).fetchone()
        return None if found is None else _decode(found)

    def rows(self, setting: str | None = None, status: str | None = None) -> list[dict]:
        """All evaluations (JSON columns decoded) in the order they were added, optionally of one setting / status."""
        return [_decode(r) for r in self._select(setting, status)]

    def _select(self, setting: str | None, status: str | None = None) -> list[sqlite3.Row]:
        where, args = [], []
        if setting is not None:
            where.append("setting = ?")
            args.append(setting)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return self._conn().execute(sql, args).fetchall()

    def export_csv(self, path: str | Path, setting: str | None = None) -> Path:
        """Write every column of the evaluations (of one setting if given) to a CSV file, the JSON columns as JSON
        text, a header row always; returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMN_NAMES)
            for r in self._select(setting):
                writer.writerow(["" if r[n] is None else r[n] for n in COLUMN_NAMES])
        return out

    # ---- driver state ---------------------------------------------------------------------------------------
    def save_state(self, name: str, state: dict) -> None:
        """Replace the driver state stored as ``name`` (a JSON-able dict; tuples come back as lists)."""
        if not isinstance(state, dict):
            raise ValueError(f"driver state {name!r} must be a dict, got {type(state).__name__}")
        text = json.dumps(state)
        with self._conn() as conn:
            conn.execute("INSERT INTO driver_state (name, state, updated) VALUES (?, ?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated = excluded.updated",
                         (name, text, _now()))

    def load_state(self, name: str) -> dict | None:
        """The driver state last saved as ``name``, or None."""
        found = self._conn().execute("SELECT state FROM driver_state WHERE name = ?", (name,)).fetchone()
        return None if found is None else json.loads(found[0])

    # ---- housekeeping ---------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise ValueError(f"archive {self.path} is closed")
        return self.conn

    def close(self) -> None:
        """Close the file (again: no effect)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r})"


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in _JSON_COLUMNS:
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out


__all__ = ["COLUMN_NAMES", "FORMAT", "STATUSES", "VERSION", "Archive", "ArchiveError", "genotype_hash"]
