"""The main recipe with online distillation: no soft labels are stored; the frozen teacher runs
inside the student's jitted training step on the clean features of each batch.

Run:      python -m tsasr.run experiments/online_top20_T2.py
Runtime:  as top20_T2.py, without the `label` stage (~20 s), but each student step also runs
          the teacher's forward pass and top-k: 540 ms instead of 460 ms per step on 2 CPU
          cores (bench/soft_labels.py), so student_ce takes ~1.2x as long. Worth it when
          storing labels costs more than recomputing them (GPU/TPU hosts, a large unlabelled
          corpus).
Expected: the targets are those of top20_T2.py (from float32 instead of stored float16 logits),
          so the student's WERs match top20_T2.py's to within the bootstrap intervals.
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "online_top20_T2"
    config.student.online = True
    config.lock()
    return config
