from evo_eval.models.checkpoints import looks_like_hub_id


def test_hub_ids_may_carry_versions_with_dots():
    for name in ("meta-llama/Llama-3.1-8B", "GSAI-ML/LLaDA-1.5", "kuleshov-group/mdlm-owt"):
        assert looks_like_hub_id(name)
    for name in ("./ckpt/evo", "/abs/ckpt", "~/ckpt/x", "a/b/c", "plain"):
        assert not looks_like_hub_id(name)
