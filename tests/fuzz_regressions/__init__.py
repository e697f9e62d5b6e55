"""Kept fuzz counterexamples, replayed by ``test_fuzz_regressions.py``."""
