"""The teacher alone: data, alignments, GMM baseline, teacher CE and teacher LF-MMI.

Run:      python -m tsasr.run experiments/teacher_only.py
Runtime:  the first half of top20_T2.py (see its docstring); no labels, no student.
Expected: gmm, teacher_ce and teacher_seq rows in results.json; the teacher is clean-trained,
          so its noisy and re-recorded WERs are far above its clean WER.
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "teacher_only"
    config.until = "teacher_seq"
    config.lock()
    return config
