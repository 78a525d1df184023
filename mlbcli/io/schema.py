"""Output schemas (pyarrow), one per subcommand. Documented in README.md ("Output schema").

Bump `merging.SCHEMA_VERSION` (re-exported by `writers`) when a column changes meaning or type; adding
a nullable column is backwards compatible (old files merge with nulls).
"""

from __future__ import annotations

import pyarrow as pa

from mlbcli.io.kept_tokens import arrow_type as kept_tokens_type

_PROVENANCE = [
    pa.field("mlb_version", pa.string()),
    pa.field("torch_version", pa.string()),
    pa.field("transformers_version", pa.string()),
    pa.field("options_json", pa.string()),  # every option of the run, JSON (reproducibility)
    pa.field("started_at_utc", pa.string()),
]

_VIDEO = [
    pa.field("video_id", pa.string()),
    pa.field("video_path", pa.string()),
]

_TOKENS = [
    pa.field("model", pa.string()),
    pa.field("method", pa.string()),
    pa.field("keep_requested", pa.float64()),
    pa.field("frames", pa.int64()),  # frames actually sampled
    pa.field("frame_timestamps_s", pa.list_(pa.float64())),
    # null when the model got the frames and sizes asked for; else which family rule changed them (Qwen:
    # frames in pairs, --fps counts within [4, 768], the video's pixel budget), as qwen-vl-utils does
    pa.field("input_note", pa.string()),
    pa.field("visual_tokens_in", pa.int64()),
    pa.field("visual_tokens_kept", pa.int64()),
    pa.field("keep_realized", pa.float64()),  # measured kept / in
    # null when the method met its --keep budget (up to per-frame rounding) or has none; else why not
    pa.field("keep_note", pa.string()),
    # what fastvid/holitom/visionzip/flashvid read as saliency: "tower" or "proxy"; null for other methods
    pa.field("saliency", pa.string()),
    pa.field("flops_ratio", pa.float64()),  # visual-token LLM FLOPs vs unpruned (algorithms.md §2)
    # the same, with a method's attention probe passes added (two-stage mlb); = flops_ratio otherwise
    pa.field("flops_probe_ratio", pa.float64()),
    # visual KV entries read by the decode steps vs the unpruned model (decode-time KV pruning, e.g.
    # DyCoke stage 2, and pruning before decoding); null when nothing was generated
    pa.field("decode_kv_ratio", pa.float64()),
    pa.field("tokens_per_layer", pa.list_(pa.int64())),
    pa.field("kept_per_frame", pa.list_(pa.int64())),
    # which original visual tokens survived: a bitmap over [frames, grid_h, grid_w] (io/kept_tokens.py)
    pa.field("kept_tokens", kept_tokens_type()),
    pa.field("appended_tokens", pa.int64()),
    pa.field("attention_per_frame", pa.list_(pa.float64())),
    pa.field("attention_per_frame_debiased", pa.list_(pa.float64())),
    # decoder layers whose attention the method read (K - 1; on a hybrid decoder such as Qwen3.5 the
    # nearest full-attention layer, linear layers have none); null when it read none in this pass
    pa.field("attention_layers", pa.list_(pa.int64())),
    pa.field("segments", pa.string()),  # method diagnostics, JSON (segment bounds and budgets...)
    pa.field("decode_warning", pa.string()),  # e.g. a truncated file: only part of it could be decoded
    pa.field("decode_s", pa.float64()),
    pa.field("encode_s", pa.float64()),
    pa.field("prefill_s", pa.float64()),
]

# Columns of the commands that generate text (answer, summarize), after the token statistics.
_GENERATED = [
    pa.field("generate_s", pa.float64()),
    pa.field("generated_tokens", pa.int64()),
    pa.field("error", pa.string()),
    pa.field("origin", pa.string()),
]

ANSWER = pa.schema(
    _VIDEO
    + [
        pa.field("question_id", pa.string()),
        pa.field("question", pa.string()),
        pa.field("options", pa.list_(pa.string())),
        pa.field("ground_truth", pa.string()),
        pa.field("category", pa.string()),  # the manifest's category (per-category and macro scores)
        pa.field("benchmark", pa.string()),  # --benchmark: whose prompt, parse policy and aggregation
        pa.field(
            "prompt", pa.string()
        ),  # the exact text prompt given to the model (inside its chat template)
        pa.field("answer", pa.string()),  # the model's raw response
        # parsed option letter (multiple choice), else null; a benchmark's seeded guess when parse_failed
        pa.field("choice", pa.string()),
        pa.field("correct", pa.bool_()),  # null without ground truth, or excluded by the benchmark's policy
        pa.field("parse_failed", pa.bool_()),  # multiple choice: the reply named no single option
        # both graders (mlbcli/eval/grading.py); choice/correct above are the `grader` column's
        pa.field("choice_mlb", pa.string()),
        pa.field("correct_mlb", pa.bool_()),
        pa.field("parse_failed_mlb", pa.bool_()),
        pa.field("choice_lmms_eval", pa.string()),  # lmms-eval's reading; its seeded guess where it guesses
        pa.field("correct_lmms_eval", pa.bool_()),  # null without an lmms-eval benchmark or ground truth
        pa.field(
            "parse_failed_lmms_eval", pa.bool_()
        ),  # lmms-eval read no letter (it guessed, where it does)
        pa.field("grader", pa.string()),  # "lmms-eval" or "mlb": whose verdict choice/correct are
        pa.field("grade_error", pa.string()),  # why the row could not be graded (unreadable ground truth)
    ]
    + _TOKENS
    + _GENERATED
    + _PROVENANCE
)

COMPRESS = pa.schema(
    _VIDEO
    + [pa.field("question_id", pa.string()), pa.field("question", pa.string())]
    + _TOKENS
    + [pa.field("tokens_file", pa.string()), pa.field("error", pa.string()), pa.field("origin", pa.string())]
    + _PROVENANCE
)

SUMMARIZE = pa.schema(
    _VIDEO
    + [
        pa.field("fingerprint", pa.string()),  # size-mtime: a changed file is summarised again
        pa.field("prompt", pa.string()),
        pa.field("summary", pa.string()),
    ]
    + _TOKENS
    + _GENERATED
    + _PROVENANCE
)

SAMPLE = pa.schema(
    _VIDEO
    + [
        pa.field("num_frames_total", pa.int64()),
        pa.field("fps", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("codec", pa.string()),
        pa.field("backend", pa.string()),
        pa.field("frame_indices", pa.list_(pa.int64())),
        pa.field("timestamps_s", pa.list_(pa.float64())),
        pa.field("contact_sheet", pa.string()),
        pa.field("decode_warning", pa.string()),
        pa.field("decode_s", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("origin", pa.string()),
    ]
    + _PROVENANCE
)
