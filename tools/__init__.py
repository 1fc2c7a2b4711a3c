"""Tools of a clone of the repository (not part of the library, not in the wheel): the demo, the benchmark, the
random-model command and the workflow generator. Run from the repository root, e.g. ``python -m tools.demo``."""
