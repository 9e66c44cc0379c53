"""A narrow, cold variant: top-5 teacher senones at temperature T = 1.

Run:      python -m tsasr.run experiments/top5_T1.py
Runtime:  as top20_T2.py (labels are stored at k = 40 and shared by every k <= 40 variant); in
          its workdir (--workdir runs/top20_T2) the run took 2.8 minutes on 2 idle CPU cores on
          the one-hour corpus (the 6x regime gives each student 4.7x the audio).
Expected: (measured on the earlier one-hour dry corpus, before training lengths became epochs
          (teacher 200 / LF-MMI 40 steps, now 184 / 44), the recorded corpus and the 6x regime; not
          remeasured since) measured on the built-in corpus, WER % clean / noisy / rerecorded:
          student_ce 11.9 / 29.1 / 58.3, student_seq 13.0 / 28.9 / 59.3, within the bootstrap
          intervals of top20_T2's (student_seq 12.5 / 29.1 / 61.4).
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "top5_T1"
    config.student.top_k = 5
    config.student.temperature = 1.0
    config.lock()
    return config
