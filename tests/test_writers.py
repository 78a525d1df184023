"""Result files: formats round-trip, resume, crash safety, atomic replacement and the output lock."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlbcli.io.writers as writers
from mlbcli.errors import MlbError, OutputLockedError, UsageError
from mlbcli.io import parts
from mlbcli.io.writers import SCHEMA_VERSION, ResultWriter, infer_format, read_results, schema_metadata

REPO = Path(__file__).resolve().parents[1]

SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("question_id", pa.int64()),
        ("response", pa.string()),
        ("kept_tokens", pa.list_(pa.int32())),
        ("options", pa.list_(pa.string())),
        ("flops_ratio", pa.float64()),
        ("correct", pa.bool_()),
        ("error", pa.string()),
    ]
)
KEY = ("video", "question_id")

ROWS = [
    {
        "video": "a.mp4",
        "question_id": 0,
        "response": "B",
        "kept_tokens": [1, 2, 3],
        "options": ["dog", 'cat, "quoted"', "é ☃"],
        "flops_ratio": 0.25,
        "correct": True,
    },
    {
        "video": "b.mp4",
        "question_id": 1,
        "response": "",  # empty string must stay distinct from null
        "kept_tokens": [],
        "options": None,
        "flops_ratio": None,
        "correct": False,
        "error": None,
    },
    {
        "video": "c,d\n.mp4",
        "question_id": 2,
        "response": None,
        "kept_tokens": None,
        "options": ["x", None],
        "flops_ratio": float("inf"),
        "correct": None,
        "error": "VideoDecodeError: broken",
    },
]


def full(row: dict) -> dict:
    return {name: row.get(name) for name in SCHEMA.names}


def writer(out, **kw) -> ResultWriter:
    kw.setdefault("schema", SCHEMA)
    kw.setdefault("kind", "answers")
    kw.setdefault("skip_key", KEY)
    return ResultWriter(out, **kw)


def row(i: int, error: str | None = None, response: str = "A") -> dict:
    return {
        "video": f"v{i:03d}.mp4",
        "question_id": i,
        "response": response,
        "kept_tokens": [i],
        "error": error,
    }


def keys_of(path) -> list[tuple]:
    return [(r["video"], r["question_id"]) for r in read_results(path).select(list(KEY)).to_pylist()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_round_trip(tmp_path, suffix):
    out = tmp_path / f"results{suffix}"
    with writer(out, metadata={"method": "mlb", "config": {"keep": 0.25}}) as w:
        for r in ROWS:
            w.write(r)
        assert w.written == 3
    table = read_results(out)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.to_pylist() == [full(r) for r in ROWS]
    meta = schema_metadata(out)
    assert meta["mlb.schema_version"] == SCHEMA_VERSION
    assert meta["mlb.kind"] == "answers"
    assert meta["method"] == "mlb"
    assert json.loads(meta["config"]) == {"keep": 0.25}
    # Nothing left behind but, for text formats, the sidecar (issue 22: the lock file stayed too).
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    expected = [out.name] + ([out.name + ".meta.json"] if suffix != ".parquet" else [])
    assert leftovers == sorted(expected)


def test_parquet_is_zstd(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(ROWS[0])
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"


def test_csv_lists_are_json_text(tmp_path):
    out = tmp_path / "r.csv"
    with writer(out) as w:
        w.write(ROWS[0])
    text = out.read_text()
    assert '"[1, 2, 3]"' in text
    # Without the sidecar, types are inferred and the lists stay JSON text.
    (tmp_path / "r.csv.meta.json").unlink()
    assert read_results(out).column("kept_tokens").to_pylist() == ["[1, 2, 3]"]


def test_empty_run_writes_a_valid_empty_file(tmp_path):
    for suffix in (".parquet", ".jsonl", ".csv"):
        out = tmp_path / f"empty{suffix}"
        with writer(out):
            pass
        table = read_results(out)
        assert table.num_rows == 0
        assert table.schema.remove_metadata() == SCHEMA


def test_format_inference():
    assert infer_format("x.parquet") == "parquet"
    assert infer_format("x") == "parquet"
    assert infer_format("x.JSONL") == "jsonl"
    assert infer_format("x.csv") == "csv"
    assert infer_format("x.whatever", "csv") == "csv"
    assert infer_format("-") == "jsonl"
    with pytest.raises(UsageError):
        infer_format("x.json")
    with pytest.raises(UsageError):
        infer_format("x.parquet", "xlsx")


def test_explicit_format_overrides_suffix(tmp_path):
    out = tmp_path / "results.out"
    with writer(out, fmt="jsonl") as w:
        w.write(ROWS[0])
    assert json.loads(out.read_text().splitlines()[0])["video"] == "a.mp4"
    assert read_results(out, "jsonl").num_rows == 1


# ----------------------------------------------------------------------------------------- validation


def test_unknown_column_is_an_error(tmp_path):
    with writer(tmp_path / "r.parquet") as w:
        with pytest.raises(ValueError, match="respnse.*did you mean 'response'"):
            w.write({"video": "a", "question_id": 1, "respnse": "B"})
        with pytest.raises(ValueError, match="does not fit the schema"):
            w.write({"video": "a", "question_id": "not an int"})
        assert w.written == 0


def test_bad_configuration(tmp_path):
    with pytest.raises(ValueError, match="not in the schema"):
        writer(tmp_path / "r.parquet", skip_key=("nope",))
    with pytest.raises(ValueError, match="scalar"):
        writer(tmp_path / "r.parquet", skip_key=("kept_tokens",))
    with pytest.raises(ValueError, match="reserved"):
        writer(tmp_path / "r.parquet", metadata={"mlb.kind": "x"})
    with pytest.raises(UsageError, match="directory"):
        writer(tmp_path)


# -------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_resume_skips_done_keys_and_retries_errors(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    with writer(out) as w:
        assert w.done_keys() == set()
        w.write(row(0))
        w.write(row(1, error="DecodeTimeout: too slow"))
        w.write(row(2))
    with writer(out) as w:
        assert w.done_keys() == {("v000.mp4", 0), ("v002.mp4", 2)}
        todo = [i for i in range(4) if (f"v{i:03d}.mp4", i) not in w.done_keys()]
        assert todo == [1, 3]
        for i in todo:
            w.write(row(i, response="retried"))
        assert w.written == 2
        assert ("v001.mp4", 1) in w.done_keys()
    table = read_results(out).to_pylist()
    assert sorted((r["question_id"], r["response"], r["error"]) for r in table) == [
        (0, "A", None),
        (1, "retried", None),
        (2, "A", None),
        (3, "retried", None),
    ]


def test_error_row_written_last_wins(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(0))
        w.write(row(0, error="boom"))
        assert w.done_keys() == set()
    assert read_results(out).column("error").to_pylist() == ["boom"]


def test_unique_key_can_differ_from_skip_key(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out, skip_key=("video",), unique_key=KEY) as w:
        w.write(row(0))
        w.write({**row(1), "video": "v000.mp4"})
        assert w.done_keys() == {("v000.mp4",)}
    assert read_results(out).num_rows == 2


def test_resume_false_refuses_existing_output(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(0))
    with pytest.raises(UsageError, match="--overwrite or|--resume"):
        writer(out, resume=False)
    # The lock was released by the failed constructor: the same output can be opened again.
    with writer(out) as w:
        assert w.done_keys() == {("v000.mp4", 0)}


def test_overwrite_replaces_only_at_close(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(0))
        w.write(row(1))
    before = digest(out)
    with writer(out, overwrite=True, resume=False, flush_every=1) as w:
        assert w.done_keys() == set()
        w.write(row(5))
        # Parts are committed, but the old final file is untouched until close().
        assert digest(out) == before
    assert keys_of(out) == [("v005.mp4", 5)]


def test_overwrite_run_failing_before_any_row_keeps_old_file(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(0))
    before = digest(out)
    with pytest.raises(RuntimeError), writer(out, overwrite=True):
        raise RuntimeError("model failed to load")
    assert digest(out) == before


def test_rows_written_before_an_exception_are_kept(tmp_path):
    out = tmp_path / "r.parquet"
    with pytest.raises(KeyboardInterrupt), writer(out) as w:
        w.write(row(0))
        w.write(row(1))
        raise KeyboardInterrupt
    assert keys_of(out) == [("v000.mp4", 0), ("v001.mp4", 1)]


def test_time_based_flush(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out, flush_every=1000, flush_seconds=0) as w:
        w.write(row(0))
        w.write(row(1))
        assert len(list((tmp_path / "r.parquet.parts").glob("part-*.parquet"))) == 2
    assert not (tmp_path / "r.parquet.parts").exists()


# --------------------------------------------------------------------------------- crash safety


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import pyarrow as pa
    sys.path.insert(0, {repo!r})
    from mlbcli.io.writers import ResultWriter
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex({schema_hex!r})))
    w = ResultWriter({out!r}, schema=schema, kind="answers", skip_key=("video", "question_id"),
                     flush_every={flush_every}, overwrite={overwrite})
    done = w.done_keys()
    n = 0
    for i in range({count}):
        if (f"v{{i:03d}}.mp4", i) in done:
            continue
        if n == {die_at}:
            os._exit(1)  # no close(), no atexit: as abrupt as a crash
        w.write({{"video": f"v{{i:03d}}.mp4", "question_id": i, "response": "killed-run"}})
        n += 1
        {slow}
    w.close()
    """
)


