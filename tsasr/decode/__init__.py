"""WFST decoding of per-frame senone scores and WER scoring.

The Kaldi wheels come from tsasr.kaldi, which owns their import order.
"""
