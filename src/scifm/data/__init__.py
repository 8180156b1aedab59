"""Data stage: a weighted mixture of tokenized corpora -> packed training samples.

`mixture.DataConfig` names the corpora (prefixes of .bin/.idx files) and their weights;
`sampler.BlendedSamples` maps a global sample number to its tokens, deterministically, so
every rank and every resumed run agrees on what sample n is.
"""

from scifm.data.mixture import CorpusSource, DataConfig
from scifm.data.sampler import BlendedSamples

__all__ = ["BlendedSamples", "CorpusSource", "DataConfig"]
