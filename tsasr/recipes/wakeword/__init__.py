"""Recipe `wakeword`: two-stage wake-word detection with a monophone background model, and a
trainable DFT front-end (Wu et al. and Guo, Kumatani et al., ICASSP 2018).

corpus.py (espeak-ng wake-word corpus, confusables, negative streams, user recordings),
features.py (LFBE and DFT features, clean and noisy, frame targets), frontends.py (the TDB-HW
network on either front-end at matched parameters), spotter.py (stage 1: frame-CE training,
posteriors), detector.py (the streaming keyword/background Viterbi), stage2.py (the
second-stage classifier), det.py (DET metrics), stages.py (the chain and the report).
"""

from tsasr.recipe import Recipe
from tsasr.recipes.wakeword import config as config_lib
from tsasr.recipes.wakeword import stages as stages_lib

RECIPE = Recipe("wakeword", config_lib.base_config, config_lib.tiny, stages_lib.stages, stages_lib.REPORT)
