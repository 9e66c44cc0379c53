"""Losses: small pure functions of logits, targets and paddings."""

from tsasr.losses.frame_ce import frame_cross_entropy
from tsasr.losses.soft_ce import soft_cross_entropy, soft_targets
