"""scifm: build foundation models for science end to end.

Stages pass on-disk artifacts in one direction:
corpora -> curate -> tokens (.bin/.idx) -> data (blended sampling) -> train -> checkpoint
-> convert -> eval -> serve. Each subpackage is one stage; `scifm.cli` wires them to commands.
"""

__version__ = "0.1.0"
