"""The evaluation archive under bad input and faults. Property-based: valid rows round-trip exactly; any other file
given as the archive (arbitrary bytes, a truncated or byte-changed archive, another schema, another format or version,
hand-edited rows) is refused with an ArchiveError naming the file, left byte-identical, or (damage SQLite cannot see)
the damaged row is named when read; never another exception, never a hang. Then faults while writing (a full disk, a
read-only file or folder), two drivers on one archive, and many processes returning rows at once.

Processes that must differ from this one (a file-size limit, another user, a second driver, concurrent writers) are
forked from it, so that none imports torch again; nothing holds the archive open across a fork.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import TINY_ECONAS, compose_cfg, run_cli
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from strategies import darts_genotypes, json_values, nb201_genotypes

from darts_lite.econas import archive as archive_module
from darts_lite.econas.archive import COLUMN_NAMES, FORMAT, STATUSES, Archive, ArchiveError, DriverLock, genotype_hash
from darts_lite.errors import ConfigError
from darts_lite.spaces import darts, nb201

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork, file modes and resource limits are POSIX")

# fixed seeds and bounded examples: the same cases on every run, within the file's time budget
FIXED = settings(derandomize=True, max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MANY = settings(FIXED, max_examples=150)  # the cases that only open a file
SETTINGS = ("c4r4s0e60", "c0r0s0e2", "c2r0s0e5", "c0r0s0e5n2")
TEXT = ("genotype", "genotype_hash", "setting", "status", "created")
OPTIONAL_TEXT = ("space", "error", "worker")
NUMBERS = ("val_acc", "test_acc", "params", "flops", "wall_time_s")


# these tests check what is stored, not how fast a disk syncs: their scratch files are in memory where there is room
RAM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(dir=RAM, prefix="darts_lite_archive_")


@pytest.fixture
def scratch_path():
    with scratch() as folder:
        yield Path(folder)


# ---- rows as the evaluations write them ------------------------------------------------------------------------
def setting_values(name: str, epochs: int, draw=None) -> dict:
    """A setting's values as Setting.values() gives them."""
    values = {"name": name, "channels": 4, "layers": 3, "resolution": 8, "sample_ratio": 1.0, "epochs": epochs,
              "batch_size": 16, "lr": 0.05}
    if draw is not None:
        values.update(channels=draw(st.integers(1, 64)), sample_ratio=draw(st.floats(0.01, 1)),
                      lr=draw(st.floats(1e-5, 1)))
    return values


@st.composite
def rows(draw) -> dict:
    """A realistic archive row: a done evaluation (val_accs one per epoch) or a failed one (its error text)."""
    genotype = draw(st.one_of(darts_genotypes(), nb201_genotypes()))
    setting = draw(st.sampled_from(SETTINGS))
    epochs = draw(st.integers(1, 12))
    row = {"genotype": genotype.to_text(), "genotype_hash": genotype_hash(genotype),
           "space": "nb201" if isinstance(genotype, nb201.Genotype) else "darts", "setting": setting,
           "setting_values": setting_values(setting, epochs, draw), "seed": draw(st.integers(0, 3)), "epochs": epochs,
           "status": draw(st.sampled_from(STATUSES)), "worker": draw(st.none() | st.text(max_size=20))}
    if row["status"] == "done":
        row.update(val_accs=draw(st.lists(st.floats(0, 1), min_size=epochs, max_size=epochs)),
                   test_acc=draw(st.floats(0, 1)), params=draw(st.integers(0, 10 ** 9)),
                   flops=draw(st.integers(0, 10 ** 12)), wall_time_s=draw(st.floats(0, 1e6)))
    else:  # what a worker's exception leaves: any text, a traceback's lines included
        row["error"] = draw(st.text(max_size=200))
    return row


