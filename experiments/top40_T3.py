"""A wide, warm variant: top-40 teacher senones at temperature T = 3.

Run:      python -m tsasr.run experiments/top40_T3.py
Runtime:  as top20_T2.py; in its workdir (--workdir runs/top20_T2) the run took 3.1 minutes
          on 2 idle CPU cores on the one-hour corpus (the 6x regime gives each student 4.7x the audio).
Expected: (measured on the earlier one-hour dry corpus, before training lengths became epochs
          (teacher 200 / LF-MMI 40 steps, now 184 / 44), the recorded corpus and the 6x regime; not
          remeasured since) measured on the built-in corpus, WER % clean / noisy / rerecorded:
          student_ce 17.4 / 37.6 / 72.8, student_seq 15.6 / 34.2 / 69.7: the worst of the grid
          points measured, clearly worse than top20_T2 (student_seq 12.5 / 29.1 / 61.4) beyond the
          bootstrap intervals, with the flattest targets of the grid (40 senones at T = 3).
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "top40_T3"
    config.student.top_k = 40
    config.student.temperature = 3.0
    config.lock()
    return config
