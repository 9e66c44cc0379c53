"""IUSP knowledge distillation for audio tagging (Chang et al., Interspeech 2020): teacher, then
every student size x {no distillation, KD, KD + SP, KD + IUSP}, on the built-in urban sound
tagging corpus (2 s clips: SONYC's are 10 s; sized for 15 minutes on 2 CPU cores).

Run:      python -m tsasr.run experiments/tagging_iusp.py
Smoke:    python -m tsasr.run experiments/tagging_iusp.py --tiny   (under a minute)
Runtime:  8.3 min (499 s) on 2 idle CPU cores from a fresh clone (AMD EPYC, 2026-12-06): corpus
          17 s, teacher 71 s, student_s1 42 s, s2 60 s, s3 99 s, s4 197 s, score 12 s (21 min when
          the machine was shared with three other jobs; the same numbers to the digit).
Expected: (as measured, seed 0; 448 training clips from 16 sensors, 224 test clips from 8 others)
          micro-AUPRC on test, 95 % bootstrap intervals about +-0.03:
          teacher 0.764;  bce / kd / kd_sp / kd_iusp:
          s1 (conv + LSTM, 38k params) 0.700 / 0.709 / 0.725 / 0.709
          s2 (CNN 2-16, 1.9k)          0.555 / 0.542 / 0.556 / 0.489
          s3 (CNN 4-32, 6.8k)          0.636 / 0.555 / 0.596 / 0.646
          s4 (CNN 8-64, 26k)           0.673 / 0.674 / 0.723 / 0.675
          IUSP beats SP at 1 of 4 sizes only (s3, where SP and KD hurt); SP beats IUSP at s1, s2
          and s4 (paired intervals of IUSP - SP exclude 0 at every size). The paper's IUSP/SP
          gain ratio 1.27-2.22 is NOT reproduced here (ratios 0.37, -44, n/a, 0.05).
"""

from tsasr.recipes.tagging import base_config


def get_config():
    config = base_config()
    config.name = "tagging_iusp"
    config.lock()
    return config
