"""The recipes tsasr ships, one package each (`asr`, ...); see tsasr.recipe for the interface.

A recipe package exposes `RECIPE` (a tsasr.recipe.Recipe). Packages here may import any of
the core; nothing in the core imports them (tsasr.recipe.load finds them by name).
"""
