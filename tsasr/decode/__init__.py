"""WFST decoding of per-frame senone scores and WER scoring.

Imports tsasr.hmm first for its import-order guard (see tsasr/hmm/__init__.py).
"""

import tsasr.hmm  # noqa: F401  pylint: disable=unused-import