def sample_row(k: int, status: str = "done", **over) -> dict:
    """Row ``k`` of a fixed set of realistic rows (darts and nb201 genotypes, every setting)."""
    rng = random.Random(k)
    genotype = darts.sample(rng) if k % 3 else nb201.sample(rng)
    setting = SETTINGS[k % len(SETTINGS)]
    epochs = 1 + k % 5
    row = {"genotype": genotype.to_text(), "genotype_hash": genotype_hash(genotype), "space": genotype_space(genotype),
           "setting": setting, "setting_values": setting_values(setting, epochs), "seed": k % 2, "epochs": epochs,
           "status": status, "worker": f"node{k % 4}:gpu{k % 2}"}
    if status == "done":
        row.update(val_accs=[round(rng.random(), 6) for _ in range(epochs)], test_acc=rng.random(),
                   params=rng.randrange(10 ** 6), flops=rng.randrange(10 ** 9), wall_time_s=rng.random() * 100)
    else:
        row["error"] = f"RuntimeError: CUDA error #{k}\nTraceback (most recent call last):\n  ..."
    row.update(over)
    return row


def genotype_space(genotype) -> str:
    return "nb201" if isinstance(genotype, nb201.Genotype) else "darts"


STATE = {"config": {"setting": setting_values("c4r4s0e60", 60)}, "search": {"cycle": 3, "population": [[1, 0.5]]}}


@functools.lru_cache(maxsize=1)
def template() -> bytes:
    """The bytes of a valid archive: 30 rows (done and failed) and a driver state."""
    with scratch() as folder:
        path = Path(folder) / "a.sqlite"
        with Archive(path) as a:
            for k in range(30):
                a.add(sample_row(k, "failed" if k % 7 == 3 else "done"))
            a.save_state("evolution/hierarchical/seed0", STATE)
        return path.read_bytes()


@functools.lru_cache(maxsize=1)
def template_rows() -> list[dict]:
    with scratch() as folder:
        path = Path(folder) / "a.sqlite"
        path.write_bytes(template())
        with Archive(path) as a:
            return a.rows()


