"""The paper's best student: top-20 teacher senones at temperature T = 2.

Run:      python -m tsasr.run experiments/top20_T2.py          (built-in corpus, CPU)
Smoke:    python -m tsasr.run experiments/top20_T2.py --tiny   (about two minutes)
Runtime:  built-in corpus (1 h of speech), 2 idle CPU cores: 9.6 minutes (data 35 s, alignment
          and GMM 50 s, teacher CE + LF-MMI 3.5 min, labels 15 s, student CE + LF-MMI 4.4 min);
          a second run with nothing changed: seconds.
Expected: results.md with WER per test condition (clean / noisy / rerecorded), as measured:
          teacher_ce 9.4 / 91.4 / 99.2, teacher_seq 9.3 / 91.9 / 99.3, student_ce
          12.9 / 28.0 / 62.4, student_seq 12.6 / 28.5 / 62.6: the student is ~69 % (noisy)
          and ~37 % (rerecorded) relatively better than the sequence-trained teacher, and
          ~35 % worse on clean speech (bootstrap 95 % intervals about +-2 points clean,
          +-4 noisy, +-5 rerecorded).
"""

from tsasr.config import base_config


def get_config():
    config = base_config()
    config.name = "top20_T2"
    config.lock()
    return config
