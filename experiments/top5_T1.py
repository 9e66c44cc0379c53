"""A narrow, cold variant: top-5 teacher senones at temperature T = 1.

Run:      python -m tsasr.run experiments/top5_T1.py
Runtime:  as top20_T2.py (labels are stored at k = 40 and shared by every k <= 40 variant).
"""

from tsasr.config import base_config


def get_config():
    config = base_config()
    config.name = "top5_T1"
    config.student.top_k = 5
    config.student.temperature = 1.0
    config.lock()
    return config