# ---- what every refusal and every read must be ------------------------------------------------------------------
@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fails the test (TimeoutError) when the block runs longer than ``seconds``."""
    def alarm(*_):
        raise TimeoutError(f"hung for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def opened_or_refused(path: Path) -> Archive | None:
    """``Archive(path)``, or None after an ArchiveError that names the file and says what is wrong with it, the file
    byte-identical and nothing created beside it; any other exception fails the test."""
    before, beside = path.read_bytes(), sorted(os.listdir(path.parent))
    with no_hang():
        try:
            return Archive(path)
        except ArchiveError as e:
            error = e
    message = str(error)
    event(f"refused: {re.sub(r'[(:].*', '', message[len(str(path)) + 9:])}")
    assert message.startswith(f"archive {path} ") and "nothing was changed" in message, message
    assert len(message) < 3000 and isinstance(error, ConfigError)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == beside
    return None


def read_everything(a: Archive) -> list[dict] | None:
    """Every read an archive offers; the rows, or None after an ArchiveError that names the file and the damaged row
    or driver state. A row read back holds what its column promises."""
    with no_hang():
        try:
            len(a)
            state = a.load_state("evolution/hierarchical/seed0")
            assert state is None or isinstance(state, dict)
            got = a.rows()
            a.export_csv(a.path.parent / "out" / "evaluations.csv")
        except ArchiveError as e:
            message = str(e)
            event("opened; a damaged row or state named when read")
            assert message.startswith(f"archive {a.path}: "), message
            assert re.search(r"evaluation row \d+ is damaged: \w+ |driver state .* is damaged|could not be read", message), \
                message
            return None
    event("opened; every row read")
    for r in got:
        assert set(r) == set(COLUMN_NAMES)
        assert all(isinstance(r[k], str) for k in TEXT) and r["status"] in STATUSES
        assert all(r[k] is None or isinstance(r[k], str) for k in OPTIONAL_TEXT)
        assert isinstance(r["seed"], int) and isinstance(r["epochs"], int)
        assert all(r[k] is None or isinstance(r[k], (int, float)) for k in NUMBERS)
        assert r["setting_values"] is None or isinstance(r["setting_values"], dict)
        assert r["val_accs"] is None or all(isinstance(v, (int, float)) for v in r["val_accs"])
    return got


def archive_file(folder: Path, data: bytes | None = None) -> Path:
    path = folder / "a.sqlite"
    path.write_bytes(template() if data is None else data)
    return path


# ---- valid archives round-trip -----------------------------------------------------------------------------------
@FIXED
@given(st.lists(rows(), min_size=1, max_size=8))
def test_rows_read_back_equal_to_what_was_added(added):
    with scratch() as folder:
        path = Path(folder) / "runs" / "a.sqlite"
        with Archive(path) as a:
            ids = [a.add(r) for r in added]
        stored, done = [], {}
        for r, rid in zip(added, ids):
            key = (r["genotype_hash"], r["setting"], r["seed"], r["epochs"])
            if r["status"] == "done" and key in done:  # a done evaluation is stored once
                assert rid == done[key]
                continue
            if r["status"] == "done":
                done[key] = rid
            stored.append((rid, r))
        with Archive(path) as a:  # reopened: what a resumed driver reads
            got = a.rows()
            assert [g["id"] for g in got] == [rid for rid, _ in stored] and len(a) == len(stored)
            for g, (_, r) in zip(got, stored):
                assert {k: g[k] for k in r} == r
                assert g["val_acc"] == (r["val_accs"][-1] if r.get("val_accs") else None)
            for key, rid in done.items():
                assert a.find(*key)["id"] == rid
        with Archive(path) as a:
            assert read_everything(a) == got


# ---- any other file is refused, untouched -----------------------------------------------------------------------
HEADER = b"SQLite format 3\x00"


@MANY
@given(st.one_of(st.binary(min_size=1, max_size=5000), st.binary(max_size=5000).map(HEADER.__add__),
                 st.binary(min_size=84, max_size=84).map(lambda b: HEADER + b + bytes(4096 - 100))))
def test_arbitrary_bytes_are_refused(blob):
    with scratch() as folder:
        assert opened_or_refused(archive_file(Path(folder), blob)) is None


def test_an_empty_file_becomes_an_archive_and_a_folder_is_refused(tmp_path):
    with Archive(archive_file(tmp_path, b"")) as a:
        assert len(a) == 0
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(ArchiveError, match="is not a file"):
        Archive(tmp_path / "dir.sqlite")


@MANY
@given(st.data())
def test_a_truncated_archive_is_refused(data):
    length = data.draw(st.one_of(st.integers(1, 120), st.integers(1, len(template()) - 1)), label="length")
    with scratch() as folder:
        path = archive_file(Path(folder), template()[:length])
        assert opened_or_refused(path) is None


def test_a_truncated_archive_says_so(tmp_path):
    path = archive_file(tmp_path, template()[:8192 + 17])
    with pytest.raises(ArchiveError, match=rf"it is truncated: {8192 + 17} bytes where its header counts \d+ pages"):
        Archive(path)


@MANY
@given(st.data())
def test_an_archive_with_changed_bytes_is_refused_or_its_damaged_rows_are_named(data):
    blob = bytearray(template())
    # anywhere, and more often where the file's structure is: the header, the schema page, the pages' headers
    pages = len(blob) // 4096
    where = st.one_of(st.integers(0, 99), st.integers(0, 4095), st.integers(0, len(blob) - 1),
                      st.integers(0, pages - 1).map(lambda p: p * 4096 + 8),  # a page's header
                      st.tuples(st.integers(1, pages - 1), st.integers(1, 2000)).map(lambda p: (p[0] + 1) * 4096 - p[1]))
    for offset, value in data.draw(st.lists(st.tuples(where, st.integers(0, 255)), min_size=1, max_size=8), label="edits"):
        blob[offset] = value
    with scratch() as folder:
        path = archive_file(Path(folder), bytes(blob))
        a = opened_or_refused(path)
        if a is None:
            return
        with a:
            got = read_everything(a)
            if got is not None and bytes(blob) == template():
                assert got == template_rows()
            with no_hang():
                try:  # an archive that opened takes a new row, or says why not
                    a.add(sample_row(99))
                except ArchiveError as e:
                    assert str(e).startswith(f"archive {path}: "), e


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


names = st.one_of(st.sampled_from(["meta", "evaluations", "driver_state", "driver_lock", "results", "key", "value",
                                   "format", "version", *COLUMN_NAMES]),
                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)
                  ).filter(lambda n: not n.lower().startswith("sqlite_") and n.lower() != "something_else")
cells = st.one_of(st.none(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=False), st.text(max_size=20),
                  st.binary(max_size=20), st.sampled_from([FORMAT, "1", 1, "version", "format"]))


@st.composite
def foreign_databases(draw) -> list[tuple[str, list[str], list[tuple]]]:
    """(table, columns, rows) of an SQLite database of another schema; sometimes with a meta table that says it is
    our format and version, so that only the other tables give it away."""
    tables = draw(st.lists(st.tuples(names, st.lists(names, min_size=1, max_size=6, unique_by=str.lower)), max_size=4,
                           unique_by=lambda t: t[0].lower()))
    out = []
    for name, columns in tables:
        out.append((name, columns, draw(st.lists(st.tuples(*[cells] * len(columns)), max_size=4))))
    if draw(st.booleans()) and all(name.lower() != "meta" for name, _ in tables):
        out.append(("meta", ["key", "value"], [("format", FORMAT), ("version", draw(st.sampled_from(["1", 1, "2"])))]))
    return out


@FIXED
@given(foreign_databases())
def test_a_database_of_another_schema_is_refused(tables):
    with scratch() as folder:
        path = Path(folder) / "a.sqlite"
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS something_else (x)")  # never an empty file
            for name, columns, values in tables:
                conn.execute(f"CREATE TABLE {identifier(name)} ({', '.join(map(identifier, columns))})")
                conn.executemany(f"INSERT INTO {identifier(name)} VALUES ({', '.join('?' * len(columns))})", values)
        conn.close()
        assert opened_or_refused(path) is None


meta_cells = st.one_of(st.sampled_from([FORMAT, "1", " 1", "01", "1.0", "2", "0", "-1", "darts_lite-evaluation"]),
                       st.text(max_size=25), st.integers(-5, 5), st.floats(allow_nan=False), st.binary(max_size=25),
                       st.just(FORMAT.encode()))
meta_values = meta_cells | st.none()


@MANY
@given(st.booleans().flatmap(lambda ours: st.just(FORMAT) if ours else meta_values),
       st.booleans().flatmap(lambda ours: st.sampled_from(["1", 1, " 1", "01"]) if ours else meta_values),
       st.lists(st.tuples(st.text(max_size=8), meta_cells), max_size=3))
def test_an_archive_of_another_format_or_version_is_refused(format_, version, extra):
    with scratch() as folder:
        path = archive_file(Path(folder))
        conn = sqlite3.connect(path)
        with conn:
            for key, value in (("format", format_), ("version", version)):
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
                if value is not None:
                    conn.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
            conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", extra)
        conn.text_factory = bytes
        stored = {k.decode(): v for k, v in conn.execute("SELECT key, value FROM meta WHERE key IN ('format', 'version')")}
        conn.close()
        a = opened_or_refused(path)
        stored_version = stored.get("version")
        stored_version = stored_version.decode("utf-8", "replace") if isinstance(stored_version, bytes) else stored_version
        try:
            ours = int(str(stored_version)) == 1
        except ValueError:
            ours = False
        assert (a is not None) == (stored.get("format") == FORMAT.encode() and ours), stored
        if a is not None:
            event("opened")
            with a:
                assert a.rows() == template_rows()


def test_the_refusals_say_what_is_wrong(tmp_path):
    cases = {
        "format 'someone-else', expected 'darts_lite-evaluations'": "UPDATE meta SET value = 'someone-else' WHERE key = 'format'",
        "was written by archive version 7; this darts_lite reads version 1": "UPDATE meta SET value = '7' WHERE key = 'version'",
        "has an unreadable archive version 'one'": "UPDATE meta SET value = 'one' WHERE key = 'version'",
        "has no table driver_state (damaged or edited)": "DROP TABLE driver_state",
        "its index evaluations_done is not an archive's":
            "DROP INDEX evaluations_done; CREATE INDEX evaluations_done ON evaluations (seed)",
        "uses a write-ahead log": "PRAGMA journal_mode = wal",
    }
    for says, sql in cases.items():
        path = archive_file(tmp_path)
        conn = sqlite3.connect(path)
        conn.executescript(sql)
        conn.close()
        for leftover in ("a.sqlite-wal", "a.sqlite-shm"):
            (tmp_path / leftover).unlink(missing_ok=True)
        before = path.read_bytes()
        with pytest.raises(ArchiveError) as info:
            Archive(path)
        assert says in str(info.value) and str(path) in str(info.value), str(info.value)
        assert path.read_bytes() == before


# ---- rows edited by hand: named when read -------------------------------------------------------------------------
NOT_UTF8 = "\udcff".encode("utf-8", "surrogatepass")
edits = st.one_of(json_values().map(json.dumps), st.text(max_size=30), st.binary(max_size=20), st.integers(-2, 10 ** 6),
                  st.floats(allow_nan=False), st.none(),
                  st.sampled_from(["{", "[0.1, ", "NaN", "[\"0.5\"]", "{}", "[]", "running", "done", NOT_UTF8]))


@MANY
@given(st.sampled_from([n for n in COLUMN_NAMES if n not in ("id", "created")] + ["setting_values", "val_accs"] * 3),
       edits, st.integers(1, 30))
def test_a_hand_edited_row_is_named_when_read(column, value, rid):
    with scratch() as folder:
        path = archive_file(Path(folder))
        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.execute(f"UPDATE evaluations SET {column} = ? WHERE id = ?", (value, rid))
        except sqlite3.IntegrityError:  # NOT NULL, or a second done row of a key: SQLite itself refuses that edit
            assume(False)
        finally:
            conn.close()
        with Archive(path) as a:  # nothing SQLite can see: it opens, and the damage shows when the row is read
            got = read_everything(a)
            if got is None:
                with pytest.raises(ArchiveError, match=rf"evaluation row {rid} is damaged: {column} "):
                    a.rows()
                other = next(r for r in template_rows() if r["id"] != rid and r["status"] == "done")
                key = (other["genotype_hash"], other["setting"], other["seed"], other["epochs"])
                assert a.find(*key)["id"] == other["id"]  # the other rows are read as before
            else:
                assert [r["id"] for r in got] == [r["id"] for r in template_rows()]


def test_a_damaged_driver_state_is_named(tmp_path):
    path = archive_file(tmp_path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE driver_state SET state = '{\"cycle\": 3, \"population\": [' WHERE name LIKE 'evolution/%'")
    conn.close()
    with Archive(path) as a, pytest.raises(ArchiveError, match="the driver state 'evolution/hierarchical/seed0' is damaged"):
        a.load_state("evolution/hierarchical/seed0")


def test_bad_values_are_refused_before_they_are_written(tmp_path):
    with Archive(tmp_path / "a.sqlite") as a:
        for over, says in [({"params": 2 ** 70}, "does not fit a 64-bit integer"), ({"test_acc": "0.5"}, "must be a number"),
                           ({"val_accs": [0.1, "x"]}, "val_accs must be numbers"), ({"genotype_hash": 5}, "must be text"),
                           ({"setting_values": {"lr": object()}}, "setting_values is not JSON-able")]:
            with pytest.raises(ValueError, match=says):
                a.add(sample_row(1, **over))
        # an error text with characters UTF-8 cannot hold (a worker's undecodable file name) is kept, escaped
        rid = a.add(sample_row(2, "failed", error="OSError: no such file: '\udcff.png'"))
        assert a.rows()[0]["id"] == rid and a.rows()[0]["error"] == "OSError: no such file: '\\udcff.png'"


# ---- faults while writing ------------------------------------------------------------------------------------------
def in_child(fn, *args, timeout: float = 60):
    """``fn(*args)`` in a forked process: ("ok", its result) or ("error", "Type: message"); the child is killed after
    ``timeout`` s. Nothing may hold an archive open across the fork."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def run():
        try:
            send.send(("ok", fn(*args)))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            send.send(("error", f"{type(e).__name__}: {e}"))

    child = ctx.Process(target=run)
    child.start()
    try:
        if not receive.poll(timeout):
            raise TimeoutError(f"{fn.__name__} did not finish in {timeout} s")
        return receive.recv()
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()


