"""``python -m evo_eval.cli`` (what ``accelerate launch -m evo_eval.cli`` runs)."""

from . import main

main()
