"""The evaluation archive: every evaluation of an architecture (a genotype trained under a named training setting)
as one row of an SQLite file, plus the driver's resumable state.

One driver process writes the file; workers report to it. The archive only ever adds rows: a finished ('done')
evaluation of (genotype hash, setting, seed, epochs) is stored once and never replaced, failed attempts are kept
beside it. The one thing replaced in place is the driver state (``save_state``), e.g. an evolution's population.

The file keeps SQLite's default rollback journal (no write-ahead log), which works on network file systems.

Faults. Opening an existing file reads it whole before anything is written: a file that is not an archive of this
version, a truncated one, or one whose pages SQLite finds damaged (its integrity check) is refused with
ArchiveError, the file left as it was. Damage SQLite cannot see (a value changed inside a row, a JSON column edited
into garbage) is reported when that row is read: ArchiveError naming the row and the column. A write that fails
(the disk full, the file or its folder read-only, the file locked by another process for longer than
``BUSY_TIMEOUT_S``) is rolled back and raised as ArchiveError saying what happened and where; what was written
before stays as it was. Each write is one transaction that takes the file's write lock first, so processes that
write one archive at once neither lose nor duplicate a row.

Drivers. Two drivers (a study, a search) writing one archive at once would train the same evaluations twice and
overwrite each other's state, so a driver holds the archive's ``DriverLock`` while it runs (``build.driver_lock``);
opening an Archive does not take it, so readers and scripts are never locked out.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import resource
import secrets
import shutil
import socket
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

from ..errors import ConfigError
from ..torchfiles import open_atomically

log = logging.getLogger("darts_lite")

FORMAT = "darts_lite-evaluations"
VERSION = 1
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's write to the same file

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
_TEXT_COLUMNS = ("genotype", "genotype_hash", "space", "setting", "status", "error", "worker", "created")
_FREE_TEXT = ("space", "error", "worker")  # stored as given; characters UTF-8 cannot hold are escaped
_NUMBER_COLUMNS = ("val_acc", "test_acc", "params", "flops", "wall_time_s")
_SQLITE_INT = (-(2 ** 63), 2 ** 63 - 1)
STATUSES = ("done", "failed")

_LOCK_TABLE = ("CREATE TABLE IF NOT EXISTS driver_lock (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, "
               "host TEXT NOT NULL, since TEXT NOT NULL, task TEXT, run_dir TEXT, token TEXT NOT NULL, process_start TEXT)")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS evaluations (" + ", ".join(f"{n} {t}" for n, t in COLUMNS) + ")",
    "CREATE INDEX IF NOT EXISTS evaluations_key ON evaluations (genotype_hash, setting, seed, epochs)",
    # a done evaluation exists once; failed attempts of the same key may repeat
    "CREATE UNIQUE INDEX IF NOT EXISTS evaluations_done ON evaluations (genotype_hash, setting, seed, epochs) "
    "WHERE status = 'done'",
    "CREATE TABLE IF NOT EXISTS driver_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, updated TEXT NOT NULL)",
    _LOCK_TABLE,
)
_OPTIONAL_OBJECTS = ("driver_lock",)  # archives made before the driver lock get its table when a driver first starts


def _expected_schema() -> dict[str, tuple[str, str]]:
    """name -> (type, SQL) of every table and index an archive holds, as SQLite records them."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        return {name: (kind, sql) for kind, name, sql in
                conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
    finally:
        conn.close()


_EXPECTED = _expected_schema()


