"""The evaluation archive: rows in and out, dedup of done evaluations, genotype hashes, CSV export, driver state,
reopening, and refusal of files that are not our archives (left byte-identical)."""

import csv
import json
import random
import sqlite3

import pytest

from darts_lite.econas.archive import COLUMN_NAMES, FORMAT, VERSION, Archive, ArchiveError, genotype_hash
from darts_lite.errors import ConfigError
from darts_lite.spaces import darts, nb201
from darts_lite.spaces.darts.genotype import Genotype


def full_row(genotype: Genotype, **over) -> dict:
    row = {
        "genotype": genotype.to_text(),
        "genotype_hash": genotype_hash(genotype),
        "space": "darts",
        "setting": "c4r4s0e60",
        "setting_values": {"channels": 4, "resolution": 4, "samples": 0, "epochs": 60, "lr": 0.025},
        "seed": 3,
        "epochs": 3,
        "val_accs": [0.1, 0.2500000000000001, 1 / 3],
        "test_acc": 0.31,
        "params": 123456,
        "flops": 7890123,
        "wall_time_s": 12.5,
        "status": "done",
        "error": None,
        "worker": "node7:gpu1",
    }
    row.update(over)
    return row


def test_full_row_round_trip(tmp_path):
    g = Genotype.named("DARTS_V2")
    row = full_row(g)
    with Archive(tmp_path / "sub" / "a.sqlite") as a:  # the parent folder is created
        rid = a.add(row)
        assert len(a) == 1
        got = a.find(row["genotype_hash"], "c4r4s0e60", 3, 3)
        assert got is not None and got["id"] == rid
        for key, value in row.items():
            assert got[key] == value, key
        assert got["val_acc"] == row["val_accs"][-1]  # defaults to the last epoch's accuracy
        assert got["created"].endswith("+00:00")
        assert set(got) == set(COLUMN_NAMES)
        assert a.rows() == [got]
        assert a.path == tmp_path / "sub" / "a.sqlite"


def test_done_rows_are_stored_once(tmp_path):
    g = Genotype.named("DARTS_V2")
    with Archive(tmp_path / "a.sqlite") as a:
        first = a.add(full_row(g))
        again = a.add(full_row(g, val_accs=[0.9], test_acc=0.95, worker="elsewhere"))
        assert again == first and len(a) == 1
        got = a.find(genotype_hash(g), "c4r4s0e60", 3, 3)
        assert got["val_accs"] == [0.1, 0.2500000000000001, 1 / 3] and got["test_acc"] == 0.31 and got["worker"] == "node7:gpu1"


def test_failed_rows_repeat_and_are_not_found(tmp_path):
    g = darts.sample(random.Random(1))
    with Archive(tmp_path / "a.sqlite") as a:
        ids = [a.add(full_row(g, status="failed", error=f"CUDA out of memory #{k}", val_accs=None)) for k in range(2)]
        assert ids[0] != ids[1] and len(a) == 2
        assert a.find(genotype_hash(g), "c4r4s0e60", 3, 3) is None
        assert [r["error"] for r in a.rows(status="failed")] == ["CUDA out of memory #0", "CUDA out of memory #1"]
        assert a.rows()[0]["val_accs"] is None and a.rows()[0]["val_acc"] is None
        done = a.add(full_row(g))  # a done row beside the failed attempts
        assert a.find(genotype_hash(g), "c4r4s0e60", 3, 3)["id"] == done
        assert [r["id"] for r in a.rows(status="done")] == [done]


def test_find_tells_settings_seeds_and_epochs_apart(tmp_path):
    g = darts.sample(random.Random(2))
    h = genotype_hash(g)
    keys = [("c4r4s0e60", 0, 10), ("c4r4s0e60", 0, 20), ("c4r4s0e60", 1, 10), ("c8r2s1e30", 0, 10)]
    with Archive(tmp_path / "a.sqlite") as a:
        ids = {k: a.add(full_row(g, setting=k[0], seed=k[1], epochs=k[2], test_acc=0.1 * n)) for n, k in enumerate(keys)}
        assert len(set(ids.values())) == 4
        for n, k in enumerate(keys):
            got = a.find(h, *k)
            assert got["id"] == ids[k] and got["test_acc"] == pytest.approx(0.1 * n)
        assert a.find(h, "c4r4s0e60", 2, 10) is None and a.find("0" * 64, "c4r4s0e60", 0, 10) is None
        assert [r["id"] for r in a.rows(setting="c8r2s1e30")] == [ids[keys[3]]]


