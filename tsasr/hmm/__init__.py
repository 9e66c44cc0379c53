"""Lexicon, phone set, GMM-HMM bootstrap, senone tree, alignments and decoding graph.

Modules that need the Kaldi wheels take them from tsasr.kaldi, which owns their import
order; the others (config, phones, context, tree, den_graph) load no Kaldi wheel.
"""
