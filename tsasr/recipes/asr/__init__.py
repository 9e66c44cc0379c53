"""Recipe `asr`: teacher-student training of hybrid DNN-HMM acoustic models for noise-robust
speech recognition (Mošner et al., ICASSP 2019).

A teacher trained on clean labelled speech soft-labels clean audio (top-k senones at
temperature T); a student learns those labels on noisy parallel copies; both are then
sequence-trained (LF-MMI); every system is decoded with a WFST and scored by WER on the
clean, noisy and re-recorded test conditions. Stages: tsasr.recipes.asr.stages.
"""

import importlib

from tsasr.data import layout
from tsasr.evaluate.report import Metric, ReportSpec
from tsasr.recipe import Recipe
from tsasr.recipes.asr import checks
from tsasr.recipes.asr.config import base_config, tiny
from tsasr.recipes.asr.grid import with_grid
from tsasr.recipes.asr.stages import recipe_stages

REPORT = ReportSpec(
    metrics=(Metric("wer", "WER (%)", lower_is_better=True, digits=2),),
    conditions=tuple(layout.CONDITIONS),
    system_order=(
        "gmm",
        "teacher_ce",
        "teacher_seq",
        "multicondition_ce",
        "multicondition_seq",
        "student_ce",
        "student_ce_from_teacher_seq",
        "student_seq",
    ),
    # The paper reports students against both teachers: the sequence-trained one first.
    references=("teacher_seq", "teacher_ce"),
    curves=("loss", "frame_accuracy"),
    description=(
        "WER in percent per test condition, with 95 % bootstrap intervals in brackets (paired with "
        "the system's reference where it has one: gmm for teacher_ce, the teacher for the others)."
    ),
    extra_sections=("sweep_k_T.md",),
)


def _utterance_errors(workdir, system: str, condition: str) -> dict[str, float]:
    """tsasr.recipes.asr.evaluate.utterance_errors, imported when called: loading the recipe
    loads no Kaldi wheel."""
    return importlib.import_module("tsasr.recipes.asr.evaluate").utterance_errors(workdir, system, condition)


RECIPE = Recipe(
    name="asr",
    base_config=base_config,
    tiny=tiny,
    stages=recipe_stages,
    report=REPORT,
    with_sweep=with_grid,
    check=checks.problems,
    item_errors=_utterance_errors,
)

__all__ = ["RECIPE", "REPORT", "base_config", "tiny"]
