"""Data stage: a weighted mixture of tokenized corpora -> packed training samples.

`mixture` reads and validates the mixture (corpora, their token files, weights); `sampler`
maps a global sample number to its tokens with every index computed on demand, so start-up
takes milliseconds, nothing is written, and every rank and resumed run agrees on sample n;
`loader` feeds a rank's share of each global batch to torch.
"""

from scifm.data.mixture import CorpusSource, DataConfig, Mixture, open_mixture, read_mixture_file
from scifm.data.sampler import BlendedSampler

__all__ = [
    "BlendedSampler",
    "CorpusSource",
    "DataConfig",
    "Mixture",
    "open_mixture",
    "read_mixture_file",
]
