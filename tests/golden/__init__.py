"""Golden fixtures: the official Hugging Face processors' outputs on fixed frames (see make_golden.py)."""
