"""A sandbox for model-written programs: one short-lived, confined interpreter per program.

runner.py (the harness side) starts child.py (the sandboxed side) and decides the verdict;
limits.py holds the resource limits. The public entry point is evo_eval.scoring.code_exec.
"""
