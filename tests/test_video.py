"""Decoding real synthetic clips with both backends, bad inputs, test-clip generation, contact sheets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers_video import clip_factory
from PIL import Image

from mlbcli.errors import UsageError, VideoDecodeError
from mlbcli.io.video import (
    VIDEO_EXTENSIONS,
    Frames,
    contact_sheet,
    decode_frames,
    is_video_path,
    make_test_video,
    probe_video,
    quiet_native_stderr,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clips shared by the module (encoding is the slow part): read-only."""
    make = clip_factory(tmp_path_factory.mktemp("clips"))
    return {
        "mp4": make("moving.mp4", num_frames=32, fps=8),
        "mkv": make("moving.mkv", num_frames=24, fps=12, seed=3),
        "ts": make("moving.ts", num_frames=32, fps=8),  # decord is not frame-exact on MPEG-TS
        "mpg": make("moving.mpg", num_frames=32, fps=8, codec="mpeg2video"),
        "flash": make("flash.mp4", num_frames=32, fps=8, pattern="flash"),
    }


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv"])
def test_both_backends_give_the_same_frames(clips: dict[str, Path], kind: str) -> None:
    by_decord = decode_frames(clips[kind], num_frames=8, backend="decord")
    by_pyav = decode_frames(clips[kind], num_frames=8, backend="pyav")
    assert by_decord.backend == "decord" and by_pyav.backend == "pyav"
    assert by_decord.array.shape == by_pyav.array.shape
    assert by_decord.indices == by_pyav.indices
    assert by_decord.timestamps_s == pytest.approx(by_pyav.timestamps_s, abs=1e-6)
    assert np.array_equal(by_decord.array, by_pyav.array)  # same FFmpeg decoder: bit-identical
    assert by_decord.info.num_frames_total == by_pyav.info.num_frames_total


def test_frames_array_and_metadata(clips: dict[str, Path]) -> None:
    frames = decode_frames(clips["mp4"], num_frames=8)
    assert isinstance(frames, Frames)
    assert frames.backend == "decord"  # auto prefers decord for H.264 in MP4
    assert frames.array.dtype == np.uint8
    assert frames.array.shape == (8, 120, 160, 3)
    assert frames.array.flags["C_CONTIGUOUS"]
    assert frames.indices == [0, 4, 9, 13, 18, 22, 27, 31]
    # Constant frame rate: container timestamps equal index / fps.
    assert frames.timestamps_s == pytest.approx([i / 8 for i in frames.indices])
    assert all(b > a for a, b in zip(frames.timestamps_s, frames.timestamps_s[1:], strict=False))
    info = frames.info
    assert (info.num_frames_total, info.fps, info.width, info.height, info.codec) == (
        32,
        8.0,
        160,
        120,
        "h264",
    )
    assert info.duration_s == pytest.approx(4.0)
    assert frames.warning is None
    # The synthetic content moves: consecutive sampled frames differ.
    diffs = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames.array, frames.array[1:], strict=False)]
    assert min(diffs) > 0.5


def test_fps_sampling_uses_real_timestamps(clips: dict[str, Path]) -> None:
    # 24 frames at 12 fps = 2 s; 3 fps -> 6 frames spread evenly over the whole clip (as the references)
    frames = decode_frames(clips["mkv"], fps=3.0)
    assert frames.indices == [0, 5, 9, 14, 18, 23]
    assert frames.timestamps_s == pytest.approx([i / 12 for i in frames.indices], abs=1e-3)
    capped = decode_frames(clips["mkv"], fps=3.0, num_frames=2)
    assert capped.indices == [0, 23]
    assert frames.note is None and capped.note is None


def test_a_family_frame_rule_reaches_the_decoder_and_says_so(clips: dict[str, Path]) -> None:
    from mlbcli.models.qwen2_vl import QWEN_FRAME_RULE

    frames = decode_frames(clips["mkv"], num_frames=7, rule=QWEN_FRAME_RULE)
    assert len(frames.indices) == 8 and len(frames.array) == 8
    assert frames.note is not None and "--frames 7 -> 8" in frames.note


