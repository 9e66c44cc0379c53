"""Hard labels: the student learns the teacher's top-1 senone (k = 1), the classic baseline.

Run:      python -m tsasr.run experiments/hard_labels_k1.py
Runtime:  as top20_T2.py. Expected: worse than top-20 at T = 2, as in the paper (k = 1 loses
          the teacher's knowledge of which senones are confusable).
"""

from tsasr.config import base_config


def get_config():
    config = base_config()
    config.name = "hard_labels_k1"
    config.student.top_k = 1
    config.student.temperature = 1.0
    config.lock()
    return config