def unprivileged() -> None:
    """This (forked) process as user nobody when it runs as root, so that file modes apply to it."""
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)


@pytest.fixture
def shared_dir():
    """A folder another user may enter (tmp_path's parents are private to this one)."""
    folder = Path(tempfile.mkdtemp(prefix="darts_lite_archive_"))
    folder.chmod(0o755)
    yield folder
    for p in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            p.chmod(0o700 if p.is_dir() else 0o600)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_full_disk_stops_the_write_with_one_message_and_keeps_the_rows_before(tmp_path):
    path = tmp_path / "a.sqlite"
    with Archive(path) as a:
        for k in range(10):
            a.add(sample_row(k))
        before = a.rows()
    limit = path.stat().st_size + 8192

    def fill():  # the disk "fills" at the file-size limit; SIGXFSZ would kill the process instead of failing the write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        added = []
        with Archive(path) as a:
            for k in range(10, 500):
                added.append(a.add(sample_row(k, error="x" * 2000, status="failed")))
        return added

    status, message = in_child(fill)
    assert status == "error" and message.startswith(f"ArchiveError: archive {path}: could not record the failed "), message
    assert "file-size limit" in message and "rolled back: everything written before it is kept" in message
    assert "\n" not in message
    with Archive(path) as a:  # it still opens: every row before the failed write is there, as it was
        rows = a.rows()
        assert rows[:10] == before and len(rows) > 10
        assert all(r["status"] == "failed" and r["error"] == "x" * 2000 for r in rows[10:])
        a.add(sample_row(600))  # and takes rows again once there is room
    assert not (tmp_path / "a.sqlite-journal").exists()