def run_writer_process(
    out: Path, *, count=40, die_at=-1, flush_every=8, overwrite=False, slow=False, wait=True
):
    script = KILL_SCRIPT.format(
        repo=str(REPO),
        schema_hex=SCHEMA.serialize().to_pybytes().hex(),
        out=str(out),
        count=count,
        die_at=die_at,
        flush_every=flush_every,
        overwrite=overwrite,
        slow="import time; time.sleep(0.002)" if slow else "pass",
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    if wait:
        proc.wait(timeout=60)
    return proc


def test_killed_run_leaves_old_file_and_complete_parts_then_resume_finishes(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:  # an earlier, completed run did the first 5 keys
        for i in range(5):
            w.write(row(i))
    before = digest(out)

    proc = run_writer_process(out, die_at=30)  # 30 rows written, flush_every=8: 3 parts, 6 rows lost
    assert proc.returncode == 1, proc.stderr.read()
    assert digest(out) == before
    parts = sorted((tmp_path / "r.parquet.parts").glob("part-*.parquet"))
    assert len(parts) == 3
    assert [pq.read_table(p).num_rows for p in parts] == [8, 8, 8]
    assert not list((tmp_path / "r.parquet.parts").glob(".*"))  # no half-written temporaries

    written = []
    with writer(out) as w:
        assert len(w.done_keys()) == 5 + 24
        for i in range(40):
            if (f"v{i:03d}.mp4", i) not in w.done_keys():
                w.write(row(i, response="resumed"))
                written.append(i)
    assert written == list(range(29, 40))
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == 40
    responses = {r["question_id"]: r["response"] for r in read_results(out).to_pylist()}
    assert responses[0] == "A" and responses[5] == "killed-run" and responses[39] == "resumed"
    assert not (tmp_path / "r.parquet.parts").exists()


def test_sigkill_at_a_random_moment_never_corrupts(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(0))
    before = digest(out)
    proc = run_writer_process(out, count=100_000, flush_every=1, slow=True, wait=False)
    parts_dir = tmp_path / "r.parquet.parts"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(parts_dir.glob("part-*"))) < 5:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert digest(out) == before
    parts = list(parts_dir.glob("part-*.parquet"))
    assert len(parts) >= 5
    for part in parts:  # every committed part is complete and readable
        assert pq.read_table(part).num_rows == 1
    with writer(out) as w:
        assert len(w.done_keys()) == 1 + len(parts)
        w.write(row(100_001))
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == 2 + len(parts)
    assert not parts_dir.exists()


def test_killed_overwrite_run_does_not_resurrect_old_rows(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(99))
    proc = run_writer_process(out, count=10, die_at=5, flush_every=2, overwrite=True)
    assert proc.returncode == 1
    assert keys_of(out) == [("v099.mp4", 99)]  # old file still intact after the kill
    with writer(out) as w:
        assert ("v099.mp4", 99) not in w.done_keys()
        assert len(w.done_keys()) == 4
    assert sorted(k[1] for k in keys_of(out)) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_during_merge_keeps_old_file_intact(tmp_path, monkeypatch, exc):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(0))
    before = digest(out)

    real_write_file = writers.write_table_file

    def half_write_then_fail(table, path, fmt):
        real_write_file(table, path, fmt)
        with open(path, "r+b") as fh:  # leave a truncated, unreadable temporary behind the failure
            fh.truncate(10)
        raise exc

    monkeypatch.setattr(writers, "write_table_file", half_write_then_fail)
    # An OSError (disk full) becomes one clear MlbError line; a Ctrl-C stays a KeyboardInterrupt.
    with pytest.raises(MlbError if isinstance(exc, OSError) else type(exc)), writer(out) as w:
        w.write(row(1))
    assert digest(out) == before
    assert keys_of(out) == [("v000.mp4", 0)]
    assert not list(tmp_path.glob("r.parquet.tmp-*"))
    assert len(list((tmp_path / "r.parquet.parts").glob("part-*.parquet"))) == 1

    monkeypatch.setattr(writers, "write_table_file", real_write_file)
    with writer(out) as w:  # the next run recovers the committed row
        assert w.done_keys() == {("v000.mp4", 0), ("v001.mp4", 1)}
    assert keys_of(out) == [("v000.mp4", 0), ("v001.mp4", 1)]


