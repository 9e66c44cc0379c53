"""A wide, warm variant: top-40 teacher senones at temperature T = 3.

Run:      python -m tsasr.run experiments/top40_T3.py
Runtime:  as top20_T2.py.
"""

from tsasr.config import base_config


def get_config():
    config = base_config()
    config.name = "top40_T3"
    config.student.top_k = 40
    config.student.temperature = 3.0
    config.lock()
    return config
