"""``mlb report``'s engine: the kept-token record, and the HTML page as a person (and a browser) sees it.

Result files are written here with pyarrow in the ``answer`` schema (plus ``correct_lmms_eval``), over tiny
synthetic clips made with PyAV, so the tests need no model. The browser test opens the page in Debian's
headless ``chromium`` and skips, saying why, where it is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbcli.io.kept_tokens import arrow_type
from mlbcli.report import decode_kept, decode_merged, encode_kept, render_report
from mlbcli.report.frames import Thumbs, decode_thumbs, render_strip

GRID = (4, 3, 3)  # token frames x grid_h x grid_w of the synthetic rows
XSS = "<script>alert(1)</script>"


# -- kept-token record -------------------------------------------------------------------------------------
@st.composite
def grids(draw: Any) -> tuple[int, int, int, np.ndarray]:
    t, h, w = draw(st.integers(1, 6)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    mask = np.array(draw(st.lists(st.booleans(), min_size=t * h * w, max_size=t * h * w)), dtype=bool)
    return t, h, w, mask


@settings(max_examples=150, deadline=None)
@given(grids())
def test_kept_round_trips(grid: tuple[int, int, int, np.ndarray]) -> None:
    t, h, w, mask = grid
    record = encode_kept(np.flatnonzero(mask), t, h, w)
    json.loads(json.dumps(record))  # JSON-able as is
    assert pa.array([record], type=arrow_type()).to_pylist() == [record]  # Arrow-able as is
    decoded = decode_kept(record)
    assert decoded.shape == (t, h, w) and decoded.dtype == bool
    np.testing.assert_array_equal(decoded.ravel(), mask)
    np.testing.assert_array_equal(decode_kept(json.dumps(record)), decoded)  # CSV's JSON text
    assert decode_merged(record) is None


@settings(max_examples=100, deadline=None)
@given(grids(), st.randoms(use_true_random=False))
def test_merged_into_round_trips(grid: tuple[int, int, int, np.ndarray], rnd: Any) -> None:
    t, h, w, mask = grid
    kept = np.flatnonzero(mask)
    pruned = np.flatnonzero(~mask)
    targets = [rnd.choice(list(kept) + [-1]) if kept.size else -1 for _ in pruned]
    record = encode_kept(kept, t, h, w, merged_into=targets)
    merged = decode_merged(record)
    assert merged is not None and merged.shape == (t, h, w)
    np.testing.assert_array_equal(merged.ravel()[pruned], np.asarray(targets, dtype=np.int64))
    assert (merged.ravel()[kept] == -1).all()


def test_kept_record_is_compact_and_in_c_order() -> None:
    record = encode_kept([0, 7 * 14 * 14 + 13], 32, 14, 14)  # first and a last-column token
    assert len(record["bitmap"]) == 1048  # 32 x 14 x 14 bits -> 784 bytes -> base64
    mask = decode_kept(record)
    assert mask[0, 0, 0] and mask[7, 0, 13] and mask.sum() == 2
    big = encode_kept(range(0, 300 * 16 * 16, 3), 300, 16, 16, merged_into=[-1] * (300 * 16 * 16 * 2 // 3))
    assert decode_merged(big) is not None  # uint32 entries past 65535 tokens


def test_kept_record_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_kept([9], 1, 3, 3)
    with pytest.raises(ValueError):
        encode_kept([0], 1, 2, 2, merged_into=[1, 0, 0])  # 1 is not a kept token
    with pytest.raises(ValueError):
        encode_kept([0], 1, 2, 2, merged_into=[0])  # one entry per pruned token
    with pytest.raises(ValueError):
        decode_kept({"frames": 2, "grid_h": 8, "grid_w": 8, "bitmap": "AA=="})


def test_strip_dims_pruned_patches() -> None:
    white = np.full((30, 40, 3), 250, dtype=np.uint8)
    kept = np.zeros((1, 2, 2), dtype=bool)
    kept[0, 0, 0] = True
    strip = render_strip(Thumbs([white], [0.0]), kept=kept, merged=None, frames=1, thumb_px=40, max_frames=8)
    assert strip.uri and strip.uri.startswith("data:image/jpeg;base64,")
    import base64
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(strip.uri.split(",", 1)[1]))))
    assert img[5, 5].mean() > 200 and img[25, 35].mean() < 90  # kept corner bright, pruned one dim


def test_strip_tints_merged_patches() -> None:
    white = np.full((20, 20, 3), 250, dtype=np.uint8)
    kept = np.array([[[True, False]]])
    merged = np.array([[[False, True]]])
    strip = render_strip(
        Thumbs([white], [None]), kept=kept, merged=merged, frames=1, thumb_px=20, max_frames=4
    )
    plain = render_strip(Thumbs([white], [None]), kept=kept, merged=None, frames=1, thumb_px=20, max_frames=4)
    assert strip.uri and plain.uri and strip.uri != plain.uri and strip.labels == ["#1"]


def test_thumbs_are_the_recorded_frames_also_after_seeking(tmp_path: Path) -> None:
    from mlbcli.io.video import decode_frames, make_test_video

    clip = make_test_video(tmp_path / "long.mp4", num_frames=160, width=64, height=48, fps=8, pattern="flash")
    ref = decode_frames(clip, num_frames=5, backend="pyav")  # 20 s: 5 s gaps > SEEK_GAP_S, so it seeks
    thumbs = decode_thumbs(str(clip), times=ref.timestamps_s, indices=None, width=64)
    assert thumbs.error is None and thumbs.times == pytest.approx(ref.timestamps_s)
    for got, want in zip(thumbs.images, ref.array, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 2
    by_index = decode_thumbs(str(clip), times=None, indices=ref.indices, width=32)
    assert by_index.times == pytest.approx(ref.timestamps_s) and by_index.images[0].shape == (24, 32, 3)
    replanned = decode_thumbs(str(clip), times=None, indices=None, width=32, count=3)
    assert len(replanned.images) == 3 and replanned.note and replanned.error is None


# -- result files ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, list[float]]]:
    """Three tiny clips: video_id -> (path, the timestamps 4 sampled frames were read at)."""
    from mlbcli.io.video import decode_frames, make_test_video

    root = tmp_path_factory.mktemp("report-clips")
    out = {}
    for k, pattern in enumerate(("moving", "flash", "moving")):
        path = make_test_video(root / f"v{k}.mp4", num_frames=8, width=64, height=48, seed=k, pattern=pattern)
        out[f"v{k}"] = (str(path), decode_frames(path, num_frames=4, backend="pyav").timestamps_s)
    return out


def answer_schema() -> pa.Schema:
    from mlbcli.io import schema

    return pa.schema(list(schema.ANSWER))  # kept_tokens, both graders, attention before/after: all in it


def make_row(
    video_id: str, path: str, times: list[float], method: str, k: int, **over: Any
) -> dict[str, Any]:
    rng = np.random.default_rng(zlib.crc32(f"{video_id}|{method}|{k}".encode()))
    t, h, w = GRID
    keep = 0.25 if method == "fastv" else 0.5
    kept = np.sort(rng.choice(t * h * w, size=int(t * h * w * keep), replace=False))
    truth = "ABCD"[k % 4]
    choice = truth if (k + len(method)) % 3 else "ABCD"[(k + 1) % 4]
    row = {
        "video_id": video_id,
        "video_path": path,
        "question_id": f"{video_id}-q{k}",
        "question": f"What happens in {video_id}? (question {k})",
        "options": ["A. a disc moves", "B. a square moves", "C. nothing", "D. the scene cuts"],
        "ground_truth": truth,
        "category": "motion" if k % 2 else "scene",
        "benchmark": "synthetic",
        "answer": f"{choice}. because",
        "choice": choice,
        "correct": choice == truth,
        "correct_lmms_eval": choice == truth,
        "model": "tiny-llava-onevision",
        "method": method,
        "keep_requested": keep,
        "keep_realized": kept.size / (t * h * w),
        "flops_ratio": keep * 0.9,
        "frames": len(times),
        "frame_timestamps_s": times,
        "kept_tokens": encode_kept(kept, t, h, w),
        "attention_per_frame": [0.4, 0.1, 0.1, 0.4],
        "attention_per_frame_debiased": [0.25, 0.25, 0.3, 0.2],
        "decode_s": 0.01,
        "encode_s": 0.02,
        "prefill_s": 0.03,
        "generate_s": 0.04,
        "options_json": json.dumps({"method": method, "variant": "paper", "keep": keep}),
    }
    row.update(over)
    return row


def write_results(path: Path, rows: list[dict[str, Any]], method: str) -> str:
    meta = {"mlb.schema_version": "1", "mlb.kind": "answer", "options": json.dumps({"method": method})}
    table = pa.Table.from_pylist(rows, schema=answer_schema().with_metadata(meta))
    pq.write_table(table, path)
    return str(path)


@pytest.fixture()
def two_runs(tmp_path: Path, clips: dict[str, tuple[str, list[float]]]) -> list[str]:
    out = []
    for method in ("fastv", "mlb"):
        rows = [make_row(v, p, ts, method, k) for k, (v, (p, ts)) in enumerate(clips.items())]
        rows.append(make_row("gone", str(tmp_path / "gone.mp4"), [0.0, 0.5], method, 7))
        rows[1]["question"] = 'Is <b>this</b> "quoted" & escaped?'
        if method == "mlb":
            rows[0]["answer"] = XSS
            rows.append(make_row("broken", "", [], method, 9, error="CUDA out of memory <oops>"))
        out.append(write_results(tmp_path / f"{method}.parquet", rows, method))
    return out


def test_page_is_self_contained_and_side_by_side(tmp_path: Path, two_runs: list[str]) -> None:
    summary = render_report(two_runs, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert summary.bytes == len(html.encode()) and summary.rows == 9 and summary.videos_shown == 5
    for needle in ("http://", "https://", 'src="/', "src='/", "<link", "@import", "url("):
        assert needle not in html, needle
    assert re.findall(r'<img src="([^"]{0,30})', html) and all(
        src.startswith("data:image/") for src in re.findall(r'<img src="([^"]{0,30})', html)
    )
    assert "Content-Security-Policy" in html and "<script" not in html.lower()
    # Same (video, question) from both files in one comparison table, fastv's line above mlb's.
    table = re.search(r'<table class="cmp">(.*?)</table>', html.split("v0-q0", 1)[1], re.S)
    assert table and table.group(1).count("<tr>") == 2
    assert table.group(1).index("fastv") < table.group(1).index("mlb")
    assert "tiny-llava-onevision" in html and "paper" in html and "Wilson" in html
    assert "category: motion" in html and "lmms-eval grader" in html and "<svg" in html


def test_data_is_escaped(tmp_path: Path, two_runs: list[str]) -> None:
    render_report(two_runs, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (
        "<b>this</b>" not in html and "Is &lt;b&gt;this&lt;/b&gt; &quot;quoted&quot; &amp; escaped?" in html
    )
    assert "CUDA out of memory &lt;oops&gt;" in html


def test_missing_and_undecodable_videos_are_placeholders(tmp_path: Path, two_runs: list[str]) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    rows = [make_row("junk", str(junk), [0.0, 0.5], "mlb", 0)]
    extra = write_results(tmp_path / "junk.parquet", rows, "mlb")
    render_report([*two_runs, extra], tmp_path / "r.html", videos=10)
    html = (tmp_path / "r.html").read_text()
    assert html.count('<div class="placeholder">video not found</div>') == 2  # "gone" in both files
    assert re.search(r'<div class="placeholder">undecodable: [^<]+</div>', html)
    assert '<div class="placeholder">item failed: CUDA out of memory &lt;oops&gt;</div>' in html


def test_focus_wrong_puts_wrong_answers_first(
    tmp_path: Path, clips: dict[str, tuple[str, list[float]]]
) -> None:
    rows = [make_row(v, p, ts, "mlb", 0) for v, (p, ts) in clips.items()]
    for row in rows:
        row["correct"] = row["video_id"] != "v2"
    path = write_results(tmp_path / "a.parquet", rows, "mlb")
    render_report([path], tmp_path / "r.html", focus="wrong", videos=1)
    html = (tmp_path / "r.html").read_text()
    assert '<h3 class="mono">v2</h3>' in html and html.count('<section class="video">') == 1


def test_unreadable_results_file_and_jsonl(tmp_path: Path, clips: dict[str, tuple[str, list[float]]]) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 nope")
    v, (p, ts) = next(iter(clips.items()))
    jsonl = tmp_path / "run.jsonl"
    jsonl.write_text(json.dumps(make_row(v, p, ts, "dycoke", 0)) + "\n")
    summary = render_report([str(bad), str(jsonl)], tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "unreadable:" in html and "dycoke" in html and summary.videos_shown == 1
    assert html.count("<img ") == 1


def test_csv_with_json_list_columns(tmp_path: Path, clips: dict[str, tuple[str, list[float]]]) -> None:
    import csv

    v, (p, ts) = next(iter(clips.items()))
    row = make_row(v, p, ts, "visionzip", 0)
    nested = ("options", "frame_timestamps_s", "kept_tokens", "attention_per_frame")
    flat = {
        k: json.dumps(row[k]) if k in nested else row[k]
        for k in (*nested, "video_id", "video_path", "answer")
    }
    with open(tmp_path / "run.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(flat))
        writer.writeheader()
        writer.writerow(flat)
    render_report([str(tmp_path / "run.csv")], tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert html.count("<img ") == 1 and 'class="attn"' in html and "B. a square moves" in html
    assert f"kept 18 of {GRID[0] * GRID[1] * GRID[2]} tokens" in html


@pytest.mark.slow
def test_ten_thousand_rows_render_fast_and_small(tmp_path: Path) -> None:
    from mlbcli.io.video import make_test_video

    # 40 distinct clips, so the gallery's 24 videos are 24 real decodes (no thumbnail cache hits).
    clips = [
        make_test_video(tmp_path / f"c{k}.mp4", num_frames=8, width=64, height=48, seed=k) for k in range(40)
    ]
    times = [0.0, 0.25, 0.5, 0.75]
    rows = [
        make_row(f"vid{k // 3}", str(clips[(k // 3) % 40]), times, "mlb", k, category=f"cat{k % 20}")
        for k in range(10_000)
    ]
    path = write_results(tmp_path / "big.parquet", rows, "mlb")
    summary = render_report([path], tmp_path / "r.html", focus="wrong")
    print(f"10k rows: {summary.bytes / 1e3:.0f} kB in {summary.seconds:.2f} s")
    assert summary.rows == 10_000 and summary.videos_shown == 24
    assert summary.seconds < 60 and summary.bytes < 3_000_000


# -- a real browser ----------------------------------------------------------------------------------------
CHECK = (
    "<script>addEventListener('load',()=>{const i=[...document.images];"
    "document.body.setAttribute('data-imgs',i.length);"
    "document.body.setAttribute('data-broken',i.filter(x=>!(x.complete&&x.naturalWidth>0)).length);});"
    "</script>"
)


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run"]
    cmd += ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_browser_shows_rows_and_every_image_decodes(tmp_path: Path, two_runs: list[str]) -> None:
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    page = tmp_path / "r.html"
    render_report(two_runs, page)
    html = page.read_text()
    # 1. The page as shipped: the DOM holds every run and video, and nothing was refused or failed.
    shown = _chromium("--dump-dom", page.as_uri())
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    assert dom.count('<section class="video">') == 5 and dom.count("<img ") == html.count("<img ")
    assert "fastv.parquet" in dom and "mlb.parquet" in dom and "&lt;script&gt;alert(1)" in dom
    noise = [ln for ln in shown.stderr.splitlines() if re.search(r"Refused|Uncaught|ERR_|Failed to load", ln)]
    assert not noise, noise
    # 2. The page's policy runs no script: an injected one does nothing.
    blocked = tmp_path / "blocked.html"
    blocked.write_text(html.replace("</body>", CHECK + "</body>"))
    assert 'data-imgs="' not in _chromium("--dump-dom", blocked.as_uri()).stdout
    # 3. Without the policy a checker script counts images that failed to decode: none.
    probe = tmp_path / "probe.html"
    probe.write_text(
        re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace(
            "</body>", CHECK + "</body>"
        )
    )
    dom = _chromium("--dump-dom", probe.as_uri()).stdout
    imgs = re.search(r'data-imgs="(\d+)"', dom)
    broken = re.search(r'data-broken="(\d+)"', dom)
    assert imgs and broken and int(imgs.group(1)) == html.count("<img ") > 0 and broken.group(1) == "0"
    # 4. A screenshot renders (looked at by a person when the page's design changes).
    shot = tmp_path / "shot.png"
    _chromium("--window-size=1280,1600", f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000


def test_render_report_validates_arguments(tmp_path: Path, two_runs: list[str]) -> None:
    with pytest.raises(ValueError):
        render_report(two_runs, tmp_path / "r.html", focus="everything")
    with pytest.raises(ValueError):
        render_report([], tmp_path / "r.html")
    start = time.perf_counter()
    assert render_report(two_runs, tmp_path / "r.html", videos=0).videos_shown == 0
    assert time.perf_counter() - start < 30


def test_mlb_report_on_two_real_runs_shows_what_each_method_kept(tiny_model_dir, clips_dir, tmp_path):
    """The issue's "done when": `mlb answer` with two methods, then `mlb report a b --out r.html`: per video,
    each method's frames with its own kept-token mask and its answer."""
    from typer.testing import CliRunner

    from mlbcli.cli.app import app

    runner = CliRunner()
    outs = []
    for method in ("uniform", "fastv"):
        out = tmp_path / f"{method}.parquet"
        args = [str(clips_dir / "a.mp4"), "--question", "What <b>moves</b>?", "--model", str(tiny_model_dir)]
        args += ["--method", method, "--keep", "0.25", "--out", str(out), "--workers", "0", "--frames", "4"]
        result = runner.invoke(app, ["answer", *args, "--max-new-tokens", "3", "-q"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outs.append(str(out))
    page = tmp_path / "r.html"
    result = runner.invoke(app, ["report", *outs, "--out", str(page)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "uniform" in html and "fastv" in html
    # each method's own kept_tokens record drew its mask: 4 frames x 4x4 tokens (tiny model), 25% kept
    assert html.count("kept 16 of 64 tokens (4x4x4)") == 2
    assert "What &lt;b&gt;moves&lt;/b&gt;?" in html and "<b>moves</b>" not in html  # data is escaped
    assert html.count("data:image/") == 2  # one strip of 4 re-decoded frames per method
    assert "https://" not in html and "http://" not in html
    missing = runner.invoke(app, ["report", str(tmp_path / "gone.parquet"), "--out", str(page)])
    assert missing.exit_code == 2 and "no such results file" in missing.output
