"""lmms-eval reads what mlb writes: `mlb score --lmms-eval-samples` samples go through each task's own
`process_results` and aggregation function (lmms-eval 0.7.3) and give the accuracy `mlb score` prints.
And mlb runs inside lmms-eval: the `mlb` model plugin, down to the `lmms-eval` command on a local task.

lmms-eval is a test-only dependency (`make test-lmms-eval`: installed with --no-deps into its own folder, on
PYTHONPATH); without it these tests skip.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomllib
from test_lmms_eval_grading import LETTERS, reply_mix
from typer.testing import CliRunner

from mlbcli.cli.app import app
from mlbcli.eval.converters import convert
from mlbcli.eval.lmms_eval_grading import MLVU_DEV_TASK_TYPES, seeded_guess

N = 120


#: PYTHONPATH as the test run started, made absolute against the folder it started in: the command test
#: runs lmms-eval in another folder (its task reads a relative data file), and `make test-lmms-eval` puts
#: lmms-eval on a PYTHONPATH that may be relative.
STARTUP_PYTHONPATH = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def run(args: list[Any]):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def lmms_tasks(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], types.ModuleType]:
    pytest.importorskip("lmms_eval", reason="lmms-eval is a test-only dependency (make test-lmms-eval)")
    hf_home = str(tmp_path_factory.mktemp("hf_home"))

    def load(task: str) -> types.ModuleType:
        with pytest.MonkeyPatch.context() as patch:  # task modules build paths from $HF_HOME at import
            patch.setenv("HF_HOME", os.environ.get("HF_HOME", hf_home))
            return importlib.import_module(f"lmms_eval.tasks.{task}.utils")

    return load


class SeededDraws:
    """A task module's `random`, drawing the guess mlb recorded (keyed by run seed, video and question)."""

    def __init__(self) -> None:
        self.key = ""

    def choice(self, letters: list[str]) -> str:
        return seeded_guess(letters, self.key)


def predictions(benchmark: str, n: int = N) -> list[dict[str, Any]]:
    rows = []
    for i, case in enumerate(reply_mix(benchmark, n)):
        options = list(case.options)
        truth: str = LETTERS[case.truth_index]
        if benchmark in ("egoschema", "nextqa", "longvideobench"):
            truth = str(case.truth_index)  # index-style ground truths, as those benchmarks store them
        if benchmark == "mvbench":
            truth = options[case.truth_index]
        category = MLVU_DEV_TASK_TYPES[i % 7] if benchmark == "mlvu" else case.category
        rows.append({"benchmark": benchmark, "video_id": f"v{i // 2}", "question_id": f"q{i}",
                     "question": "What happens?", "options": options, "answer": case.reply,
                     "ground_truth": truth, "category": category})  # fmt: skip
    return rows


def score_and_samples(tmp_path: Path, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Path]]:
    path = tmp_path / "run.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run(["score", path, "--lmms-eval-samples", tmp_path / "samples", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0], sorted((tmp_path / "samples").iterdir())


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_records(module: types.ModuleType, process: str, metric: str, samples: list[dict[str, Any]]) -> None:
    """Each sample's metric record is what the task's `process_results` makes of its doc and reply."""
    draws = SeededDraws()
    original = getattr(module, "random", None)
    if original is not None:
        module.random = draws  # type: ignore[attr-defined]  (put back below)
    try:
        for sample in samples:
            draws.key = f"0:{sample['doc']['video_id']}:{sample['doc']['question_id']}"
            theirs = getattr(module, process)(sample["doc"], [sample["filtered_resps"]])[metric]
            assert theirs == sample[metric], (sample["filtered_resps"], theirs, sample[metric])
    finally:
        if original is not None:
            module.random = original  # type: ignore[attr-defined]


def videomme_rows(tmp_path: Path, vm: types.ModuleType) -> list[dict[str, Any]]:
    """Rows of a run on a manifest written by `mlb manifest videomme` (origin: the manifest's lines)."""
    mix = reply_mix("videomme", N)
    annotations = [
        {"video_id": f"{i // 2:03d}", "videoID": f"vid{i // 2}", "question_id": f"{i // 2:03d}-{i % 2 + 1}",
         "duration": vm.VIDEO_TYPE[i % 3], "domain": vm.CATEGORIES[i % 6],
         "sub_category": vm.SUB_CATEGORIES[i % 30], "task_type": vm.TASK_CATEGORIES[i % 12], "url": "",
         "question": "What happens?", "options": [f"{x}. {t}" for x, t in zip(LETTERS, case.options, strict=False)],
         "answer": LETTERS[case.truth_index]}
        for i, case in enumerate(mix)
    ]  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    (tmp_path / "videos" / "data").mkdir(parents=True)
    for row in annotations:
        (tmp_path / "videos" / "data" / f"{row['videoID']}.mp4").write_bytes(b"x")
    convert("videomme", str(tmp_path / "ann.json"), videos=str(tmp_path / "videos"), out="vm.jsonl")
    manifest = [json.loads(line) for line in Path("vm.jsonl").read_text().splitlines()]
    return [
        {"benchmark": "videomme", "video_id": m["video_id"], "question_id": m["question_id"],
         "question": m["question"], "options": m["options"], "ground_truth": m["answer"],
         "category": m["category"], "answer": case.reply, "origin": f"vm.jsonl:{line}"}
        for line, (m, case) in enumerate(zip(manifest, mix, strict=True), 1)
    ]  # fmt: skip