class _FullDisk:
    """An SQLite connection whose inserts fail as on a disk without space (SQLITE_FULL)."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, *args):
        if sql.startswith("INSERT"):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode, error.sqlite_errorname = 13, "SQLITE_FULL"
            raise error
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_disk_without_space_is_named(tmp_path):
    path = tmp_path / "a.sqlite"
    a = Archive(path)
    a.add(sample_row(1))
    real, a.conn = a.conn, _FullDisk(a.conn)
    with pytest.raises(ArchiveError) as info:
        a.add(sample_row(2))
    assert re.fullmatch(rf"archive {re.escape(str(path))}: could not record the done evaluation of \w{{8}} under \w+, seed "
                        r"\d, \d epochs: the disk is full \([\d.]+ \w+ free there, on the file system of .*\)\. The failed "
                        r"write was rolled back: everything written before it is kept\. Once the cause is fixed, run the "
                        r"same command with resume=true: .*", str(info.value)), str(info.value)
    with pytest.raises(ArchiveError, match="could not save the driver state 'x': the disk is full"):
        a.save_state("x", {"cycle": 1})
    a.conn = real
    assert not real.in_transaction and len(a) == 1
    a.close()
    assert [r["genotype_hash"] for r in Archive(path).rows()] == [sample_row(1)["genotype_hash"]]


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_archive_is_read_and_refuses_writes_with_one_message(shared_dir, what):
    path = shared_dir / "a.sqlite"
    with Archive(path) as a:
        for k in range(3):
            a.add(sample_row(k))
        expected = a.rows()
    path.chmod(0o444 if what == "file" else 0o666)
    shared_dir.chmod(0o777 if what == "file" else 0o555)
    before = path.read_bytes()

    def use():
        unprivileged()
        with Archive(path) as a:
            rows = a.rows()  # reading needs no write
            try:
                a.add(sample_row(9))
            except ArchiveError as e:
                added = str(e)
        try:
            DriverLock(path, "proxy_study").acquire()
        except ArchiveError as e:
            locked = str(e)
        return rows, added, locked

    status, result = in_child(use)
    assert status == "ok", result
    rows, added, locked = result
    assert rows == expected
    why = "the file is read-only (permissions -r--r--r--)" if what == "file" else f"its folder {shared_dir} is read-only"
    assert added.startswith(f"archive {path}: could not record the done evaluation") and why in added, added
    assert locked.startswith(f"archive {path}: could not start a driver on it") and why in locked, locked
    assert path.read_bytes() == before and sorted(os.listdir(shared_dir)) == ["a.sqlite"]


def test_a_new_archive_in_a_read_only_folder_is_refused_and_leaves_nothing(shared_dir):
    shared_dir.chmod(0o555)

    def create():
        unprivileged()
        Archive(shared_dir / "runs" / "a.sqlite")

    status, message = in_child(create)
    assert status == "error" and f"archive {shared_dir}/runs/a.sqlite: could not create it" in message, message
    assert os.listdir(shared_dir) == []


def test_a_driver_refused_for_a_read_only_archive_trains_nothing(shared_dir, tmp_path):
    path = shared_dir / "a.sqlite"
    Archive(path).close()
    path.chmod(0o444)
    from darts_lite.econas.study import run_study

    cfg = compose_cfg("+experiment=proxy_study_quick", *TINY_ECONAS, "study.proxies=[c2r0s0e1]", f"archive={path}",
                      f"run_dir={shared_dir / 'run'}")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not an archive\n")
    with pytest.raises(ArchiveError):  # here first: what the study imports (user nobody cannot read this Python's files)
        run_study(compose_cfg("+experiment=proxy_study_quick", *TINY_ECONAS, "study.proxies=[c2r0s0e1]", f"archive={foreign}",
                              f"run_dir={tmp_path}"))

    # the config tree's settings, where user nobody may read them (a checkout's folders may be private to this user)
    from darts_lite.econas import settings

    readable = shutil.copytree(settings.setting_dir(), shared_dir / "setting")

    def drive():
        settings.setting_dir = lambda: readable  # in the child only
        unprivileged()
        run_study(cfg)

    status, message = in_child(drive)
    assert status == "error" and message.startswith(f"ArchiveError: archive {path}: could not start a driver on it"), message
    assert "the file is read-only" in message and not (shared_dir / "run").exists()


# ---- two drivers, one archive ---------------------------------------------------------------------------------------
def hold_lock(path: Path, task: str, ready) -> None:
    with DriverLock(path, task, run_dir="/runs/first"):
        ready.set()
        time.sleep(120)  # until killed


@contextlib.contextmanager
def first_driver(path: Path):
    """A driver holding the archive's lock in a forked process; yields the process, killed at the end (never
    signalled through a shared lock: one killed while holding it would leave it held)."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=hold_lock, args=(path, "econas", ready))
    child.start()
    try:
        assert ready.wait(30), "the first driver did not take the lock"
        yield child
    finally:
        if child.is_alive():
            child.kill()
        child.join()


