"""Evaluation: prompts and answer parsing (`prompting`), lmms-eval's benchmark conventions
(`benchmarks`), and `mlb score` (`score`, its statistics in `stats`). Imports no torch and no model:
what differs per model family arrives as a parameter (the prompt profile, the post-prompt).
"""
