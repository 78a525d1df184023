"""`mlb manifest BENCHMARK ANNOTATIONS --videos DIR`: mlb's manifest from a benchmark's published annotations.

Each converter reads the layouts lmms-eval 0.7.3 reads (its task YAML's dataset, or the benchmark's own
release) and writes one manifest row per question (`mlbcli.io.manifests`: video, video_id, question_id,
question, options, answer, category):

==============  ==========================================  ===================  =============  ===========
benchmark       annotations                                 video under --videos  ground truth   category
==============  ==========================================  ===================  =============  ===========
videomme        Video-MME parquet/JSON rows (videoID, ...)  data/<videoID>.mp4   letter         duration
mlvu            MLVU json per task (or a folder of them);   <task dir>/<video>   letter         task type
                lmms-eval's MLVU_dev rows (video_name)
mvbench         MVBench json per subtask (or a folder)      lmms-eval's folder   option text    subtask
                                                            per subtask
egoschema       questions.json (+ subset_answers.json);     <q_uid>.mp4          0-based index  (none)
                lmms-eval's rows (video_idx, option)
nextqa          NExT-QA csv (a0..a4, answer index)          map_vid_vidorid.json 0-based index  type
                                                            path, or <video>.mp4
longvideobench  lvb_val.json (candidates, correct_choice)   videos/<video_path>  0-based index  question
                                                                                                category
==============  ==========================================  ===================  =============  ===========

Ground truths stay as the benchmark stores them (`lmms_eval_grading.truth_letter` reads them: '2' is C on
the index-style benchmarks); option texts are written as the task writes them (Video-MME's "A. " labels
kept, LongVideoBench's "N/A" padding kept: the prompt drops it). A video is looked for at the benchmark's
own relative path under --videos first, then by its file name anywhere below (one walk of the folder).

Beside the manifest, ``<manifest stem>.lmms-eval-docs.jsonl`` keeps each question's lmms-eval doc (the
fields its ``process_results`` reads, e.g. Video-MME's domain and task type), keyed by question id, so that
`mlb score --lmms-eval-samples` writes samples lmms-eval's aggregation reads (`mlbcli.eval.samples`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlbcli.errors import UsageError

__all__ = ["CONVERTERS", "Converted", "Entry", "VideoFinder", "convert", "docs_path"]

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")
#: How many missing videos an error names (the count is always given).
SHOWN_MISSING = 5

#: MVBench's video folder per subtask, as lmms-eval's `mvbench/utils.py` (DATA_LIST) lays them out.
MVBENCH_FOLDERS = {
    "object_interaction": "star/Charades_segment",
    "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment",
    "action_localization": "sta/sta_video_segment",
    "moving_count": "clevrer/video_validation",
    "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos",
    "object_shuffle": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "moving_direction": "clevrer/video_validation",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "scene_transition": "scene_qa/video",
    "state_change": "perception/videos",
    "moving_attribute": "clevrer/video_validation",
    "action_antonym": "ssv2_video_mp4",
    "unexpected_action": "FunQA_test/test",
    "counterfactual_inference": "clevrer/video_validation",
    "object_existence": "clevrer/video_validation",
    "action_count": "perception/videos",
}


@dataclass(frozen=True)
class Entry:
    """One question: where its video may be (relative paths, most specific first), its manifest row
    without the video, and its lmms-eval doc."""

    videos: tuple[str, ...]
    row: dict[str, Any]
    doc: dict[str, Any]


@dataclass
class Converted:
    """What `convert` wrote."""

    manifest: Path
    docs: Path
    rows: int
    missing: list[str] = field(default_factory=list)  # videos not found (rows left out with allow_missing)


class VideoFinder:
    """Finds a video below `root`: at a relative path (any common extension), else by file name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_name: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:  # one walk, only when some video is not at its own path
            self._by_name = defaultdict(list)
            for folder, _, files in os.walk(self.root):
                for name in files:
                    self._by_name[name].append(Path(folder) / name)
        return self._by_name

    @staticmethod
    def _variants(relative: str) -> list[str]:
        if PurePosixPath(relative).suffix.lower() in {ext.lower() for ext in VIDEO_EXTENSIONS}:
            stem = relative[: -len(PurePosixPath(relative).suffix)]
            return [relative, *(stem + ext for ext in VIDEO_EXTENSIONS)]
        return [relative, *(relative + ext for ext in VIDEO_EXTENSIONS)]

    def find(self, candidates: Sequence[str]) -> Path | None:
        for relative in candidates:
            for variant in self._variants(relative):
                path = self.root / variant
                if path.is_file():
                    return path
        index = self._index()
        for relative in candidates:
            for variant in self._variants(relative):
                hits = index.get(PurePosixPath(variant).name, [])
                # Same name in several folders (MVBench's clips): the one whose path ends like the candidate.
                ends = [hit for hit in hits if hit.as_posix().endswith("/" + variant)]
                if hits:
                    return sorted(ends or hits)[0]
        return None


