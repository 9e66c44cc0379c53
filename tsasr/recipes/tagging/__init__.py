"""Recipe `tagging`: knowledge distillation for audio tagging with intra-utterance similarity
preserving (IUSP) distillation (Chang, Kao, Sun, Wang, Interspeech 2020, arXiv 2009.01759).

A VGG-like CNN teacher on 64-band log-mel, then students of several sizes, each trained with
BCE only, + KD, + KD + SP-KD, + KD + IUSP (the methods of one size together on the trainer's
members axis), scored with DCASE 2019 Task 5 micro-AUPRC. Modules: config (every field),
corpus (synthesised urban sound tagging corpus, SONYC-UST importer), models, losses, metrics,
stages.
"""

from tsasr.evaluate.report import Metric, ReportSpec
from tsasr.recipe import Recipe
from tsasr.recipes.tagging.config import CLASSES, METHODS, base_config, tiny


def _stages(config):
    from tsasr.recipes.tagging import stages  # JAX only when a run starts, not when a config loads

    return stages.stages(config)


REPORT = ReportSpec(
    metrics=(
        Metric("micro_auprc", "micro-AUPRC", lower_is_better=False, digits=3),
        Metric("macro_auprc", "macro-AUPRC", lower_is_better=False, digits=3),
        Metric("sklearn_micro_ap", "sklearn micro AP", lower_is_better=False, digits=3),
    ),
    conditions=("test",),
    system_order=("teacher",),
    references=("teacher",),
    curves=("loss", "bce"),
    description=(
        "DCASE 2019 Task 5 micro-AUPRC (threshold sweep over pooled TP/FP/FN), macro-AUPRC and sklearn's micro "
        "average precision on the test sensors' clips, with 95 % bootstrap intervals over clips in brackets. "
        "Systems student_<size>_<method>: bce = no distillation, kd = + KD, kd_sp = + KD + SP-KD, kd_iusp = + KD + IUSP."
    ),
    extra_sections=("score/iusp_gains.md",),
)

RECIPE = Recipe(name="tagging", base_config=base_config, tiny=tiny, stages=_stages, report=REPORT)

__all__ = ["CLASSES", "METHODS", "RECIPE", "REPORT", "base_config", "tiny"]