class ArchiveError(ConfigError):
    """The archive cannot be used as asked, and the message says why and where: a file given as the archive that is
    not an evaluation archive this darts_lite can read (refused before anything is written: nothing was changed), a
    damaged row met while reading, a write that failed (rolled back: what was written before is kept), or another
    driver holding the archive."""


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
    must already be one of ours, whole and undamaged, else ``ArchiveError`` and the file is left as it was."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn: sqlite3.Connection | None = None
        new = self._check_file()
        existed = self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise ArchiveError(f"archive {self.path}: could not {'create' if new else 'open'} it: {_cannot_write(self.path, e)}. "
                               "Nothing was written; give another archive=PATH or make that folder writable.") from None
        conn.text_factory = bytes  # text is decoded here, so that a damaged value is reported with its row
        try:
            if new:
                self._create(conn, existed)
            self._check(conn)  # another process may have created it first; it must be ours all the same
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    # ---- opening --------------------------------------------------------------------------------------------
    def _refuse(self, what: str) -> ArchiveError:
        return ArchiveError(f"archive {self.path} {what}; nothing was changed. Give another archive=PATH or move the file "
                            "away.")

    def _not_sqlite(self, why: str) -> ArchiveError:
        return self._refuse(f"is not an SQLite database (corrupt, truncated or another kind of file: {why})")

    def _check_file(self) -> bool:
        """True when the archive is to be created (no file, or an empty one); raises when the file is no SQLite file
        of the kind an archive is. Reads the first 100 bytes only."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return True
        except OSError as e:
            raise self._refuse(f"cannot be read ({e.strerror or e})") from None
        if not stat.S_ISREG(info.st_mode):
            raise self._refuse("is not a file")
        if info.st_size == 0:
            return True
        try:
            with open(self.path, "rb") as f:
                head = f.read(100)
        except OSError as e:
            raise self._refuse(f"cannot be read ({e.strerror or e})") from None
        if not head.startswith(_HEADER):
            raise self._not_sqlite("no SQLite header")
        if len(head) < 100:
            raise self._not_sqlite(f"{len(head)} bytes, less than an SQLite header")
        if (head[18], head[19]) == (2, 2):
            # SQLite would create -wal and -shm files beside it, and checkpoint into it
            raise self._refuse("uses a write-ahead log (journal_mode=wal), which an archive does not (it must work on "
                               "network file systems); switch it back in the sqlite3 shell with PRAGMA journal_mode=delete")
        if (head[18], head[19]) != (1, 1):
            raise self._not_sqlite(f"its header's file format bytes are {head[18]}, {head[19]}")
        return False

    def _create(self, conn: sqlite3.Connection, existed: bool) -> None:
        """The tables of a new archive, all or nothing; a file this made is removed again when that fails."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                             [("format", FORMAT), ("version", str(VERSION))])
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            _rollback(conn)
            failure = write_failure(self.path, e, "create it", "nothing was written; give another archive=PATH",
                                    kept=False)
            if not existed:
                with contextlib.suppress(OSError):
                    if self.path.stat().st_size == 0:
                        self.path.unlink()
            raise failure from None

    def _check(self, conn: sqlite3.Connection) -> None:
        """Only reads, inside one read transaction (no other process writes meanwhile): the file is whole, SQLite
        finds no damage in it, and it says it is our format and version and holds our tables."""
        try:
            conn.execute("BEGIN")
            try:
                objects = {_text(name): (_text(kind), _text(sql)) for kind, name, sql in
                           conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
                self._check_size(conn)
                problems = [_text(r[0]) for r in conn.execute("PRAGMA integrity_check(3)")]
                if problems != ["ok"]:
                    raise self._refuse(f"is a damaged SQLite database (SQLite's integrity check: {'; '.join(problems)})")
                self._check_meta(conn, objects)
            finally:
                _rollback(conn)
        except sqlite3.Error as e:
            raise self._unreadable(e) from None
        except UnicodeDecodeError:  # Python could not even decode SQLite's message: it quotes a damaged schema
            raise self._not_sqlite("its schema is damaged (SQLite's error message about it is not UTF-8 text)") from None

    def _check_size(self, conn: sqlite3.Connection) -> None:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        size = self.path.stat().st_size
        if size % page_size or size < page_size * pages:
            raise self._not_sqlite(f"it is truncated: {size} bytes where its header counts {pages} pages of {page_size} "
                                   f"bytes ({pages * page_size} bytes)")

    def _unreadable(self, error: sqlite3.Error) -> ArchiveError:
        name = _errorname(error)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return self._refuse(f"stayed locked by another process for more than {BUSY_TIMEOUT_S:g} s while it was being "
                                "opened (a long write, or a process holding it open in a transaction)")
        if name.startswith("SQLITE_READONLY"):
            return self._refuse(f"has an unfinished write (a hot journal beside it) that SQLite cannot roll back: "
                                f"{_cannot_write(self.path, error)}")
        if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
            return self._refuse(f"cannot be read ({error})")
        return self._not_sqlite(f"{error}{_size_note(self.path)}")

    def _check_meta(self, conn: sqlite3.Connection, objects: dict[str, tuple[str, str]]) -> None:
        """The file must say it is our format and version, and hold our tables and indexes as we make them."""
        if objects.get("meta", ("", ""))[0] != "table":
            raise self._refuse("is an SQLite database but not a darts_lite evaluation archive (no meta table)")
        columns = {_text(r[1]) for r in conn.execute("PRAGMA table_info(meta)")}
        if not {"key", "value"} <= columns:
            raise self._refuse("is an SQLite database but not a darts_lite evaluation archive (its meta table has no key "
                               "and value columns)")
        meta = {_text(k): (_text(v) if isinstance(v, bytes) else v) for k, v in conn.execute("SELECT key, value FROM meta")}
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
        for name, (kind, sql) in _EXPECTED.items():
            found = objects.get(name)
            if found is None and name in _OPTIONAL_OBJECTS:
                continue
            if found is None:
                raise self._refuse(f"says it is an archive of version {VERSION} but has no {kind} {name} (damaged or "
                                   "edited)")
            if found != (kind, sql):
                raise self._refuse(f"says it is an archive of version {VERSION} but its {kind} {name} is not an "
                                   f"archive's (damaged or edited): {_preview(found[1])}")

    # ---- reading --------------------------------------------------------------------------------------------
    def _read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except UnicodeDecodeError as e:  # in SQLite's error message, which quotes the damaged part
            raise ArchiveError(f"archive {self.path}: could not be read: the file is damaged ({e}). Nothing was "
                               "changed.") from None
        except sqlite3.Error as e:
            raise ArchiveError(f"archive {self.path}: could not be read: {_describe_error(self.path, e)}. Nothing was "
                               "changed.") from None

    def _decode(self, row: tuple) -> dict:
        """A stored row as a dict (JSON columns decoded), every value checked: a damaged one raises ArchiveError
        naming the row, the column and what is wrong."""
        values = dict(zip(COLUMN_NAMES, row))
        try:
            return {name: _column(name, values[name]) for name in COLUMN_NAMES}
        except _Damaged as d:
            rid = values["id"]
            raise ArchiveError(f"archive {self.path}: evaluation row {rid} is damaged: {d}. Nothing was changed; delete "
                               f"or correct that row (sqlite3 shell: DELETE FROM evaluations WHERE id = {rid}) or restore "
                               "the file from a copy.") from None

    # ---- evaluations ----------------------------------------------------------------------------------------
    def add(self, row: dict) -> int:
        """Store one evaluation and return its id. Keys are the columns but id and created; ``setting_values`` is a
        dict, ``val_accs`` a list (``val_acc`` defaults to its last entry). A 'done' row whose (genotype_hash,
        setting, seed, epochs) is already done leaves the stored row as it is and returns its id."""
        values = _checked(row)
        values["created"] = _now()
        key = (values["genotype_hash"], values["setting"], values["seed"], values["epochs"])
        doing = (f"record the {values['status']} evaluation of {key[0][:8]} under {key[1]}, seed {key[2]}, {key[3]} "
                 "epochs")
        names = list(values)
        # the check and the insert in one transaction that holds the write lock: a done key is stored once
        with self._write(doing, "once the cause is fixed, run the same command with resume=true: what the archive "
                                "holds is not trained again"):
            if values["status"] == "done":
                existing = self._done_id(*key)
                if existing is not None:
                    return existing
            cur = self._conn().execute(f"INSERT INTO evaluations ({', '.join(names)}) VALUES "
                                       f"({', '.join('?' * len(names))})", [values[n] for n in names])
            return int(cur.lastrowid)

    def _done_id(self, genotype_hash: str, setting: str, seed: int, epochs: int) -> int | None:
        found = self._conn().execute(
            "SELECT id FROM evaluations WHERE genotype_hash = ? AND setting = ? AND seed = ? AND epochs = ? AND status = 'done'",
            (genotype_hash, setting, seed, epochs)).fetchone()
        return None if found is None else int(found[0])

    def find(self, genotype_hash: str, setting: str, seed: int, epochs: int) -> dict | None:
        """The done evaluation of this genotype under this setting, seed and epoch count (JSON columns decoded), or None."""
        found = self._read(f"SELECT {', '.join(COLUMN_NAMES)} FROM evaluations WHERE genotype_hash = ? AND setting = ? "
                           "AND seed = ? AND epochs = ? AND status = 'done'", (genotype_hash, setting, seed, epochs))
        return self._decode(found[0]) if found else None

    def rows(self, setting: str | None = None, status: str | None = None) -> list[dict]:
        """All evaluations (JSON columns decoded) in the order they were added, optionally of one setting / status."""
        return [self._decode(r) for r in self._select(setting, status)]

    def _select(self, setting: str | None, status: str | None = None) -> list[tuple]:
        where, args = [], []
        if setting is not None:
            where.append("setting = ?")
            args.append(setting)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = (f"SELECT {', '.join(COLUMN_NAMES)} FROM evaluations" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id")
        return self._read(sql, args)

    def export_csv(self, path: str | Path, setting: str | None = None) -> Path:
        """Write every column of the evaluations (of one setting if given) to a CSV file, the JSON columns as JSON
        text, a header row always; returns the path."""
        rows = self.rows(setting)  # all checked before the file is started
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open_atomically(out) as f:
            writer = csv.writer(f)
            writer.writerow(COLUMN_NAMES)
            for r in rows:
                writer.writerow(["" if r[n] is None else json.dumps(r[n]) if n in _JSON_COLUMNS else r[n]
                                 for n in COLUMN_NAMES])
        return out

    # ---- driver state ---------------------------------------------------------------------------------------
    def save_state(self, name: str, state: dict) -> None:
        """Replace the driver state stored as ``name`` (a JSON-able dict; tuples come back as lists)."""
        if not isinstance(state, dict):
            raise ValueError(f"driver state {name!r} must be a dict, got {type(state).__name__}")
        try:
            text = json.dumps(state)
        except (TypeError, ValueError) as e:
            raise ValueError(f"driver state {name!r}: not JSON-able: {e}") from None
        with self._write(f"save the driver state {name!r}", "once the cause is fixed, run the same command with "
                                                            "resume=true: it continues from the state saved before"):
            self._conn().execute("INSERT INTO driver_state (name, state, updated) VALUES (?, ?, ?) "
                                 "ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated = excluded.updated",
                                 (name, text, _now()))

    def load_state(self, name: str) -> dict | None:
        """The driver state last saved as ``name``, or None."""
        found = self._read("SELECT state FROM driver_state WHERE name = ?", (name,))
        if not found:
            return None
        try:
            state = json.loads(_utf8(found[0][0], "state"))
            if not isinstance(state, dict):
                raise _Damaged(f"it is {_json_kind(state)}, not a JSON object")
        except (_Damaged, ValueError, RecursionError) as e:
            raise ArchiveError(f"archive {self.path}: the driver state {name!r} is damaged: {e}. Nothing was changed; "
                               f"delete it (sqlite3 shell: DELETE FROM driver_state WHERE name = '{name}') to start that "
                               "driver afresh, or restore the file from a copy.") from None
        return state

    # ---- housekeeping ---------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise ValueError(f"archive {self.path} is closed")
        return self.conn

    @contextlib.contextmanager
    def _write(self, doing: str, then: str) -> Iterator[None]:
        """One write transaction, the file's write lock taken first; an SQLite error rolls it back and becomes an
        ArchiveError saying what could not be done (``doing``), why, and what to do then (``then``)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            _rollback(conn)
            raise write_failure(self.path, e, doing, then) from None
        except UnicodeDecodeError as e:  # in SQLite's error message, which quotes the damaged part of the file
            _rollback(conn)
            raise ArchiveError(f"archive {self.path}: could not {doing}: the file is damaged ({e}); nothing was "
                               "written.") from None
        except BaseException:
            _rollback(conn)
            raise

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
        return int(self._read("SELECT COUNT(*) FROM evaluations")[0][0])

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r})"


# ---- rows in and out ------------------------------------------------------------------------------------------
def _checked(row: dict) -> dict[str, Any]:
    """The values ``add`` stores for a row, each checked (ValueError naming the key); JSON columns as text."""
    unknown = sorted(set(row) - set(_WRITABLE))
    if unknown:
        raise ValueError(f"archive row: unknown keys {unknown}; columns: {', '.join(_WRITABLE)}")
    missing = [k for k in _REQUIRED if row.get(k) is None]
    if missing:
        raise ValueError(f"archive row: missing {', '.join(missing)}")
    if row["status"] not in STATUSES:
        raise ValueError(f"archive row: status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
    values = {k: row.get(k) for k in _WRITABLE}
    for key in ("seed", "epochs"):
        if isinstance(values[key], bool) or not isinstance(values[key], int):
            raise ValueError(f"archive row: {key} must be an integer, got {values[key]!r}")
    for key in _TEXT_COLUMNS:
        value = values.get(key)
        if value is None or key == "created":
            continue
        if not isinstance(value, str):
            raise ValueError(f"archive row: {key} must be text, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            if key not in _FREE_TEXT:
                raise ValueError(f"archive row: {key} holds characters UTF-8 cannot encode: {value!r}") from None
            values[key] = value.encode("utf-8", "backslashreplace").decode("utf-8")
    for key in (*_NUMBER_COLUMNS, "seed", "epochs"):
        value = values[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"archive row: {key} must be a number, got {value!r}")
        if isinstance(value, int) and not _SQLITE_INT[0] <= value <= _SQLITE_INT[1]:
            raise ValueError(f"archive row: {key}={value} does not fit a 64-bit integer")
    if values["setting_values"] is not None and not isinstance(values["setting_values"], dict):
        raise ValueError(f"archive row: setting_values must be a dict, got {type(values['setting_values']).__name__}")
    if values["val_accs"] is not None:
        values["val_accs"] = list(values["val_accs"])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values["val_accs"]):
            raise ValueError(f"archive row: val_accs must be numbers, got {values['val_accs']!r}")
        if values["val_acc"] is None and values["val_accs"]:
            values["val_acc"] = values["val_accs"][-1]
    for key in _JSON_COLUMNS:
        if values[key] is not None:
            try:
                values[key] = json.dumps(values[key])
            except (TypeError, ValueError) as e:
                raise ValueError(f"archive row: {key} is not JSON-able: {e}") from None
    return values


class _Damaged(Exception):
    """A stored value that is not what its column holds; the message says which and why."""


def _column(name: str, value: Any) -> Any:
    """A stored value of column ``name``, decoded (text from UTF-8, JSON parsed) and checked, or _Damaged."""
    if name == "id":
        return value
    if name in _TEXT_COLUMNS:
        if value is None:
            if name in _FREE_TEXT:
                return None
            raise _Damaged(f"{name} is empty (NULL)")
        text = _utf8(value, name)
        if name == "status" and text not in STATUSES:
            raise _Damaged(f"status is {text!r}, not one of {', '.join(STATUSES)}")
        return text
    if name in ("seed", "epochs"):
        if isinstance(value, int):
            return value
        raise _Damaged(f"{name} is {_stored_kind(value)}, not an integer")
    if name in _NUMBER_COLUMNS:
        if value is None or isinstance(value, (int, float)):
            return value
        raise _Damaged(f"{name} is {_stored_kind(value)}, not a number")
    # the JSON columns
    if value is None:
        return None
    text = _utf8(value, name)
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise _Damaged(f"{name} is not JSON ({e}): {_preview(text)}") from None
    if decoded is None:
        return None
    if name == "setting_values" and not isinstance(decoded, dict):
        raise _Damaged(f"setting_values is {_json_kind(decoded)}, not a JSON object: {_preview(text)}")
    if name == "val_accs" and not (isinstance(decoded, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in decoded)):
        raise _Damaged(f"val_accs is not a list of accuracies: {_preview(text)}")
    return decoded


def _utf8(value: Any, name: str) -> str:
    if not isinstance(value, bytes):
        raise _Damaged(f"{name} is {_stored_kind(value)}, not text")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Damaged(f"{name} is not UTF-8 text ({e.reason} at byte {e.start}): {_preview(value)}") from None


def _stored_kind(value: Any) -> str:
    if isinstance(value, bytes):
        return f"the text {_preview(value)}"
    if value is None:
        return "empty (NULL)"
    return f"the number {value!r}"


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _preview(value: Any, width: int = 80) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= width else text[:width] + "...")


def _text(value: Any) -> str:
    """Text SQLite returned (bytes here) as str, undecodable bytes replaced; other values as str()."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# ---- what went wrong ------------------------------------------------------------------------------------------
_ERROR_TEXTS = (("database or disk is full", "SQLITE_FULL"), ("disk i/o error", "SQLITE_IOERR"),
                ("readonly database", "SQLITE_READONLY"), ("unable to open database file", "SQLITE_CANTOPEN"),
                ("database is locked", "SQLITE_BUSY"), ("malformed", "SQLITE_CORRUPT"),
                ("file is not a database", "SQLITE_NOTADB"))


def _errorname(error: BaseException) -> str:
    """SQLite's name of the error (SQLITE_FULL, ...); from its message where Python does not give it (before 3.11)."""
    name = getattr(error, "sqlite_errorname", None)
    if name:
        return str(name)
    text = str(error).lower()
    return next((code for words, code in _ERROR_TEXTS if words in text), "")


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any (SQLite ends some failed ones itself)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _free(folder: Path) -> str:
    try:
        return f"{_size(shutil.disk_usage(folder).free)} free there"
    except OSError:
        return "free space unknown"


def _file_size_limit() -> int | None:
    """This process's file-size limit (ulimit -f) in bytes, or None without one."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _size_note(path: Path) -> str:
    """'; N bytes where its header counts ...' when the file is shorter than its SQLite header says, else ''."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError:
        return ""
    if len(head) < 100 or not head.startswith(_HEADER):
        return ""
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] != head[92:96] or not pages or page_size < 512 or page_size & (page_size - 1):
        return ""
    if size % page_size or size < pages * page_size:
        return f"; it is truncated: {size} bytes where its header counts {pages} pages of {page_size} bytes"
    return ""


def _cannot_write(path: Path, error: BaseException) -> str:
    """Why ``path`` (or a file beside it) cannot be written, from the file system's point of view."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"the file system holding {folder} is mounted read-only"
    except OSError:
        pass
    if path.exists() and not os.access(path, os.W_OK):
        return f"the file is read-only (permissions {stat.filemode(path.stat().st_mode)})"
    if not os.access(folder, os.W_OK):
        return (f"its folder {folder} is read-only (permissions {stat.filemode(folder.stat().st_mode)}), and SQLite "
                "writes a journal file beside the archive")
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"the file or its folder cannot be written ({reason})"


def _describe_error(path: Path, error: sqlite3.Error) -> str:
    """What an SQLite error on ``path`` means, in words."""
    name = _errorname(error)
    folder = path.parent
    size = 0
    limit = _file_size_limit()
    with contextlib.suppress(OSError):
        size = path.stat().st_size
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) and limit is not None and size + 2 ** 16 >= limit:
        return (f"the archive reached this process's file-size limit (ulimit -f: {_size(limit)}; the disk has "
                f"{_free(folder)})")
    if name.startswith("SQLITE_FULL"):
        return f"the disk is full ({_free(folder)}, on the file system of {folder})"
    if name.startswith("SQLITE_IOERR"):
        return (f"the disk refused the write ({error}; {_free(folder)}): a full disk, a quota, a file-size limit or a "
                "failing disk")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return _cannot_write(path, error)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"another process kept the archive locked for more than {BUSY_TIMEOUT_S:g} s"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return f"the file is damaged ({error})"
    return f"{error} ({name or type(error).__name__})"


def write_failure(path: Path, error: sqlite3.Error, doing: str, then: str, kept: bool = True) -> ArchiveError:
    """The ArchiveError of a write to the archive at ``path`` that failed with ``error`` and was rolled back: what
    could not be done (``doing``), why, that what was written before is kept (``kept``: there was something before),
    and what to do (``then``)."""
    before = " The failed write was rolled back: everything written before it is kept." if kept else ""
    return ArchiveError(f"archive {path}: could not {doing}: {_describe_error(path, error)}.{before} "
                        f"{then[0].upper()}{then[1:]}.")


# ---- the driver lock ------------------------------------------------------------------------------------------
_HELD: set[str] = set()  # tokens of the driver locks this process holds


@dataclass(frozen=True)
class _Holder:
    pid: int | None
    host: str
    since: str
    task: str
    run_dir: str
    token: str
    process_start: str | None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


def _running(pid: int, started: str | None) -> str | None:
    """None when process ``pid`` (started at ``started``, if known) runs on this host, else why it does not."""
    if pid <= 0:
        return f"pid {pid} is no process"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"pid {pid} is no longer running"
    except PermissionError:
        pass  # it runs, as another user
    except OSError:
        return f"pid {pid} is no longer running"
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        if state in (b"Z", b"X"):
            return f"pid {pid} has ended (a zombie process)"
    except (OSError, IndexError):
        pass
    now = _process_start(pid)
    if started is not None and now is not None and now != started:
        return f"pid {pid} now belongs to another process"
    return None


class DriverLock:
    """The archive's driver lock: one driver (a study, a search: whatever trains through the archive and writes its
    state there) per archive at a time, across processes and hosts. A context manager: taken on entry, given back on
    exit, also when the driver stops with an error.

    Taking it records this process (pid, host, when, the task and its run folder) as the row of the archive's table
    driver_lock, in one write transaction, so two drivers starting at once cannot both get it. While another driver
    holds it, ArchiveError names that driver. A lock whose driver died on this host (its pid no longer runs, or now
    belongs to another process) is taken over, with a warning in the log; one held on another host cannot be
    checked from here, and the message says how to release it. Taking it is the driver's first write, so an archive
    a driver cannot write (read-only file or folder, full disk) stops the driver here, before anything is trained.
    Workers never take it: they return their rows to the driver."""

    def __init__(self, path: str | Path, task: str, run_dir: str | None = None):
        self.path, self.task, self.run_dir = Path(path), task, run_dir
        self.token: str | None = None

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never creates the file (it may have been moved away since it was opened)
        conn = sqlite3.connect(f"file:{pathname2url(str(self.path.resolve()))}?mode=rw", uri=True,
                               timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.text_factory = bytes
        return conn

    def acquire(self) -> DriverLock:
        """Take the lock (ArchiveError when another live driver holds it, or the archive cannot be written)."""
        if self.token is not None:
            return self
        token, host, pid = secrets.token_hex(8), socket.gethostname(), os.getpid()
        doing = "start a driver on it (taking the archive's driver lock is the first write a driver makes)"
        then = "a study or a search writes every evaluation to its archive: fix that, or give another archive=PATH"
        try:
            conn = self._connect()
        except sqlite3.Error as e:
            raise write_failure(self.path, e, doing, then) from None
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_LOCK_TABLE)
            found = conn.execute("SELECT pid, host, since, task, run_dir, token, process_start FROM driver_lock "
                                 "WHERE id = 1").fetchone()
            if found is not None:
                holder = _holder(found)
                stale = self._stale(holder, host)
                if stale is None:
                    _rollback(conn)
                    raise ArchiveError(self._held(holder, host))
                log.warning("archive %s: taking over the driver lock of pid %s on %s (since %s, %s): %s", self.path,
                            holder.pid, holder.host, holder.since, holder.task or "unknown task", stale)
            conn.execute("INSERT OR REPLACE INTO driver_lock (id, pid, host, since, task, run_dir, token, process_start) "
                         "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                         (pid, host, _now(), self.task, self.run_dir, token, _process_start(pid)))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            _rollback(conn)
            raise write_failure(self.path, e, doing, then) from None
        finally:
            conn.close()
        self.token = token
        _HELD.add(token)
        return self

    def release(self) -> None:
        """Give the lock back if this still holds it (again: no effect). A failure is logged, not raised: a lock
        left behind is taken over by the next driver on this host once this process has ended."""
        if self.token is None:
            return
        token, self.token = self.token, None
        _HELD.discard(token)
        try:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM driver_lock WHERE id = 1 AND token = ?", (token,))
                conn.execute("COMMIT")
            finally:
                _rollback(conn)
                conn.close()
        except sqlite3.Error as e:
            log.warning("archive %s: could not release the driver lock (%s); the next driver on this host takes it "
                        "over once this process has ended", self.path, _describe_error(self.path, e))

    def _stale(self, holder: _Holder, host: str) -> str | None:
        """Why the lock ``holder`` has is left over (its driver is gone), or None when it may still be held."""
        if holder.pid is None or holder.host != host:
            return None
        if holder.pid == os.getpid():
            return None if holder.token in _HELD else "an earlier driver of this process did not release it"
        return _running(holder.pid, holder.process_start)

    def _held(self, holder: _Holder, host: str) -> str:
        if holder.pid is None:
            who = f"a driver lock this darts_lite cannot read (host {holder.host!r}, since {holder.since!r})"
        else:
            who = f"another driver: pid {holder.pid} on host {holder.host}, since {holder.since}"
            if holder.task or holder.run_dir:
                who += f" ({', '.join(x for x in (holder.task, holder.run_dir and f'run folder {holder.run_dir}') if x)})"
        text = (f"archive {self.path} is in use by {who}. Two drivers writing one archive would train the same "
                "evaluations twice and overwrite each other's state: wait until that one has ended (or stop it), or "
                "give this run another archive=PATH")
        if holder.pid is None or holder.host != host:
            text += (f". This host ({host}) cannot tell whether that driver still runs; if it does not, release its "
                     f"lock: python -c \"import sqlite3; c = sqlite3.connect({str(self.path.resolve())!r}); "
                     "c.execute('DELETE FROM driver_lock'); c.commit()\"")
        return text

    def __enter__(self) -> DriverLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(row: tuple) -> _Holder:
    pid, host, since, task, run_dir, token, started = row
    return _Holder(pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None, host=_text(host),
                   since=_text(since), task=_text(task) if task is not None else "",
                   run_dir=_text(run_dir) if run_dir is not None else "", token=_text(token),
                   process_start=_text(started) if started is not None else None)


__all__ = ["BUSY_TIMEOUT_S", "COLUMN_NAMES", "FORMAT", "STATUSES", "VERSION", "Archive", "ArchiveError", "DriverLock",
           "genotype_hash", "write_failure"]