@pytest.mark.parametrize("kind", ["ts", "mpg"])
def test_auto_avoids_decord_where_it_returns_wrong_frames(clips: dict[str, Path], kind: str) -> None:
    auto = decode_frames(clips[kind], num_frames=8)
    reference = decode_frames(clips[kind], num_frames=8, backend="pyav")
    assert auto.backend == "pyav"
    assert np.array_equal(auto.array, reference.array)
    # MPEG-TS starts at a non-zero pts; timestamps are relative to the first frame.
    assert auto.timestamps_s[0] == pytest.approx(0.0)
    assert auto.timestamps_s == pytest.approx([i / 8 for i in auto.indices], abs=1e-3)


def test_probe_video(clips: dict[str, Path]) -> None:
    info = probe_video(clips["mkv"])  # Matroska has no frame count in its header: packets are counted
    assert info.num_frames_total == 24
    assert info.fps == pytest.approx(12.0)
    assert (info.width, info.height, info.codec) == (160, 120, "h264")
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.path == str(clips["mkv"])


def test_oversampling_returns_every_frame_once(clips: dict[str, Path]) -> None:
    frames = decode_frames(clips["mkv"], num_frames=100)
    assert frames.indices == list(range(24))
    assert frames.array.shape[0] == 24


def test_bad_arguments(clips: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="backend"):
        decode_frames(clips["mp4"], num_frames=4, backend="opencv")
    with pytest.raises(UsageError):
        decode_frames(clips["mp4"])


# --------------------------------------------------------------------------------------------------
# Bad inputs: one clear VideoDecodeError naming the file
# --------------------------------------------------------------------------------------------------


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for i in range(4):
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_bad_inputs_raise_clear_errors(tmp_path: Path, backend: str) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    cases = {
        tmp_path / "missing.mp4": "file not found",
        empty: "empty file",
        tmp_path: "not a regular file",
        text: "not a readable video" if backend != "decord" else "cannot open",
        _audio_only(tmp_path / "audio.mp4"): "no video stream" if backend != "decord" else "video stream",
    }
    for path, message in cases.items():
        with pytest.raises(VideoDecodeError) as info:
            decode_frames(path, num_frames=4, backend=backend)
        text_of_error = str(info.value)
        assert str(path) in text_of_error and message in text_of_error
        assert "\n" not in text_of_error and len(text_of_error) < 400


def test_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="file not found"):
        probe_video(tmp_path / "nope.mkv")
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoDecodeError, match="not a readable video"):
        probe_video(bad)


def _truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_truncated_mp4_with_index_at_the_end_is_an_error(tmp_path: Path) -> None:
    # PyAV/FFmpeg write the MP4 index (moov) last: cut in half, nothing describes the frames any more.
    clip = make_test_video(tmp_path / "full.mp4", num_frames=32)
    cut = _truncate(clip, tmp_path / "cut.mp4")
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4: .*(truncated|not a readable video)"):
        decode_frames(cut, num_frames=8)


def test_mp4_cut_inside_its_index_is_a_clear_error(tmp_path: Path) -> None:
    """Finding R15: some cuts leave FFmpeg a video stream without codec parameters; the error text was
    `AttributeError: 'NoneType' object has no attribute 'name'`."""
    import av

    data = make_test_video(tmp_path / "full.mp4", num_frames=48).read_bytes()
    cut = tmp_path / "cut.mp4"

    def codec_missing(length: int) -> bool:
        cut.write_bytes(data[:length])
        try:
            with av.open(str(cut)) as container:
                return bool(container.streams.video) and container.streams.video[0].codec_context is None
        except av.FFmpegError:
            return False

    # Search the cut instead of hard-coding a byte count: the index layout depends on the FFmpeg build.
    length = next((n for n in range(data.rindex(b"moov"), len(data)) if codec_missing(n)), None)
    if length is None:
        pytest.skip("this FFmpeg build never exposes a stream without codec parameters")
    for decode in (
        lambda: decode_frames(cut, num_frames=4),
        lambda: decode_frames(cut, num_frames=4, backend="pyav"),
        lambda: probe_video(cut),
    ):
        with pytest.raises(
            VideoDecodeError, match=r"cut\.mp4: video stream has no codec parameters \(truncated"
        ):
            decode()