# ---------------------------------------------------------------------------------- schema evolution


def test_older_file_with_fewer_columns_is_merged_with_nulls(tmp_path):
    out = tmp_path / "r.parquet"
    old_schema = pa.schema([("video", pa.string()), ("question_id", pa.int32()), ("legacy", pa.string())])
    meta = {b"mlb.schema_version": b"0", b"mlb.kind": b"answers"}
    pq.write_table(
        pa.table({"video": ["old.mp4"], "question_id": pa.array([7], pa.int32()), "legacy": ["x"]}).cast(
            old_schema.with_metadata(meta)
        ),
        out,
    )
    with writer(out) as w:
        assert w.done_keys() == {("old.mp4", 7)}
        w.write(row(1))
    table = read_results(out)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.to_pylist()[0] == full({"video": "old.mp4", "question_id": 7})
    assert schema_metadata(out)["mlb.schema_version"] == SCHEMA_VERSION


def _write_with_meta(path: Path, table: pa.Table, meta: dict[str, str]) -> None:
    pq.write_table(table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()}), path)


@pytest.mark.parametrize(
    ("meta", "table", "match"),
    [
        ({"mlb.schema_version": "99", "mlb.kind": "answers"}, None, "newer"),
        ({"mlb.kind": "answers"}, None, "not written by mlb"),
        ({"mlb.schema_version": SCHEMA_VERSION, "mlb.kind": "tokens"}, None, "'tokens' results"),
        (
            {"mlb.schema_version": "0", "mlb.kind": "answers"},
            pa.table({"video": ["a"], "question_id": [1], "kept_tokens": ["not a list"]}),
            "cannot merge",
        ),
    ],
)
def test_unmergeable_existing_file_is_a_usage_error(tmp_path, meta, table, match):
    out = tmp_path / "r.parquet"
    _write_with_meta(
        out, table if table is not None else pa.table({"video": ["a"], "question_id": [1]}), meta
    )
    before = digest(out)
    # Refused when opening, before any work is done, and the lock is released again.
    with pytest.raises(UsageError, match=match):
        writer(out)
    assert digest(out) == before
    # --overwrite is the way out.
    with writer(out, overwrite=True) as w:
        w.write(row(2))
    assert keys_of(out) == [("v002.mp4", 2)]