def test_genotype_hash_is_canonical():
    g = Genotype.named("DARTS_V2")
    normal = list(g.normal)
    normal[0], normal[1] = normal[1], normal[0]  # node 0's two pairs: ('sep_conv_3x3', 0), ('sep_conv_3x3', 1)
    swapped = Genotype(normal=tuple(normal), normal_concat=g.normal_concat, reduce=g.reduce, reduce_concat=g.reduce_concat)
    assert swapped != g and swapped.normal[:2] == g.normal[1::-1]
    assert genotype_hash(swapped) == genotype_hash(g)
    assert len(genotype_hash(g)) == 64 and int(genotype_hash(g), 16) >= 0
    others = {genotype_hash(darts.sample(random.Random(s))) for s in range(5)} | {genotype_hash(Genotype.named("DARTS_V1"))}
    assert genotype_hash(g) not in others and len(others) == 6
    # the concatenated states and the fixed reduction cell are part of the architecture
    assert genotype_hash(Genotype(g.normal, (2, 3, 4), g.reduce, g.reduce_concat)) != genotype_hash(g)
    fixed = Genotype(g.normal, g.normal_concat, fixed_reduction=True)
    assert genotype_hash(fixed) not in others | {genotype_hash(g)}
    nb = nb201.sample(random.Random(0))
    op = nb.edges[0][0]
    changed = nb201.Genotype(((next(p for p in nb201.PRIMITIVES if p != op), 0),) + nb.edges[1:])
    assert genotype_hash(nb) == genotype_hash(nb201.Genotype(nb.edges))
    assert genotype_hash(changed) != genotype_hash(nb)
    assert genotype_hash(nb) not in others | {genotype_hash(g), genotype_hash(fixed)}


def test_export_csv(tmp_path):
    g = Genotype.named("DARTS_V2")
    with Archive(tmp_path / "a.sqlite") as a:
        empty = a.export_csv(tmp_path / "empty.csv")
        assert empty.read_text().splitlines() == [",".join(COLUMN_NAMES)]
        a.add(full_row(g))
        a.add(full_row(g, status="failed", error="diverged, loss nan"))
        a.add(full_row(g, setting="c8r2s1e30"))
        out = a.export_csv(tmp_path / "out" / "all.csv")
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 3 and list(rows[0]) == list(COLUMN_NAMES)
        assert rows[1]["error"] == "diverged, loss nan" and rows[1]["status"] == "failed"
        assert json.loads(rows[0]["val_accs"]) == [0.1, 0.2500000000000001, 1 / 3]
        assert json.loads(rows[0]["setting_values"])["lr"] == 0.025
        with open(a.export_csv(tmp_path / "one.csv", setting="c8r2s1e30"), newline="") as f:
            assert [r["setting"] for r in csv.DictReader(f)] == ["c8r2s1e30"]


def test_driver_state_round_trip_and_replacement(tmp_path):
    rng = random.Random(5)
    state = {"cycle": 7, "population": [[genotype_hash(Genotype.named("DARTS_V2")), 0.1 + 0.2, [1e-300, -0.0, 2.5e17]]],
             "rng": [3, list(rng.getstate()[1]), None], "nested": {"a": [[1, [2, [3.141592653589793]]]]}}
    with Archive(tmp_path / "a.sqlite") as a:
        assert a.load_state("evolution") is None
        a.save_state("evolution", state)
        assert a.load_state("evolution") == state
        restored = a.load_state("evolution")["rng"]
        rng2 = random.Random()
        rng2.setstate((restored[0], tuple(restored[1]), restored[2]))
        assert rng2.random() == rng.random()
        a.save_state("evolution", {"cycle": 8})
        a.save_state("other", {"x": 1})
        assert a.load_state("evolution") == {"cycle": 8} and a.load_state("other") == {"x": 1}
        with pytest.raises(ValueError):
            a.save_state("evolution", [1, 2])  # type: ignore[arg-type]
    with Archive(tmp_path / "a.sqlite") as a:
        assert a.load_state("evolution") == {"cycle": 8}


