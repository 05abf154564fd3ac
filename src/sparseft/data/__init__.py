"""Data: every text a stage reads (`sources.load_texts`: named sources with disjoint splits, or files),
the packaged corpora behind the names, and calibration sampling.

>>> from sparseft.data import load_texts
>>> heldout = load_texts("gsm", "test")                 # the 100 original problems with worked answers
>>> train = load_texts("gsm", "train", n=500)           # fresh variants from the templates
>>> clips = load_clips("librivox", "test")               # speech clips (audio file + transcript)
>>> pairs = load_pairs("gsm-en-de", "train")             # text pairs for seq2seq models
"""

from sparseft.data.pairs import PAIR_SOURCES, TextPair, load_pairs
from sparseft.data.sources import SOURCES, SPLITS, load_texts
from sparseft.data.speech import SPEECH_SOURCES, SpeechClip, load_clips
from sparseft.data.texts import GSMProblem, fortunes, gsm_problems, gsm_variants

__all__ = [
    "PAIR_SOURCES", "SOURCES", "SPEECH_SOURCES", "SPLITS", "GSMProblem", "SpeechClip", "TextPair", "fortunes",
    "gsm_problems", "gsm_variants", "load_clips", "load_pairs", "load_texts",
]  # fmt: skip