# --- reading annotation files -------------------------------------------------------------------------------


def _records(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON list, a JSON object of rows, JSON lines, CSV or Parquet annotation file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_table(path).to_pylist())
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                return [dict(row) for row in csv.DictReader(fh)]
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except Exception as error:  # OSError, JSON and CSV errors, pyarrow's errors
        raise UsageError(f"{path}: cannot read annotations ({error})") from None
    if isinstance(data, dict) and all(isinstance(value, dict) for value in data.values()):
        return [{"_key": key, **value} for key, value in data.items()]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UsageError(f"{path}: expected a list of question objects")
    return data


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """`path` itself, or (a folder, e.g. MVBench's json/) its annotation files in name order."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        if not found:
            raise UsageError(f"{path}: no annotation files ({', '.join(suffixes)}) in this folder")
        return found
    if not path.is_file():
        raise UsageError(f"{path}: no such annotation file")
    return [path]


def _need(row: dict[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [key for key in keys if row.get(key) is None]
    if missing:
        raise UsageError(f"{where}: no {', '.join(map(repr, missing))} (have: {', '.join(map(str, row))})")


def _index_text(value: Any, where: str, count: int) -> str:
    """A 0-based option index as the manifest stores it ('2'); a UsageError when it is not one."""
    text = str(value).strip()
    if not text.isdigit() or int(text) >= count:
        raise UsageError(f"{where}: answer {value!r} is not a 0-based index of its {count} options")
    return text


# --- one function per benchmark: annotation file -> entries -----------------------------------------------


def videomme_entries(path: Path, extra: dict[str, Any]) -> Iterator[Entry]:
    for number, row in enumerate(_records(path), 1):
        _need(row, ("videoID", "question", "options", "answer"), f"{path}:{number}")
        options = [str(option) for option in row["options"]]
        video = str(row["videoID"])
        doc = {key: row.get(key) for key in ("video_id", "duration", "domain", "sub_category", "url",
                                             "videoID", "question_id", "task_type", "question", "answer")}  # fmt: skip
        doc["options"] = options
        yield Entry(
            (f"data/{video}.mp4", f"{video}.mp4"),
            {"video_id": video, "question_id": str(row.get("question_id") or f"{video}-{number}"),
             "question": row["question"], "options": options, "answer": str(row["answer"]).strip(),
             "category": row.get("duration")},
            doc,
        )  # fmt: skip


def _mlvu_task(path: Path, row: dict[str, Any]) -> str | None:
    named = row.get("task_type") or row.get("question_type")
    if named:
        return str(named)
    stem = path.stem  # MLVU's files: 1_plotQA.json, 2_needle.json, ...
    return stem.split("_", 1)[1] if stem[:1].isdigit() and "_" in stem else stem


def mlvu_entries(path: Path, extra: dict[str, Any]) -> Iterator[Entry]:
    from mlbcli.eval.benchmarks import inline_options

    for file in _files(path, (".json", ".jsonl", ".parquet")):
        for number, row in enumerate(_records(file), 1):
            where = f"{file}:{number}"
            video = row.get("video_name") or row.get("video")
            _need({**row, "video": video}, ("video", "question", "answer"), where)
            task, question = _mlvu_task(file, row), str(row["question"])
            candidates = row.get("candidates")
            options = [str(c) for c in candidates] if candidates else inline_options(question)
            answer = str(row["answer"]).strip()
            if answer in options and not (len(answer) == 1 and answer in LETTERS):
                answer = LETTERS[options.index(answer)]  # MLVU's release stores the text; lmms-eval a letter
            if len(answer) != 1 or answer not in LETTERS[: len(options)]:
                raise UsageError(
                    f"{where}: answer {row['answer']!r} is neither a letter nor an option's text"
                )
            listed = question if inline_options(question) else question + "".join(
                f"\n({x}) {text}" for x, text in zip(LETTERS, options, strict=False)
            )  # fmt: skip
            folder = file.stem if file.stem[:1].isdigit() else str(task)
            yield Entry(
                (f"{folder}/{video}", str(video)),
                {"video_id": str(video), "question_id": f"{task}_{number}", "question": question,
                 "options": options, "answer": answer, "category": task},
                {"video_name": video, "duration": row.get("duration"), "question": listed, "answer": answer,
                 "task_type": task, "candidates": options},
            )  # fmt: skip


def mvbench_entries(path: Path, extra: dict[str, Any]) -> Iterator[Entry]:
    for file in _files(path, (".json", ".jsonl", ".parquet")):
        subtask = file.stem
        for number, row in enumerate(_records(file), 1):
            where = f"{file}:{number}"
            _need(row, ("video", "question", "candidates", "answer"), where)
            options = [str(c) for c in row["candidates"]]
            if str(row["answer"]) not in options:
                raise UsageError(f"{where}: answer {row['answer']!r} is not one of its candidates {options}")
            folder = MVBENCH_FOLDERS.get(subtask, "")
            video = str(row["video"])
            yield Entry(
                (f"{folder}/{video}" if folder else video, video),
                {"video_id": video, "question_id": f"{subtask}_{number}", "question": row["question"],
                 "options": options, "answer": str(row["answer"]), "category": subtask},
                {"video": video, "question": row["question"], "candidates": options,
                 "answer": str(row["answer"]), "sub_task": subtask},
            )  # fmt: skip


def _egoschema_answers(path: Path, answers: str | None) -> dict[str, Any] | None:
    file = Path(answers) if answers else path.parent / "subset_answers.json"
    if not file.is_file():
        if answers:
            raise UsageError(f"--answers {answers}: no such file")
        return None
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise UsageError(f"{file}: expected an object of q_uid -> answer index")
    return data


def egoschema_entries(path: Path, extra: dict[str, Any]) -> Iterator[Entry]:
    answers = _egoschema_answers(path, extra.get("answers"))
    if answers is None:
        logger.warning("%s: no subset_answers.json beside it (or --answers): rows have no ground truth", path)
    for number, row in enumerate(_records(path), 1):
        where = f"{path}:{number}"
        uid = row.get("q_uid") or row.get("video_idx")
        _need({**row, "q_uid": uid}, ("q_uid", "question"), where)
        if "option" in row:  # lmms-eval's layout: options labelled "A. ...", answer an index
            options = [str(option) for option in row["option"]]
            truth = row.get("answer")
        else:  # the release: "option 0" .. "option 4", answers in subset_answers.json
            options = [str(row[f"option {i}"]) for i in range(5) if row.get(f"option {i}") is not None]
            truth = answers.get(str(uid)) if answers is not None else None
            if answers is not None and truth is None:
                continue  # the full set's questions are scored by a server: the subset is what has answers
        answer = _index_text(truth, where, len(options)) if truth not in (None, "") else None
        labelled = [
            o if o.startswith(f"{x}.") else f"{x}. {o}" for x, o in zip(LETTERS, options, strict=False)
        ]
        yield Entry(
            (f"{uid}.mp4",),
            {"video_id": str(uid), "question_id": str(uid), "question": row["question"], "options": options,
             "answer": answer},
            {"video_idx": str(uid), "question": row["question"], "option": labelled, "answer": answer},
        )  # fmt: skip


def _nextqa_map(path: Path, videos: Path) -> dict[str, str]:
    for folder in (videos, path.parent):
        file = folder / "map_vid_vidorid.json"
        if file.is_file():
            return {str(k): str(v) for k, v in json.loads(file.read_text(encoding="utf-8")).items()}
    return {}


def nextqa_entries(path: Path, extra: dict[str, Any]) -> Iterator[Entry]:
    mapping = _nextqa_map(path, extra["videos"])
    for number, row in enumerate(_records(path), 1):
        where = f"{path}:{number}"
        _need(row, ("video", "question", "answer", "a0", "a1"), where)
        options = [str(row[f"a{i}"]) for i in range(5) if row.get(f"a{i}") not in (None, "")]
        video = str(row["video"])
        answer = _index_text(row["answer"], where, len(options))
        candidates = [f"{mapping[video]}.mp4"] if video in mapping else []
        doc = {
            key: row.get(key)
            for key in ("video", "frame_count", "width", "height", "question", "qid", "type")
        }
        doc.update({f"a{i}": option for i, option in enumerate(options)}, answer=int(answer))
        yield Entry(
            (*candidates, f"{video}.mp4"),
            {"video_id": video, "question_id": f"{video}_{row.get('qid', number)}", "question": row["question"],
             "options": options, "answer": answer, "category": row.get("type") or None},
            doc,
        )  # fmt: skip


def longvideobench_entries(path: Path, extra: dict[str, Any]) -> Iterator[Entry]:
    for number, row in enumerate(_records(path), 1):
        where = f"{path}:{number}"
        _need(row, ("video_path", "question", "correct_choice"), where)
        if row.get("candidates") is not None:
            options = [str(c) for c in row["candidates"]]
        else:  # lmms-eval's rows: option0 .. option4, padded with "N/A"
            options = [str(row[f"option{i}"]) for i in range(5) if row.get(f"option{i}") is not None]
        answer = _index_text(row["correct_choice"], where, len(options))
        padded = options + ["N/A"] * (5 - len(options))
        qid = str(row.get("id") or f"{row.get('video_id')}_{number}")
        doc = {key: row.get(key) for key in ("id", "video_id", "video_path", "question", "duration",
                                             "duration_group", "question_category")}  # fmt: skip
        doc.update({f"option{i}": option for i, option in enumerate(padded)}, correct_choice=int(answer))
        yield Entry(
            (f"videos/{row['video_path']}", str(row["video_path"])),
            {"video_id": str(row.get("video_id") or PurePosixPath(str(row["video_path"])).stem),
             "question_id": qid, "question": row["question"], "options": options, "answer": answer,
             "category": row.get("question_category")},
            doc,
        )  # fmt: skip


CONVERTERS: dict[str, Callable[[Path, dict[str, Any]], Iterator[Entry]]] = {
    "videomme": videomme_entries,
    "mlvu": mlvu_entries,
    "mvbench": mvbench_entries,
    "egoschema": egoschema_entries,
    "nextqa": nextqa_entries,
    "longvideobench": longvideobench_entries,
}


# --- writing -----------------------------------------------------------------------------------------------


def docs_path(manifest: Path) -> Path:
    """The lmms-eval docs file written beside `manifest` (`manifest.jsonl` -> `manifest.lmms-eval-docs.jsonl`)."""
    return manifest.with_name(f"{manifest.stem}.lmms-eval-docs.jsonl")


def _missing_error(missing: list[str], videos: Path, total: int) -> UsageError:
    shown = ", ".join(missing[:SHOWN_MISSING]) + (", ..." if len(missing) > SHOWN_MISSING else "")
    return UsageError(
        f"{len(missing)} of {total} videos not found under {videos}: {shown} "
        "(--allow-missing writes the rows whose video was found)"
    )


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records)
    tmp.replace(path)


def convert(
    benchmark: str,
    annotations: str,
    *,
    videos: str,
    out: str = "manifest.jsonl",
    answers: str | None = None,
    allow_missing: bool = False,
) -> Converted:
    """Write `out` (a JSONL manifest) and its lmms-eval docs file from `benchmark`'s annotations."""
    name = benchmark.strip().lower().replace("-", "").replace("_", "")
    if name not in CONVERTERS:
        raise UsageError(f"unknown benchmark {benchmark!r}; choose from {', '.join(CONVERTERS)}")
    if answers is not None and name != "egoschema":
        raise UsageError("--answers applies to egoschema only (its subset_answers.json)")
    if Path(out).suffix.lower() != ".jsonl":
        raise UsageError(f"--out {out}: the manifest is written as JSON lines (.jsonl)")
    root = Path(videos)
    if not root.is_dir():
        raise UsageError(f"--videos {videos}: no such folder")
    entries = list(CONVERTERS[name](Path(annotations), {"answers": answers, "videos": root}))
    if not entries:
        raise UsageError(f"{annotations}: no questions found")
    manifest = Path(out)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    finder = VideoFinder(root)
    rows, docs, missing = [], [], []
    for entry in entries:
        found = finder.find(entry.videos)
        if found is None:
            missing.append(entry.videos[0])
            continue
        video = os.path.relpath(found.resolve(), manifest.parent.resolve())
        rows.append({"video": video, **{k: v for k, v in entry.row.items() if v is not None}})
        docs.append({"question_id": entry.row["question_id"], "doc": entry.doc})
    missing = list(dict.fromkeys(missing))
    if missing and not allow_missing:
        raise _missing_error(missing, root, len({e.videos[0] for e in entries}))
    if not rows:
        raise UsageError(f"none of the {len(entries)} questions' videos is under {videos}")
    _write_jsonl(manifest, rows)
    _write_jsonl(docs_path(manifest), docs)
    return Converted(manifest, docs_path(manifest), len(rows), missing)
