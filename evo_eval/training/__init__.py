"""Training Evo: the Appendix 7.1 objective as a function, and a small fine-tuning loop around it."""

from .finetune import FinetuneConfig, finetune, freeze_backbone, start_model, variant_config
from .objective import ObjectiveOutput, ObjectiveWeights, evo_objective

__all__ = ["FinetuneConfig", "ObjectiveOutput", "ObjectiveWeights", "evo_objective", "finetune", "freeze_backbone", "start_model",
           "variant_config"]
