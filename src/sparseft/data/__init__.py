"""Data: the packaged text sources (GSM problems and their generator, fortunes) and calibration sampling.

>>> from sparseft.data import gsm_problems, gsm_variants
>>> heldout = [p.text for p in gsm_problems()]          # the 100 original problems with worked answers
>>> train = [p.text for p in gsm_variants(500, seed=0)]  # fresh variants from the templates
"""

from sparseft.data.texts import GSMProblem, fortunes, gsm_problems, gsm_variants

__all__ = ["GSMProblem", "fortunes", "gsm_problems", "gsm_variants"]