def test_a_second_driver_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken_over(tmp_path, caplog):
    from darts_lite.econas.evolution import run_evolution
    from darts_lite.econas.study import run_study

    path = tmp_path / "a.sqlite"
    path.write_bytes(template())
    host = socket.gethostname()
    with first_driver(path) as first:
        for run, experiment in ((run_study, ["+experiment=proxy_study_quick", "study.proxies=[c2r0s0e1]"]),
                                (run_evolution, ["+experiment=econas_quick", "setting.name=c0r0s0e3"])):
            cfg = compose_cfg(*experiment, *TINY_ECONAS, f"archive={path}", f"run_dir={tmp_path / 'second'}")
            with pytest.raises(ArchiveError) as info:
                run(cfg)
            message = str(info.value)
            assert message.startswith(f"archive {path} is in use by another driver: pid {first.pid} on host {host}, since "
                                      "20"), message
            assert "(econas, run folder /runs/first)" in message and "another archive=PATH" in message
            assert not (tmp_path / "second").exists()
        # readers and workers are not locked out: they open the archive and add rows
        with Archive(path) as reader:
            reader.add(sample_row(77))
        # on the command line: one line, no traceback
        cli = run_cli("+experiment=proxy_study_quick", *TINY_ECONAS, "study.proxies=[c2r0s0e1]", f"archive={path}",
                      f"hydra.run.dir={tmp_path / 'cli'}", cwd=tmp_path)
        assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr[-3000:]
        lines = [line for line in cli.stderr.splitlines() if line.startswith("darts_lite: ")]
        assert lines == [lines[0]] and f"is in use by another driver: pid {first.pid} on host {host}" in lines[0]
        first.kill()  # killed: its lock stays behind
        first.join()
    caplog.set_level("WARNING", logger="darts_lite")
    with DriverLock(path, "proxy_study") as second:
        assert f"taking over the driver lock of pid {first.pid} on {host}" in caplog.text
        assert f"pid {first.pid} is no longer running" in caplog.text
        with pytest.raises(ArchiveError, match=f"in use by another driver: pid {os.getpid()} on host {host}"):
            DriverLock(path, "econas").acquire()  # a second driver in the same process
        assert second.token is not None
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM driver_lock").fetchone()[0] == 0  # given back
    conn.close()