def test_videomme_samples_aggregate_as_mlb_score_prints(lmms_tasks, tmp_path: Path) -> None:
    vm = lmms_tasks("videomme")
    whole, (file,) = score_and_samples(tmp_path, videomme_rows(tmp_path, vm))
    samples = read(file)
    assert file.name == "run_samples_videomme.jsonl" and len(samples) == N
    assert samples[0]["doc"]["domain"] in vm.CATEGORIES  # the manifest's lmms-eval doc, found via origin
    check_records(vm, "videomme_process_results", "videomme_perception_score", samples)
    records = [sample["videomme_perception_score"] for sample in samples]
    assert vm.videomme_aggregate_results(records) == pytest.approx(100 * whole["accuracy_lmms_eval"])
    assert whole["accuracy"] == whole["accuracy_lmms_eval"] != whole["accuracy_mlb"]


def test_mlvu_samples(lmms_tasks, tmp_path: Path) -> None:
    mlvu = lmms_tasks("mlvu")
    whole, (file,) = score_and_samples(tmp_path, predictions("mlvu"))
    samples = read(file)
    check_records(mlvu, "mlvu_process_results", "mlvu_percetion_score", samples)
    aggregate = mlvu.mlvu_aggregate_results_dev([s["mlvu_percetion_score"] for s in samples])
    assert aggregate == pytest.approx(100 * whole["accuracy_lmms_eval"])


def test_mvbench_samples_one_file_per_subtask(lmms_tasks, tmp_path: Path) -> None:
    mv = lmms_tasks("mvbench")
    whole, files = score_and_samples(tmp_path, predictions("mvbench"))
    assert len(files) == 4 and all("_samples_mvbench_" in f.name for f in files)
    per_subtask = []
    for file in files:
        samples = read(file)
        check_records(mv, "mvbench_process_results", "mvbench_accuracy", samples)
        per_subtask.append(mv.mvbench_aggregate_results([s["mvbench_accuracy"] for s in samples]))
    assert sum(per_subtask) / len(per_subtask) == pytest.approx(100 * whole["accuracy_lmms_eval"])


@pytest.mark.parametrize(
    ("benchmark", "module", "process", "metric"),
    [
        ("egoschema", "egoschema", "egoschema_process_results_generation", "score"),
        ("nextqa", "nextqa", "nextqa_mc_process_results", "exact_match"),
        ("longvideobench", "longvideobench", "longvideobench_process_results", "lvb_acc"),
    ],
)
def test_guessing_benchmarks_samples(
    lmms_tasks, tmp_path: Path, monkeypatch, benchmark: str, module: str, process: str, metric: str
) -> None:
    utils = lmms_tasks(module)
    monkeypatch.setattr(utils, "random", SeededDraws())
    whole, (file,) = score_and_samples(tmp_path, predictions(benchmark))
    samples = read(file)
    check_records(utils, process, metric, samples)
    records = [sample[metric] for sample in samples]
    if benchmark == "egoschema":
        aggregated = utils.egoschema_aggregate_score(records, None)
    elif benchmark == "nextqa":
        aggregated = sum(records) / len(records)  # the YAML's `aggregation: mean`
    else:
        aggregated = utils.longvideobench_aggregate_results(records)
    assert aggregated == pytest.approx(whole["accuracy_lmms_eval"], abs=1e-5)


# -- `lmms-eval --model mlb`: the plugin ----------------------------------------------------------------------
# The model class with lmms-eval's own registry and Instance objects, then the real command end to end on a
# local task (tests/data/lmms_eval_task: its dataset is a JSONL file, which HF datasets reads offline).