def test_truncated_faststart_mp4_decodes_the_readable_part_with_a_warning(tmp_path: Path) -> None:
    # Index first: the header promises 64 frames, but only the first part of the data is there.
    # Decision: decode what is readable, resample over it (caller still gets num_frames frames), and say
    # so in Frames.warning, instead of failing a video whose first half is fine.
    clip = make_test_video(tmp_path / "full.mp4", num_frames=64, container_options={"movflags": "faststart"})
    cut = _truncate(clip, tmp_path / "cut.mp4", 0.6)
    frames = decode_frames(cut, num_frames=8)
    assert frames.backend == "pyav"  # decord fails on the missing data; auto falls back
    assert frames.array.shape[0] == 8
    assert 0 < frames.info.num_frames_total < 64
    assert frames.indices[-1] == frames.info.num_frames_total - 1
    assert frames.warning and "could be decoded" in frames.warning
    assert all(b > a for a, b in zip(frames.timestamps_s, frames.timestamps_s[1:], strict=False))


def test_truncated_matroska_decodes_the_readable_part(tmp_path: Path) -> None:
    clip = make_test_video(tmp_path / "full.mkv", num_frames=64)
    cut = _truncate(clip, tmp_path / "cut.mkv")
    full = decode_frames(clip, num_frames=8)
    frames = decode_frames(cut, num_frames=8)
    assert frames.array.shape[0] == 8
    assert 0 < frames.info.num_frames_total < full.info.num_frames_total
    assert frames.timestamps_s[-1] < full.timestamps_s[-1]


# --------------------------------------------------------------------------------------------------
# Test clips, helpers
# --------------------------------------------------------------------------------------------------


def test_make_test_video_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = decode_frames(make_test_video(tmp_path / "a.mp4", num_frames=12, seed=5), num_frames=12).array
    b = decode_frames(make_test_video(tmp_path / "b.mp4", num_frames=12, seed=5), num_frames=12).array
    c = decode_frames(make_test_video(tmp_path / "c.mp4", num_frames=12, seed=6), num_frames=12).array
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_flash_pattern_has_hard_cuts_at_quarters(clips: dict[str, Path]) -> None:
    frames = decode_frames(clips["flash"], num_frames=32)
    means = frames.array.reshape(32, -1, 3).mean(axis=1)
    jumps = np.abs(np.diff(means, axis=0)).sum(axis=1)  # colour change between consecutive frames
    cuts = sorted(int(i) + 1 for i in np.argsort(jumps)[-3:])
    assert cuts == [8, 16, 24]
    assert jumps[[7, 15, 23]].min() > 10 * np.delete(jumps, [7, 15, 23]).max()


def test_make_test_video_other_codecs_and_patterns(tmp_path: Path) -> None:
    webm = make_test_video(tmp_path / "s.webm", num_frames=8, codec="libvpx-vp9", pattern="static")
    frames = decode_frames(webm, num_frames=8)
    assert frames.info.codec == "vp9" and frames.array.shape == (8, 120, 160, 3)
    assert np.abs(frames.array[0].astype(int) - frames.array[-1]).mean() < 3  # "static" barely moves
    gif = make_test_video(tmp_path / "g.gif", num_frames=6, codec="gif", width=64, height=48)
    assert decode_frames(gif, num_frames=3).array.shape == (3, 48, 64, 3)
    with pytest.raises(ValueError):
        make_test_video(tmp_path / "x.mp4", pattern="spiral")