# -------------------------------------------------------------------------------------------- locking


def test_second_writer_on_same_output_is_refused(tmp_path):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(0))
        with pytest.raises(
            OutputLockedError, match=f"another mlb run is writing .*r.parquet \\(pid {os.getpid()}\\)"
        ):
            writer(out)
    with writer(out) as w:  # released at close
        w.write(row(1))
    assert len(keys_of(out)) == 2


def test_lock_file_is_removed_when_the_run_ends(tmp_path):
    # Issue 22: `.r.parquet.lock` stayed beside the output after every finished run.
    out = tmp_path / "r.parquet"
    lock = tmp_path / ".r.parquet.lock"
    with writer(out) as w:
        w.write(row(0))
        assert lock.exists()
    assert not lock.exists()
    with pytest.raises(RuntimeError, match="boom"), writer(out) as w:  # a clean error exit
        w.write(row(1))
        raise RuntimeError("boom")
    assert not lock.exists() and len(keys_of(out)) == 2
    lock.write_text("99999\n")  # a killed run's lock file: reused, then removed
    with writer(out) as w:
        w.write(row(2))
    assert not lock.exists() and len(keys_of(out)) == 3
    with pytest.raises(UsageError):  # refused at open (a run without --resume): the lock goes too
        writer(out, resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.parquet"]


def test_a_refused_run_never_removes_the_lock_of_the_live_holder(tmp_path):
    out = tmp_path / "r.parquet"
    lock = tmp_path / ".r.parquet.lock"
    with writer(out) as w:
        w.write(row(0))
        for _ in range(2):
            with pytest.raises(OutputLockedError):
                writer(out)
            assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


def test_a_lock_taken_on_a_file_just_removed_is_taken_again(tmp_path, monkeypatch):
    # The race that removing the lock file opens: B opens the lock file, A releases (removing it), B
    # locks the removed file. B must notice and lock the file now under that name, or a third run C
    # would create a new file and run next to B.
    out = tmp_path / "r.parquet"
    lock = tmp_path / ".r.parquet.lock"
    first = writer(out)
    stale = os.open(lock, os.O_RDWR)  # B opened the file while A held it
    first.close()  # A releases: the file B opened is gone
    assert not lock.exists()
    real_open = parts.OutputLock._open
    calls = []

    def open_stale_first(self, path):
        calls.append(path)
        return stale if len(calls) == 1 else real_open(self, path)

    monkeypatch.setattr(parts.OutputLock, "_open", open_stale_first)
    with writer(out) as w:  # B
        assert len(calls) == 2 and lock.read_text() == f"{os.getpid()}\n"
        monkeypatch.setattr(parts.OutputLock, "_open", real_open)
        with pytest.raises(OutputLockedError):  # C is refused: B holds the file that is there
            writer(out)
        w.write(row(0))
    assert not lock.exists() and len(keys_of(out)) == 1


def test_lock_is_held_across_processes(tmp_path):
    out = tmp_path / "r.parquet"
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "import pyarrow as pa\n"
        "from mlbcli.io.writers import ResultWriter\n"
        "from mlbcli.errors import OutputLockedError\n"
        "schema = pa.schema([('video', pa.string())])\n"
        "try:\n"
        f"    ResultWriter({str(out)!r}, schema=schema, kind='answers', skip_key=['video'])\n"
        "except OutputLockedError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    with writer(out):
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stderr
    assert f"(pid {os.getpid()})" in res.stdout


# --------------------------------------------------------------------------------------------- stdout


def test_stdout_mode_emits_one_json_object_per_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stream = io.StringIO()
    with writer("-", stdout=stream) as w:
        assert w.done_keys() == set()
        for r in ROWS:
            w.write(r)
        # Each row is flushed as soon as it is written.
        assert len(stream.getvalue().splitlines()) == 3
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["video"] for line in lines] == ["a.mp4", "b.mp4", "c,d\n.mp4"]
    assert set(json.loads(lines[1])) == set(SCHEMA.names)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError):
        writer("-", fmt="csv")