def test_the_entry_point_registers_model_mlb(lmms_tasks) -> None:
    registry = importlib.import_module("lmms_eval.models.registry_v2")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["lmms_eval.models"]["mlb"]
    module, attr = target.split(":")
    fresh = registry.ModelRegistryV2()
    for manifest in fresh._coerce_payload_to_manifests(getattr(importlib.import_module(module), attr)):
        fresh.register_manifest(manifest)
    from mlbcli.lmms_eval_plugin import MlbLmms

    assert fresh.get_model_class("mlb") is MlbLmms  # lmms-eval checks: an `lmms` subclass, a simple model
    assert project["project"]["optional-dependencies"]["lmms-eval"][0].startswith("lmms-eval>=0.7.3")


def test_model_args_are_checked(lmms_tasks) -> None:
    from mlbcli.errors import UsageError
    from mlbcli.lmms_eval_plugin import MlbLmms

    with pytest.raises(UsageError, match="does not take bogus"):
        MlbLmms.create_from_arg_string("pretrained=m,bogus=1", {"batch_size": 1})
    with pytest.raises(UsageError, match="pretrained=MODEL"):
        MlbLmms.create_from_arg_string("method=fastv", {})
    with pytest.raises(UsageError, match="keep"):  # mlb's own option checks, before any model loads
        MlbLmms.create_from_arg_string("pretrained=m,method=none,keep=0.5", {})
    model = MlbLmms.create_from_arg_string("pretrained=m,method=fastv,keep=0.5", {"batch_size": 1})
    with pytest.raises(NotImplementedError, match="log-likelihood"):
        model.loglikelihood([])


def test_generate_until_answers_with_mlbs_engine(lmms_tasks, tiny_model_dir: Path, clips_dir: Path) -> None:
    """lmms-eval's requests (context, generation kwargs, doc_to_visual, doc id, task, split) answered by the
    pruning engine: the same replies `mlb answer` gives for the same prompt text, method and keep."""
    from lmms_eval.api.instance import Instance

    from mlbcli import api
    from mlbcli.lmms_eval_plugin import MlbLmms

    docs = [
        {"video": str(clips_dir / "a.mp4"), "q": "What moves?"},
        {"video": str(clips_dir / "b.mp4"), "q": "Why?"},
    ]
    model = MlbLmms.create_from_arg_string(
        f"pretrained={tiny_model_dir},method=fastv,keep=0.5,frames=4,device=cpu",
        {"batch_size": 1, "max_batch_size": None},
    )
    model.task_dict = {"toy": {"test": docs}}
    requests = [
        Instance(
            request_type="generate_until",
            arguments=(doc["q"] + "\nAnswer briefly.", {"max_new_tokens": 3, "until": ["\n\n"]},
                       lambda d: [d["video"]], doc_id, "toy", "test"),
            idx=0,
            metadata={"task": "toy", "doc_id": doc_id, "repeats": 1},
        )
        for doc_id, doc in enumerate(docs)
    ]  # fmt: skip
    replies = model.generate_until(requests)
    assert len(replies) == 2 and all(isinstance(reply, str) and reply for reply in replies)
    Path("m.jsonl").write_text(
        "".join(
            json.dumps({"video": d["video"], "question": d["q"] + "\nAnswer briefly."}) + "\n" for d in docs
        )
    )
    api.answer(["m.jsonl"], max_new_tokens=3, run=api.RunOptions(out="a.jsonl", workers=0), progress=False,
               model=str(tiny_model_dir), method="fastv", keep=0.5, frames=4, device="cpu")  # fmt: skip
    direct = {Path(r["video_path"]).name: r for r in api.iter_rows("a.jsonl")}
    assert replies == [direct["a.mp4"]["answer"].split("\n\n")[0], direct["b.mp4"]["answer"].split("\n\n")[0]]
    assert direct["a.mp4"]["keep_realized"] < 1.0  # the tokens were pruned


TASK_DIR = Path(__file__).resolve().parent / "data" / "lmms_eval_task"
REPO = Path(__file__).resolve().parents[1]
#: mlb_toy.yaml's generation_kwargs, which the direct `mlb answer` run below repeats.
TOY_MAX_NEW_TOKENS, TOY_UNTIL = 3, "\n\n"


