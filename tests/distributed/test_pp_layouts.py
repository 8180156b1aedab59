"""Pipeline parallelism across layouts: with FSDP2, and resuming another layout's checkpoint.

pp=2 x dp_shard=2 (four processes): each data rank reads half of every global batch of 8 as
two micro-batches of 2 and pipelines them over two stages sharded by FSDP2; the result is
the single-process run's (4 accumulated micro-batches of 2). A pipeline run also resumes
from a single-process checkpoint (model and AdamW state saved whole, loaded into two
stages) and finishes the run as the single process did. Under a batch-size ramp-up the
micro-batch count grows from 2 to 4 mid-run and the runner rebuilds its schedule for it.
pp=2 x tp=2 with sequence parallelism (four processes) reproduces the run too.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from scifm.checkpoint import latest_checkpoint
from tests.distributed.conftest import run_torchrun
from tests.distributed.test_pp_train import assert_same_run, metrics, reference_run

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp_layouts")
    return root, *reference_run(root)


def test_pipeline_resumes_a_single_process_checkpoint(setup) -> None:
    root, config, single = setup
    out = root / "resumed"
    shutil.copytree(single, out)
    shutil.rmtree(latest_checkpoint(out).path)  # keep step 2; steps 3 and 4 run under pp=2
    assert latest_checkpoint(out).step == 2
    parallel = {"pp": 2, "pp_schedule": "1F1B"}
    run_torchrun("train_layout.py", 2, str(config), str(out), json.dumps(parallel), timeout=300)
    assert_same_run(single, out)


def test_pipeline_with_fsdp2_reproduces_the_single_process_run(setup) -> None:
    root, config, single = setup
    recipe = root / "recipe-dp2.yaml"
    sections = yaml.safe_load(config.read_text())
    sections["train"]["grad_accum_steps"] = 2  # 2 data ranks x 2 micro-batches x 2 samples
    recipe.write_text(yaml.safe_dump(sections))
    out = root / "pp2-fsdp2"
    parallel = {"pp": 2, "pp_schedule": "1F1B", "dp_shard": 2}
    run_torchrun("train_layout.py", 4, str(recipe), str(out), json.dumps(parallel), timeout=300)
    assert_same_run(single, out)


def test_pipeline_with_tensor_and_sequence_parallelism(setup) -> None:
    """pp=2 x tp=2 (SP): a later stage receives sequence-split hidden states."""
    root, config, single = setup
    out = root / "pp2-tp2"
    parallel = {"pp": 2, "pp_schedule": "1F1B", "tp": 2, "sequence_parallel": True}
    run_torchrun("train_layout.py", 4, str(config), str(out), json.dumps(parallel), timeout=300)
    assert_same_run(single, out)


def test_pipeline_follows_a_batch_size_rampup(tmp_path) -> None:
    rampup = {"batch_rampup": {"start_batch_size": 4, "increment": 4, "ramp_samples": 8}}
    config, single = reference_run(tmp_path, rampup)
    assert metrics(single, "batch_size") == [4, 4, 8, 8]  # 2, then 4 micro-batches of 2
    out = tmp_path / "pp"
    parallel = {"pp": 2, "pp_schedule": "1F1B"}
    run_torchrun("train_layout.py", 2, str(config), str(out), json.dumps(parallel), timeout=300)
    assert_same_run(single, out)