def test_reopen_sees_the_same_rows(tmp_path):
    path = tmp_path / "a.sqlite"
    with Archive(path) as a:
        for s in range(3):
            a.add(full_row(darts.sample(random.Random(s)), seed=s))
        before = a.rows()
    with Archive(str(path)) as b:
        assert b.rows() == before and len(b) == 3
        b.add(full_row(darts.sample(random.Random(9))))
    with sqlite3.connect(path) as c:
        assert dict(c.execute("SELECT key, value FROM meta").fetchall()) == {"format": FORMAT, "version": str(VERSION)}
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert len(Archive(path).rows()) == 4


def test_empty_file_becomes_an_archive(tmp_path):
    path = tmp_path / "a.sqlite"
    path.write_bytes(b"")
    with Archive(path) as a:
        assert len(a) == 0


def _other_sqlite(path):
    c = sqlite3.connect(path)
    with c:
        c.execute("CREATE TABLE results (x INTEGER)")
        c.execute("INSERT INTO results VALUES (42)")
    c.close()


def _foreign_meta(path, format_, version):
    c = sqlite3.connect(path)
    with c:
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        c.executemany("INSERT INTO meta VALUES (?, ?)", [("format", format_), ("version", version)])
    c.close()


def _version_2(path):
    with Archive(path) as a:
        a.add(full_row(Genotype.named("DARTS_V2")))
    c = sqlite3.connect(path)
    with c:
        c.execute("UPDATE meta SET value = '2' WHERE key = 'version'")
    c.close()


def _truncated(path):
    real = path.parent / "real.sqlite"
    with Archive(real) as a:
        a.add(full_row(Genotype.named("DARTS_V2")))
    path.write_bytes(real.read_bytes()[:100])


@pytest.mark.parametrize("make,says", [
    (lambda p: p.write_text("genotype,val_acc\nfoo,0.5\n"), "is not an SQLite database"),
    (lambda p: p.write_bytes(b"SQLite"), "is not an SQLite database"),
    (_truncated, "is not an SQLite database"),
    (_other_sqlite, "not a darts_lite evaluation archive (no meta table)"),
    (lambda p: _foreign_meta(p, "someone-else", "1"), "format 'someone-else'"),
    (_version_2, "was written by archive version 2; this darts_lite reads version 1"),
])
def test_refuses_other_files_and_leaves_them_alone(tmp_path, make, says):
    path = tmp_path / "a.sqlite"
    make(path)
    before = path.read_bytes()
    with pytest.raises(ArchiveError) as info:
        Archive(path)
    message = str(info.value)
    assert str(path) in message and says in message and "nothing was changed" in message
    assert isinstance(info.value, ConfigError)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("a.sqlite")) == ["a.sqlite"]


def test_bad_rows_are_refused(tmp_path):
    g = Genotype.named("DARTS_V2")
    with Archive(tmp_path / "a.sqlite") as a:
        with pytest.raises(ValueError, match="status must be one of done, failed, got 'running'"):
            a.add(full_row(g, status="running"))
        with pytest.raises(ValueError, match="missing genotype_hash"):
            a.add({k: v for k, v in full_row(g).items() if k != "genotype_hash"})
        with pytest.raises(ValueError, match="unknown keys"):
            a.add(full_row(g, id=5))
        with pytest.raises(ValueError, match="epochs must be an integer"):
            a.add(full_row(g, epochs=3.0))
        assert len(a) == 0
        # optional keys left out are stored as NULL
        rid = a.add({k: full_row(g)[k] for k in ("genotype", "genotype_hash", "setting", "seed", "epochs", "status")})
        got = a.rows()[0]
        assert got["id"] == rid and got["test_acc"] is None and got["setting_values"] is None and got["worker"] is None
