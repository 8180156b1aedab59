"""The tensor-parallel plans on 2 gloo ranks: exact forward/backward, DTensor parameters, errors.

The checks live in workers/tp_plans.py (they need a process group); here they run under
torchrun, tied and untied embeddings, with and without sequence parallelism.
"""

from __future__ import annotations

import pytest

from tests.distributed.conftest import run_torchrun

pytestmark = pytest.mark.distributed


def test_plans_reproduce_the_unsplit_model_on_two_ranks() -> None:
    run_torchrun("tp_plans.py", 2, timeout=180)
