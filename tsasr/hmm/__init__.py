"""Lexicon, phone set, GMM-HMM bootstrap, senone tree, alignments and decoding graph.

kaldi_hmm_gmm is imported here, before anything else can import kaldifst, kaldilm or
kaldi_decoder: importing any of those first makes the later `import kaldi_hmm_gmm` hang
(the wheels share OpenFst symbols and the second registration deadlocks).
"""

import kaldi_hmm_gmm  # noqa: F401  pylint: disable=unused-import