# --------------------------------------------------------------------------- output safety (issue 13)


def test_format_that_contradicts_the_suffix_is_a_usage_error(tmp_path):
    # F4: a Parquet file named .csv (or JSON lines named .parquet) confuses every later run on it.
    for name, fmt in (("x.csv", "parquet"), ("x.parquet", "jsonl"), ("x.jsonl", "csv")):
        with pytest.raises(UsageError, match=f"--format {fmt} contradicts"):
            writer(tmp_path / name, fmt=fmt)
    assert infer_format("x.pq", "parquet") == "parquet" and infer_format("x.CSV", "csv") == "csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before creating anything


def test_symlinked_output_writes_through_and_locks_the_target(tmp_path):
    # R13: the link stays a link, its target gets the rows, and a run on the target excludes one on the link.
    real = tmp_path / "real" / "s.parquet"
    real.parent.mkdir()
    with writer(real) as w:
        w.write(row(0))
    link = tmp_path / "latest.parquet"
    link.symlink_to(Path("real") / "s.parquet")  # relative, as `ln -s` usually makes them
    with writer(link) as w:
        assert w.done_keys() == {("v000.mp4", 0)}
        assert w.out == str(link)
        w.write(row(1))
    assert link.is_symlink() and keys_of(real) == [("v000.mp4", 0), ("v001.mp4", 1)]
    assert not (tmp_path / ".latest.parquet.lock").exists()
    with writer(real), pytest.raises(OutputLockedError):
        writer(link)
    loop = tmp_path / "loop.parquet"
    loop.symlink_to("loop.parquet")
    with pytest.raises(UsageError, match="symlink loop"):
        writer(loop)


