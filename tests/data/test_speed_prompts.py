"""Speed prompts: equal to lm-eval's own GSM8K rendering from the real data; the proxy tokenizer is honest."""

from __future__ import annotations

import os

import pytest
import yaml

from evo_eval.errors import DataError
from evo_eval.fewshot import per_document_shots
from evo_eval.paths import tasks_dir
from evo_eval.data.speed_prompts import ProxyTokenizer, find_gsm8k, gsm8k_prompts, proxy_limit


def _lm_eval_contexts(task_config: dict, benchdata, count: int, shots: int) -> list[str]:
    from lm_eval.api.task import ConfigurableTask

    gsm8k = benchdata / "gsm8k"
    config = {k: v for k, v in task_config.items() if k not in ("tag", "dataset_name")}
    config.update(dataset_path="json", num_fewshot=shots,
                  dataset_kwargs={"data_files": {"train": str(gsm8k / "train.jsonl"), "test": str(gsm8k / "test.jsonl")}})
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)  # simple_evaluate's default fewshot_random_seed
    with per_document_shots(1234):  # as `evo-eval run` draws shots: per document (evo_eval/fewshot.py)
        task.build_all_requests(limit=count, rank=0, world_size=1)
    return [instance.args[0] for instance in task.instances]


def test_prompts_equal_lm_eval_gsm8k(benchdata, small_mirror):
    import lm_eval

    with open(os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "gsm8k", "gsm8k.yaml")) as handle:
        config = yaml.safe_load(handle)
    expected = _lm_eval_contexts(config, benchdata, count=6, shots=4)
    got = [p.text for p in gsm8k_prompts(6, 4, small_mirror)]
    assert got == expected
    assert got[0].count("Question:") == 5 and got[0].endswith("Answer:")


def test_prompts_equal_our_evo_gsm8k_task(benchdata, small_mirror):
    """The speed prompts are the suite's: our evo_gsm8k task, read from the mirror, renders them too."""
    from lm_eval.tasks import TaskManager

    from evo_eval.data.prompts import rendered_requests

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata={"data_dir": str(small_mirror)})
    task = manager.load(["evo_gsm8k"])["tasks"]["evo_gsm8k"]
    ours = rendered_requests(task, limit=4, shots=4)
    assert [p.text for p in gsm8k_prompts(4, 4, small_mirror)] == [ours[i][0][0] for i in range(4)]


def test_chat_messages_carry_the_same_shots(small_mirror):
    (prompt,) = gsm8k_prompts(1, 4, small_mirror)
    assert len(prompt.messages) == 9
    assert [m["role"] for m in prompt.messages[:2]] == ["user", "assistant"]
    assert prompt.messages[1]["content"] in prompt.text
    assert prompt.text.endswith(prompt.messages[-1]["content"])


def test_missing_data_is_one_line(tmp_path):
    with pytest.raises(DataError, match="GSM8K is not in the data mirror") as err:
        find_gsm8k(tmp_path)
    assert "--data-dir" in str(err.value) and "\n" not in str(err.value)


def test_proxy_tokenizer_counts_pieces_and_avoids_special_ids():
    tok = ProxyTokenizer(limit=1000)
    ids = tok.encode("Janet has 16 eggs, and 12345 more.\n\nQuestion:")
    # Llama-3 pieces: Janet| has| |16| eggs|,| and| |123|45| more|.\n\n|Question|: (digits never take the space)
    assert len(ids) == 14
    assert ids == ProxyTokenizer(limit=1000).encode("Janet has 16 eggs, and 12345 more.\n\nQuestion:")
    assert all(0 <= i < 1000 for i in ids)
    assert proxy_limit({"mask_token_id": 126336, "eos_token_id": 126081}, 126464) == 126081
    assert proxy_limit({}, 64000) == 63984
    assert ProxyTokenizer(50, bos_token_id=7).encode("a b")[0] == 7