def test_a_lock_of_another_host_is_explained_and_one_of_a_reused_pid_is_taken_over(tmp_path, caplog):
    path = tmp_path / "a.sqlite"
    path.write_bytes(template())
    DriverLock(path, "x").acquire().release()  # the lock table exists
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO driver_lock VALUES (1, 4242, 'node17', '2026-12-01T10:00:00+00:00', 'econas', "
                     "'/scratch/run', 'abc', '1')")
    conn.close()
    with pytest.raises(ArchiveError) as info:
        DriverLock(path, "econas").acquire()
    message = str(info.value)
    assert "is in use by another driver: pid 4242 on host node17, since 2026-12-01T10:00:00+00:00" in message
    assert "cannot tell whether that driver still runs; if it does not, release its lock: python -c " in message
    exec(message.split('python -c "', 1)[1].rsplit('"', 1)[0])  # the command it gives releases it
    conn = sqlite3.connect(path)
    with conn:  # pid 1 runs here, but not since the time the lock records: another process now has that pid
        conn.execute("INSERT INTO driver_lock VALUES (1, 1, ?, '2026-12-01T10:00:00+00:00', 'econas', NULL, 'abc', "
                     "'-1')", (socket.gethostname(),))
    conn.close()
    caplog.set_level("WARNING", logger="darts_lite")
    with DriverLock(path, "econas"):
        assert "pid 1 now belongs to another process" in caplog.text