def test_output_under_a_regular_file_is_a_usage_error(tmp_path):
    # U3: was a FileExistsError traceback (exit 1).
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="afile is a file, not a folder"):
        writer(tmp_path / "afile" / "sub" / "r.parquet")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_in_proc_is_a_usage_error():
    with pytest.raises(UsageError, match=r"cannot write the output /proc/x\.parquet"):
        writer("/proc/x.parquet")


READ_ONLY_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import pyarrow as pa
    from mlbcli.errors import UsageError
    from mlbcli.io.writers import ResultWriter
    try:
        ResultWriter({out!r}, schema=pa.schema([("video", pa.string())]), kind="answers", skip_key=["video"])
    except UsageError as exc:
        print(exc)
        sys.exit(3)
    """
)


@pytest.mark.parametrize("old_lock", [False, True])
def test_read_only_output_folder_is_a_usage_error_before_any_work(tmp_path, old_lock):
    # U3/R8: PermissionError traceback on the lock before; and with the lock file left by an earlier run
    # (it opens fine), the failure came only at the first part write, after the work.
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "x.parquet"
    if old_lock:
        with writer(out) as w:
            w.write(row(0))
        (folder / ".x.parquet.lock").write_text("12345\n")  # left by a killed run
    folder.chmod(0o555)
    command = [sys.executable, "-c", READ_ONLY_SCRIPT.format(repo=str(REPO), out=str(out))]
    if os.geteuid() == 0:  # root ignores permission bits: drop the capability that lets it
        setpriv = "/usr/bin/setpriv"
        if not Path(setpriv).exists():
            pytest.skip("running as root without setpriv")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    try:
        res = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        folder.chmod(0o755)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "cannot write the output" in res.stdout and "ermission denied" in res.stdout
    assert sorted(p.name for p in folder.iterdir()) == ([".x.parquet.lock", "x.parquet"] if old_lock else [])


def _no_space_on(monkeypatch, fail_from_call: int) -> None:
    """From the `fail_from_call`-th Parquet write on (1-based), fail like a full disk."""
    real = writers.pq.write_table
    calls = [0]

    def write_table(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= fail_from_call:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(writers.pq, "write_table", write_table)


def test_disk_full_while_committing_a_part(tmp_path, monkeypatch):
    out = tmp_path / "r.parquet"
    with writer(out) as w:
        w.write(row(99))
    before = digest(out)
    with monkeypatch.context() as m:
        _no_space_on(m, fail_from_call=2)
        w = writer(out, flush_every=2)
        with pytest.raises(MlbError) as caught, w:
            for i in range(5):
                w.write(row(i))
        # One line naming the file and what is safe; close() did not retry (no second error).
        message = str(caught.value)
        assert "\n" not in message and "No space left on device" in message
        assert "r.parquet.parts" in message and "2 row(s) of this run are committed" in message
        assert "r.parquet is unchanged" in message
        assert w.written == 4 and w.committed == 2
    assert digest(out) == before
    assert len(list((tmp_path / "r.parquet.parts").glob("part-*.parquet"))) == 1
    assert not list((tmp_path / "r.parquet.parts").glob(".*"))  # the half-written part is gone
    with writer(out) as w:  # space freed: the next run resumes from the committed rows
        assert w.done_keys() == {("v099.mp4", 99), ("v000.mp4", 0), ("v001.mp4", 1)}
    assert len(keys_of(out)) == 3


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_disk_full_during_the_final_merge(tmp_path, monkeypatch, suffix):
    out = tmp_path / f"r{suffix}"
    with writer(out) as w:
        w.write(row(99))
    before = digest(out)

    def no_space(table, path, fmt):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(writers, "write_table_file", no_space)
        failing = writer(out)
        expected = rf"cannot write .*r{suffix} \(No space left on device\); 3 row"
        with pytest.raises(MlbError, match=expected), failing as w:
            for i in range(3):
                w.write(row(i))
        assert w.committed == 3  # all in parts: they count, and the next run merges them
    assert digest(out) == before
    assert not list(tmp_path.glob(f"r{suffix}.tmp-*"))
    with writer(out):
        pass
    assert len(keys_of(out)) == 4


def test_killed_overwrite_run_exposes_the_options_of_its_parts(tmp_path):
    # R4, writer side: what will be merged after an interrupted --overwrite is the overwrite run's
    # parts, not the superseded final file; that is what a configuration check must compare against.
    out = tmp_path / "r.parquet"
    with writer(out, metadata={"options": '{"frames": 4}'}) as w:
        w.write(row(99))
    with writer(out) as w:
        assert [meta["options"] for _, meta in w.existing_metadata()] == ['{"frames": 4}']
    script = KILL_SCRIPT.replace(
        "overwrite={overwrite})", 'overwrite={overwrite}, metadata={{"options": "8"}})'
    )
    source = script.format(
        repo=str(REPO),
        schema_hex=SCHEMA.serialize().to_pybytes().hex(),
        out=str(out),
        count=10,
        die_at=5,
        flush_every=2,
        overwrite=True,
        slow="pass",
    )
    assert subprocess.run([sys.executable, "-c", source], timeout=60).returncode == 1
    with writer(out) as w:
        sources = w.existing_metadata()
        assert {meta["options"] for _, meta in sources} == {"8"}
        assert all("unfinished parts" in what for what, _ in sources)
    with writer(out, overwrite=True) as w:
        assert w.existing_metadata() == []