def entry_point_path(tmp_path: Path) -> list[str]:
    """Where lmms-eval's `entry_points()` finds model `mlb`: nowhere extra when the installed metadata has it;
    else a throwaway dist-info holding pyproject's entry point. The venv's editable install of mlbcli may
    predate the entry point (its metadata is written at `pip install` time, not read from pyproject.toml),
    and these tests must not reinstall the package; lmms-eval discovers plugins only through
    `importlib.metadata`, which reads any `*.dist-info` folder on sys.path, so one on the subprocess's
    PYTHONPATH is exactly what a fresh `pip install mlbcli[lmms-eval]` would give it."""
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "lmms_eval.models"
    ]
    installed = importlib.metadata.entry_points(group="lmms_eval.models", name="mlb")
    if any(ep.value == target["mlb"] for ep in installed):
        return []
    dist_info = tmp_path / "entry-points" / "mlbcli_lmms_eval_entry_point-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mlbcli-lmms-eval-entry-point\nVersion: 0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[lmms_eval.models]\nmlb = {target['mlb']}\n")
    return [str(dist_info.parent)]


@pytest.mark.slow  # a whole lmms-eval run in a subprocess
def test_lmms_eval_command_runs_a_local_task(lmms_tasks, tiny_model_dir: Path, tmp_path: Path) -> None:
    """`python -m lmms_eval --model mlb ... --tasks mlb_toy --include_path tests/data/lmms_eval_task` offline:
    lmms-eval's own pipeline (task loading, prompts, generation, process_results, aggregation, result and
    sample files) with mlb's engine. The targets are what `mlb answer` replies to the same clips and questions,
    one of them spoiled, so the aggregated exact match must be exactly 2/3."""
    from mlbcli import api
    from mlbcli.io.video import make_test_video

    questions = ["What moves?", "Why?", "What colour is it?"]
    clips = [make_test_video(tmp_path / f"clip{i}.mp4", num_frames=16 + 4 * i, seed=i + 1) for i in range(3)]
    model_args = {"method": "fastv", "keep": 0.5, "frames": 4, "device": "cpu"}
    Path("direct.jsonl").write_text(
        "".join(
            json.dumps({"video": str(c), "question": q}) + "\n" for c, q in zip(clips, questions, strict=True)
        )
    )
    api.answer(["direct.jsonl"], max_new_tokens=TOY_MAX_NEW_TOKENS, run=api.RunOptions(out="direct-out.jsonl",
               workers=0), progress=False, model=str(tiny_model_dir), **model_args)  # fmt: skip
    by_video = {row["video_path"]: row for row in api.iter_rows("direct-out.jsonl")}
    replies = [by_video[str(c)]["answer"].split(TOY_UNTIL, 1)[0] for c in clips]
    assert all(replies) and all(by_video[str(c)]["keep_realized"] < 1.0 for c in clips)
    targets = [*replies[:2], replies[2] + " (not the reply)"]
    # The YAML's data_files path is relative: HF datasets resolves it against lmms-eval's cwd, tmp_path.
    Path("mlb_toy_docs.jsonl").write_text(
        "".join(json.dumps({"video": str(c), "question": q, "target": t}) + "\n"
                for c, q, t in zip(clips, questions, targets, strict=True))
    )  # fmt: skip
    path = [str(REPO), *entry_point_path(tmp_path), *STARTUP_PYTHONPATH]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "HF_HOME": str(tmp_path / "hf_home"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    args = ",".join([f"pretrained={tiny_model_dir}", *(f"{k}={v}" for k, v in model_args.items())])
    command = [sys.executable, "-m", "lmms_eval", "--model", "mlb", "--model_args", args, "--tasks", "mlb_toy",
               "--include_path", str(TASK_DIR), "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())
    assert results["results"]["mlb_toy"]["exact_match,none"] == pytest.approx(2 / 3)
    assert results["n-samples"]["mlb_toy"]["effective"] == 3
    (samples_file,) = (tmp_path / "out").rglob("*_samples_mlb_toy.jsonl")
    samples = sorted(read(samples_file), key=lambda sample: sample["doc_id"])
    assert [sample["doc_id"] for sample in samples] == [0, 1, 2]  # one sample per doc
    assert [sample["input"] for sample in samples] == questions  # the prompt as the task built it
    assert [sample["filtered_resps"] for sample in samples] == replies  # mlb answer's replies, to the token
    assert [sample["exact_match"] for sample in samples] == [1.0, 1.0, 0.0]


def test_generation_settings_mlb_cannot_honour_are_refused():
    """mlb decodes greedily: a task asking for sampling or beams is an error, not a silent greedy run."""
    from mlbcli.errors import UsageError
    from mlbcli.lmms_eval_plugin import _limit

    assert _limit({"max_new_tokens": 7, "temperature": 0, "do_sample": False}) == 7
    assert _limit({"temperature": 0.2, "do_sample": False, "max_new_tokens": 3}) == 3  # sampling off
    for kwargs in ({"do_sample": True}, {"temperature": 0.7}, {"num_beams": 4}):
        with pytest.raises(UsageError, match="greedily"):
            _limit(kwargs)
