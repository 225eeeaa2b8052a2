"""What each benchmark's data is: its hub dataset, the configs and splits our tasks read, and where the
publishers' files come from.

One table serves three readers: ``data/mirror.py`` (which files an import converts, and the manifest's source
and licence), ``data/source.py`` (which hub dataset a task loads when no mirror is given) and
``tasks/generate.py`` (one leaf task per config of a multi-subject benchmark). A mirror stores every
(config, split) at ``<mirror>/<key>/<config>/<split>.jsonl`` in the hub dataset's own columns, so a
task's ``doc_to_text`` reads the same fields from either source.

Hub ids are the ones lm-eval 0.4.13's built-in tasks use (``dataset_path``/``dataset_name`` of
tasks/<name>/*.yaml), so a user without a mirror downloads exactly what lm-eval would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CONFIG = "default"  # mirror folder for hub datasets that have no named config


@dataclass(frozen=True)
class DataSpec:
    key: str  # suites.py benchmark key, and the mirror folder
    hub_path: str
    hub_configs: tuple[str | None, ...]  # None: the hub dataset's default config
    splits: tuple[str, ...]  # hub split names a mirror holds
    source: str  # publisher repository @ commit : path (shared/benchdata/README.md)
    licence: str
    # Splits a task may read that no public file carries: a mirror serves them empty and a run that
    # needs shots from them is refused up front (data.mirror_problem).
    hub_only_splits: tuple[str, ...] = ()
    gated: bool = False
    optional: bool = False  # not part of a default import (no redistributable file exists)
    src_folder: str = ""  # folder of the publishers' files under SRC (default: the key)
    notes: tuple[str, ...] = field(default=())

    @property
    def source_folder(self) -> str:
        return self.src_folder or self.key

    def folder(self, config: str | None) -> str:
        return config or DEFAULT_CONFIG

    @property
    def configs(self) -> tuple[str, ...]:
        return tuple(self.folder(c) for c in self.hub_configs)

    def hub_name(self, folder: str) -> str | None:
        return None if folder == DEFAULT_CONFIG else folder


# ---- subjects of the multi-subject benchmarks ----------------------------------------------------------

# MMLU's 57 subjects by lm-eval's category (tasks/mmlu/default/*.yaml tags; Hendrycks et al. 2021).
MMLU_CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
        "high_school_physics", "high_school_statistics", "machine_learning",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
        "professional_accounting", "professional_medicine", "virology",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies", "sociology",
        "us_foreign_policy",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ),
}
MMLU_SUBJECTS: tuple[str, ...] = tuple(sorted(s for group in MMLU_CATEGORIES.values() for s in group))

# CMMLU's 67 subjects with the Chinese names its prompts use (haonan-li/CMMLU src/mp_utils.py,
# as in lm-eval's tasks/cmmlu descriptions).
CMMLU_SUBJECTS: dict[str, str] = {
    "agronomy": "农学", "anatomy": "解剖学", "ancient_chinese": "古汉语", "arts": "艺术学",
    "astronomy": "天文学", "business_ethics": "商业伦理", "chinese_civil_service_exam": "中国公务员考试",
    "chinese_driving_rule": "中国驾驶规则", "chinese_food_culture": "中国饮食文化",
    "chinese_foreign_policy": "中国外交政策", "chinese_history": "中国历史", "chinese_literature": "中国文学",
    "chinese_teacher_qualification": "中国教师资格", "clinical_knowledge": "临床知识",
    "college_actuarial_science": "大学精算学", "college_education": "大学教育学",
    "college_engineering_hydrology": "大学工程水文学", "college_law": "大学法律",
    "college_mathematics": "大学数学", "college_medical_statistics": "大学医学统计",
    "college_medicine": "大学医学", "computer_science": "计算机科学", "computer_security": "计算机安全",
    "conceptual_physics": "概念物理学", "construction_project_management": "建设工程管理",
    "economics": "经济学", "education": "教育学", "electrical_engineering": "电气工程",
    "elementary_chinese": "小学语文", "elementary_commonsense": "小学常识",
    "elementary_information_and_technology": "小学信息技术", "elementary_mathematics": "初等数学",
    "ethnology": "民族学", "food_science": "食品科学", "genetics": "遗传学", "global_facts": "全球事实",
    "high_school_biology": "高中生物", "high_school_chemistry": "高中化学", "high_school_geography": "高中地理",
    "high_school_mathematics": "高中数学", "high_school_physics": "高中物理学", "high_school_politics": "高中政治",
    "human_sexuality": "人类性行为", "international_law": "国际法学", "journalism": "新闻学",
    "jurisprudence": "法理学", "legal_and_moral_basis": "法律与道德基础", "logical": "逻辑学",
    "machine_learning": "机器学习", "management": "管理学", "marketing": "市场营销",
    "marxist_theory": "马克思主义理论", "modern_chinese": "现代汉语", "nutrition": "营养学", "philosophy": "哲学",
    "professional_accounting": "专业会计", "professional_law": "专业法学", "professional_medicine": "专业医学",
    "professional_psychology": "专业心理学", "public_relations": "公共关系", "security_study": "安全研究",
    "sociology": "社会学", "sports_science": "体育学", "traditional_chinese_medicine": "中医中药",
    "virology": "病毒学", "world_history": "世界历史", "world_religions": "世界宗教",
}

# C-Eval's 52 subjects with their Chinese names (hkust-nlp/ceval subject_mapping.json).
CEVAL_SUBJECTS: dict[str, str] = {
    "accountant": "注册会计师", "advanced_mathematics": "高等数学", "art_studies": "艺术学",
    "basic_medicine": "基础医学", "business_administration": "工商管理",
    "chinese_language_and_literature": "中国语言文学", "civil_servant": "公务员", "clinical_medicine": "临床医学",
    "college_chemistry": "大学化学", "college_economics": "大学经济学", "college_physics": "大学物理",
    "college_programming": "大学编程", "computer_architecture": "计算机组成", "computer_network": "计算机网络",
    "discrete_mathematics": "离散数学", "education_science": "教育学", "electrical_engineer": "注册电气工程师",
    "environmental_impact_assessment_engineer": "环境影响评价工程师", "fire_engineer": "注册消防工程师",
    "high_school_biology": "高中生物", "high_school_chemistry": "高中化学", "high_school_chinese": "高中语文",
    "high_school_geography": "高中地理", "high_school_history": "高中历史", "high_school_mathematics": "高中数学",
    "high_school_physics": "高中物理", "high_school_politics": "高中政治",
    "ideological_and_moral_cultivation": "思想道德修养与法律基础", "law": "法学", "legal_professional": "法律职业资格",
    "logic": "逻辑学", "mao_zedong_thought": "毛泽东思想和中国特色社会主义理论体系概论", "marxism": "马克思主义基本原理",
    "metrology_engineer": "注册计量师", "middle_school_biology": "初中生物", "middle_school_chemistry": "初中化学",
    "middle_school_geography": "初中地理", "middle_school_history": "初中历史", "middle_school_mathematics": "初中数学",
    "middle_school_physics": "初中物理", "middle_school_politics": "初中政治", "modern_chinese_history": "近代史纲要",
    "operating_system": "操作系统", "physician": "医师资格", "plant_protection": "植物保护",
    "probability_and_statistics": "概率统计", "professional_tour_guide": "导游资格", "sports_science": "体育学",
    "tax_accountant": "税务师", "teacher_qualification": "教师资格", "urban_and_rural_planner": "注册城乡规划师",
    "veterinary_medicine": "兽医学",
}

BBH_TASKS: tuple[str, ...] = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)

# MATH (Hendrycks) config name by the `type` field of a problem; the hub's EleutherAI/hendrycks_math
# splits the benchmark into these seven configs.
MATH_TYPES: dict[str, str] = {
    "Algebra": "algebra",
    "Counting & Probability": "counting_and_probability",
    "Geometry": "geometry",
    "Intermediate Algebra": "intermediate_algebra",
    "Number Theory": "number_theory",
    "Prealgebra": "prealgebra",
    "Precalculus": "precalculus",
}

# MMLU-Pro's 14 categories as spelled in its `category` column.
MMLU_PRO_CATEGORIES: tuple[str, ...] = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
    "history", "law", "math", "other", "philosophy", "physics", "psychology",
)

HUMANEVAL_INFILLING: tuple[str, ...] = (
    "HumanEval-SingleLineInfilling", "HumanEval-MultiLineInfilling", "HumanEval-RandomSpanInfilling",
    "HumanEval-RandomSpanInfillingLight",
)

# MBPP's published split by task_id (Austin et al. 2021, §2.1): few-shot prompts 1-10, test 11-510,
# validation 511-600, train 601-974. The hub's google-research-datasets/mbpp uses the same ranges.
MBPP_SPLITS: tuple[tuple[str, int, int], ...] = (
    ("prompt", 1, 10), ("test", 11, 510), ("validation", 511, 600), ("train", 601, 974),
)


def _spec(*args, **kw) -> DataSpec:
    return DataSpec(*args, **kw)


CATALOG: dict[str, DataSpec] = {spec.key: spec for spec in (
    _spec("mmlu", "cais/mmlu", MMLU_SUBJECTS, ("test", "dev"),
          "HaeChan0305/MLILAB-FedLLM @d92730e8 : data/mmlu/ (re-layout of hendrycks/test)", "MIT"),
    _spec("mmlu_pro", "TIGER-Lab/MMLU-Pro", (None,), ("test",),
          "TIGER-AI-Lab/MMLU-Pro @f418b116 : eval_results/ (rebuilt)", "Apache-2.0",
          hub_only_splits=("validation",)),
    _spec("bbh", "SaylorTwift/bbh", BBH_TASKS, ("test", "fewshot"),
          "suzgunmirac/BIG-Bench-Hard @9ee07bd4 : bbh/, cot-prompts/", "MIT",
          notes=("split 'fewshot' holds the authors' 3 chain-of-thought exemplars from cot-prompts/; "
                 "the hub dataset has no such split, so tasks carry the same exemplars inline",)),
    _spec("arc_challenge", "allenai/ai2_arc", ("ARC-Challenge",), ("test", "validation"),
          "FormulaMonks/llm-benchmarker-suite @5d3c8009 : data/ARC/ARC-c/", "CC BY-SA 4.0"),
    _spec("hellaswag", "Rowan/hellaswag", (None,), ("validation",),
          "klosax/hellaswag_text_data @1105d370 : hellaswag_val_full.txt.bz2 (preprocessed)", "MIT",
          notes=("the publisher's copy is already preprocessed: ctx_a holds 'ctx' after the activity "
                 "label and ctx_b is empty, so lm-eval's process_docs rebuilds the same query",)),
    _spec("truthfulqa", "truthfulqa/truthful_qa", ("multiple_choice",), ("validation",),
          "sylinrl/TruthfulQA (fork koppula/TruthfulQA @4dee2311) : data/v0/mc_task.json", "Apache-2.0"),
    _spec("winogrande", "allenai/winogrande", ("winogrande_xl",), ("validation",),
          "mosaicml/llm-foundry @8c8dd48f : scripts/eval/local_data/language_understanding/winogrande.jsonl",
          "CC-BY"),
    _spec("piqa", "baber/piqa", (None,), ("validation",),
          "declare-lab/TEAM @e43753fd : data/piqa/", "AFL-3.0"),
    _spec("gsm8k", "openai/gsm8k", ("main",), ("test", "train"),
          "openai/grade-school-math @3101c7d5 : grade_school_math/data/", "MIT"),
    _spec("math", "EleutherAI/hendrycks_math", tuple(MATH_TYPES.values()), ("test",),
          "ZubinGou/math-evaluation-harness @db77bc6b : data/math/test.jsonl", "MIT"),
    _spec("gpqa", "Idavidrein/gpqa", ("gpqa_main",), ("train",),
          "idavidrein/gpqa : dataset.zip gpqa_main.csv (password-protected; supplied by the user)", "CC BY 4.0",
          gated=True, optional=True),
    _spec("humaneval", "openai/openai_humaneval", (None,), ("test",),
          "openai/human-eval : data/HumanEval.jsonl.gz", "MIT"),
    _spec("humaneval_fim", "loubnabnl/humaneval_infilling", HUMANEVAL_INFILLING, ("test",),
          "openai/human-eval-infilling @88062ff9 : data/", "MIT",
          src_folder="humaneval_infilling"),
    _spec("mbpp", "google-research-datasets/mbpp", ("full", "sanitized"), tuple(s for s, _, _ in MBPP_SPLITS),
          "FormulaMonks/llm-benchmarker-suite @5d3c8009 : data/mbpp/mbpp.jsonl; "
          "mrigankpawagi/PropertyEval @b2be813d : sanitized-mbpp.json", "CC BY 4.0"),
    _spec("cmmlu", "haonan-li/cmmlu", tuple(CMMLU_SUBJECTS), ("test", "dev"),
          "haonan-li/CMMLU @d6e7b716 : data/", "CC BY-NC-SA 4.0"),
    _spec("ceval", "ceval/ceval-exam", tuple(CEVAL_SUBJECTS), ("val", "dev"),
          "TsingmaoAI/MI-optimize @b147ba57 : mi_optimize/datasets/ceval-exam/", "CC BY-NC-SA 4.0"),
)}

GPQA_FIX = ("it needs the gated hub dataset Idavidrein/gpqa (accept its terms on huggingface.co, then "
            "`hf auth login`) or a mirror holding it (put gpqa_main.csv in SRC/gpqa/ and re-run "
            "`evo-eval data import SRC`)")
