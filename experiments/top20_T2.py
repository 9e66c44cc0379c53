"""The paper's best student: top-20 teacher senones at temperature T = 2.

Run:      python -m tsasr.run experiments/top20_T2.py          (built-in corpus, CPU)
Smoke:    python -m tsasr.run experiments/top20_T2.py --tiny   (about two minutes)
Runtime:  built-in corpus (1 h of speech), 2 CPU cores: data preparation ~2 minutes so far;
          the stages after `noisify` (alignment, teacher, labels, student) land with their issues.
Expected: corpus with 80 speakers in four speaker-disjoint splits, 16 min of media-like noise,
          noisy parallel copies of every split plus simulated-noisy and re-recorded test sets.
"""

from tsasr.config import base_config


def get_config():
    config = base_config()
    config.name = "top20_T2"
    config.lock()
    return config