def test_video_extensions() -> None:
    assert ".mp4" in VIDEO_EXTENSIONS and ".gif" in VIDEO_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in VIDEO_EXTENSIONS)
    assert is_video_path("A/B/CLIP.MP4") and not is_video_path("notes.txt")


@pytest.mark.parametrize(
    ("name", "columns", "tile_width", "size"),
    [
        ("sheet.png", None, 160, (3 * 160, 3 * 120)),  # 8 tiles -> ceil(sqrt(8)) = 3 columns, 3 rows
        ("sheet.jpg", 4, 80, (4 * 80, 2 * 60)),
        ("sheet.JPEG", 10, 40, (8 * 40, 30)),  # never more columns than tiles
    ],
)
def test_contact_sheet(clips: dict[str, Path], tmp_path: Path, name, columns, tile_width, size) -> None:
    frames = decode_frames(clips["mp4"], num_frames=8)
    out = contact_sheet(frames, tmp_path / "sub" / name, columns=columns, tile_width=tile_width)
    assert out == tmp_path / "sub" / name
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.size == size
        assert image.format == ("PNG" if name.endswith(".png") else "JPEG")
    assert os.listdir(out.parent) == [name]  # atomic write: no temporary file left behind


def test_contact_sheet_rejects_unknown_suffix(clips: dict[str, Path], tmp_path: Path) -> None:
    frames = decode_frames(clips["mp4"], num_frames=2)
    with pytest.raises(UsageError, match="png"):
        contact_sheet(frames, tmp_path / "sheet.bmp")
    assert not list(tmp_path.iterdir())


def test_quiet_native_stderr_hides_fd2_and_restores_it(capfd: pytest.CaptureFixture[str]) -> None:
    os.write(2, b"before\n")
    with quiet_native_stderr(enabled=True):
        os.write(2, b"hidden-outer\n")
        with quiet_native_stderr(enabled=True):
            os.write(2, b"hidden-inner\n")
        os.write(2, b"hidden-after-inner\n")  # the inner exit must not restore too early
    os.write(2, b"after\n")
    with quiet_native_stderr(enabled=False):
        os.write(2, b"shown\n")
    err = capfd.readouterr().err
    assert "before" in err and "after" in err and "shown" in err
    assert "hidden" not in err


def test_quiet_native_stderr_by_default_only_in_the_main_thread(capfd: pytest.CaptureFixture[str]) -> None:
    # A helper thread may be abandoned mid-decode (prefetch's inline timeout): it must not leave fd 2
    # pointing at /dev/null for the rest of the run.
    import threading

    def helper() -> None:
        with quiet_native_stderr():
            os.write(2, b"from-helper\n")

    thread = threading.Thread(target=helper)
    thread.start()
    thread.join()
    with quiet_native_stderr():
        os.write(2, b"hidden-main\n")
    err = capfd.readouterr().err
    assert "from-helper" in err and "hidden-main" not in err


def test_fast_path_imports_no_decoder_or_torch() -> None:
    """`mlb --help` and source listing import these modules: decoders, PIL and torch must stay lazy."""
    import subprocess
    import sys

    code = (
        "import sys, mlbcli.io.video, mlbcli.io.sources, mlbcli.io.prefetch, mlbcli.io.sampling;"
        "print(','.join(m for m in ('torch', 'transformers', 'av', 'decord', 'PIL', 'pyarrow') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


def test_io_layer_imports_nothing_above_it() -> None:
    """io/ is the bottom layer: its modules import only `mlbcli.io.*` and `mlbcli.errors`.

    Counted the way an import graph counts them: imports inside functions and under TYPE_CHECKING too
    (bias_report types the engine's objects with Protocols; saved-token glue lives in engine/).
    """
    import ast

    import mlbcli.io

    upward = []
    for path in sorted(Path(mlbcli.io.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                inside = name == "mlbcli.errors" or name.startswith("mlbcli.io")
                if name.startswith("mlbcli") and not inside:
                    upward.append(f"{path.name}: {name}")
    assert upward == []