# ---- many results at once -----------------------------------------------------------------------------------------
WORKERS, ROWS = 8, 50


def worker_rows(w: int) -> list[dict]:
    """Worker ``w``'s results: its own evaluations, every fifth one also returned by every other worker (done: stored
    once), and a failed attempt of a shared key per worker (failed attempts are all kept)."""
    out = []
    for i in range(ROWS):
        k = i if i % 5 == 0 else 1000 * (w + 1) + i
        out.append(sample_row(k, worker=f"w{w}"))
    out.append(sample_row(5, "failed", worker=f"w{w}"))
    return out


def expected_keys() -> Counter:
    keys = Counter()
    done = set()
    for w in range(WORKERS):
        for r in worker_rows(w):
            key = (r["genotype_hash"], r["setting"], r["seed"], r["epochs"], r["status"])
            if r["status"] == "failed" or key not in done:
                keys[key] += 1
                done.add(key)
    return keys


def stored_keys(path: Path) -> Counter:
    with Archive(path) as a:
        rows = a.rows()
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows})
    return Counter((r["genotype_hash"], r["setting"], r["seed"], r["epochs"], r["status"]) for r in rows)


def send_rows(w: int, queue, start) -> None:
    start.wait(30)
    for r in worker_rows(w):
        queue.put(r)
    queue.put(None)


def write_rows(w: int, path: Path, start) -> None:
    start.wait(30)
    with Archive(path) as a:
        for r in worker_rows(w):
            a.add(r)


@pytest.mark.parametrize("how", ["through the driver", "each worker writing"])
def test_eight_workers_returning_at_once_lose_and_duplicate_no_row(scratch_path, how):
    path = scratch_path / "a.sqlite"
    Archive(path).close()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(WORKERS + 1)
    queue = ctx.Queue()
    target, args = (send_rows, (queue, start)) if how == "through the driver" else (write_rows, (path, start))
    workers = [ctx.Process(target=target, args=(w, *args)) for w in range(WORKERS)]
    for p in workers:
        p.start()
    started = time.time()
    with no_hang(60):
        start.wait(30)
        if how == "through the driver":  # the driver records every result as it arrives, as the Evaluator does
            with Archive(path) as a:
                ended = 0
                while ended < WORKERS:
                    row = queue.get(timeout=30)
                    if row is None:
                        ended += 1
                    else:
                        a.add(row)
        for p in workers:
            p.join(30)
    assert [p.exitcode for p in workers] == [0] * WORKERS
    assert stored_keys(path) == expected_keys()
    assert sum(expected_keys().values()) == WORKERS * ROWS * 4 // 5 + ROWS // 5 + WORKERS
    assert time.time() - started < 30
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_the_writes_are_transactions_of_their_own(tmp_path):
    """What lets the driver lock and the workers coexist: no write leaves a transaction open."""
    with Archive(tmp_path / "a.sqlite") as a:
        a.add(sample_row(1))
        a.save_state("s", {"x": 1})
        assert not a.conn.in_transaction and a.conn.isolation_level is None
    assert archive_module.BUSY_TIMEOUT_S >= 10
