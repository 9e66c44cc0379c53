"""The fair baseline without distillation: the teacher's recipe trained on the noisy labelled data.

Run:      python -m tsasr.run experiments/multicondition.py
Runtime:  top20_T2.py plus one more CE and LF-MMI training on the noisy labelled data.
Expected: multicondition_ce / multicondition_seq rows beside the students: multi-condition
          training sees the same noisy audio as the student but only the labelled part of it
          and only hard alignments, so the student (which also uses the unlabelled audio)
          should beat it on noisy and re-recorded speech.
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "multicondition"
    config.baselines.multicondition = True
    config.lock()
    return config
