"""Recipe `anomaly`: unsupervised anomalous sound detection (DCASE 2020 Task 2).

Six machine types (fan, pump, slider, valve, ToyCar, ToyConveyor), normal training clips
only; systems: the official dense-autoencoder baseline, a self-supervised machine-ID
classifier, Group MADE, and the ensemble of the last two (Amazon's entries, places 1-3 of
117). Metrics: AUC and pAUC (FPR <= 0.1) per machine ID, averaged per type, with bootstrap
intervals. Stages: tsasr.recipes.anomaly.stages.
"""

from tsasr.evaluate.report import Metric, ReportSpec
from tsasr.recipe import Recipe
from tsasr.recipes.anomaly.config import TYPES, base_config, tiny
from tsasr.recipes.anomaly.stages import recipe_stages

REPORT = ReportSpec(
    metrics=(
        Metric("auc", "AUC (%)", lower_is_better=False, digits=1),
        Metric("pauc", "pAUC (%)", lower_is_better=False, digits=1),
    ),
    conditions=TYPES + ("mean",),
    system_order=("ae_baseline", "id_classifier", "group_made", "ensemble"),
    references=("ae_baseline",),
    curves=("loss",),
    description=(
        "AUC and pAUC (FPR <= 0.1, McClish-standardised as sklearn's roc_auc_score(max_fpr=0.1)) in percent "
        "per machine type: per machine ID, then averaged over the type's IDs; `mean` averages the types. "
        "95 % bootstrap intervals over test clips (resampled within each ID and class) in brackets."
    ),
    extra_sections=("scores/anomaly.md",),
)

RECIPE = Recipe(name="anomaly", base_config=base_config, tiny=tiny, stages=recipe_stages, report=REPORT)

__all__ = ["RECIPE", "REPORT", "base_config", "tiny"]
