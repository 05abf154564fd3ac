"""Data: every text a stage reads (`sources.load_texts`: named sources with disjoint splits, or files),
the packaged corpora behind the names, and calibration sampling.

>>> from sparseft.data import load_texts
>>> heldout = load_texts("gsm", "test")                 # the 100 original problems with worked answers
>>> train = load_texts("gsm", "train", n=500)           # fresh variants from the templates
"""

from sparseft.data.sources import SOURCES, SPLITS, load_texts
from sparseft.data.texts import GSMProblem, fortunes, gsm_problems, gsm_variants

__all__ = ["SOURCES", "SPLITS", "GSMProblem", "fortunes", "gsm_problems", "gsm_variants", "load_texts"]
