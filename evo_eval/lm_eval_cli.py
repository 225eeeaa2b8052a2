"""lm-eval's own command line, with evo-eval's backends and tasks available.

lm-eval 0.4.13 discovers no plugins, so its ``lm-eval`` command cannot see our models. This runs the
very same CLI after registering them:

    python -m evo_eval.lm_eval_cli run --model evo --model_args pretrained=DIR,card=evo-8b \
        --tasks evo_gsm8k --include_path tasks --metadata '{"data_dir": "~/.cache/evo-eval/data"}'
"""

from __future__ import annotations


def main() -> None:
    import evo_eval.adapters  # noqa: F401  (registers evo, llada, mdlm, bd3lm, ard)
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
