"""Pipeline parallelism on gloo reproduces the single-process run: losses and final weights.

The single-process run takes each global batch of 8 as 4 accumulated micro-batches of 2; the
pipeline runs take the same 4 micro-batches through their schedule (pp=2 with GPipe and 1F1B,
two stages of two layers; Interleaved1F1B with two stages per rank, four stages of one
layer), so every step's loss and gradient norm and the final weights agree to fp32 rounding.
Checkpoints keep the full model's parameter names: a pipeline run's checkpoint loads into
the whole single-device model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from scifm.checkpoint import latest_checkpoint, load_checkpoint
from scifm.data import CorpusSource, DataConfig
from scifm.model import ModelConfig, build_model
from scifm.train import train
from scifm.train.config import TrainConfig
from tests.distributed.conftest import run_torchrun
from tests.unit.data.conftest import make_corpora

pytestmark = pytest.mark.distributed

MODEL = {"dim": 32, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 3000,
         "multiple_of": 32, "max_seq_len": 16}  # fmt: skip
TRAIN = {"max_steps": 4, "warmup_steps": 2, "log_every": 1, "deterministic": True,
         "optimizer": {"lr": 2e-3, "eps": 1e-6}, "micro_batch_size": 2, "grad_accum_steps": 4,
         "checkpoint": {"every": 2},
         "grad_clip": 0.5, "num_threads": 1}  # fmt: skip


def metrics(run: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    model = build_model(ModelConfig.from_dict(MODEL), device="cpu", seed=None)
    state = {"model": model.state_dict()}
    load_checkpoint(latest_checkpoint(run).path, state)
    return state["model"]


def assert_same_run(expected_run: Path, got_run: Path) -> None:
    """Per-step losses and gradient norms (clipping is active: norms ~0.8 > 0.5) and the
    final weights agree within 1e-5."""
    for key in ("loss", "grad_norm"):
        expected, got = metrics(expected_run, key), metrics(got_run, key)
        assert len(got) == len(expected) == TRAIN["max_steps"]
        assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) < 1e-5, (
            key,
            expected,
            got,
        )
    reference, trained = weights(expected_run), weights(got_run)
    assert trained.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.allclose(trained[key], tensor, atol=1e-5, rtol=0), key


def reference_run(root: Path, train_overrides: dict | None = None) -> tuple[Path, Path]:
    """The single-process run in root/single and the same recipe as YAML for the workers."""
    corpora = make_corpora(root, docs_per_file=60)
    sources = [CorpusSource(name=n, prefixes=p, weight=w)
               for (n, p), w in zip(corpora.items(), (5, 3, 2), strict=True)]  # fmt: skip
    data = DataConfig(corpora=sources, seq_len=16, shuffle_window_docs=8)
    single = root / "single"
    train_section = {**TRAIN, **(train_overrides or {})}
    train(ModelConfig.from_dict(MODEL), data,
          TrainConfig.from_dict({**train_section, "out_dir": str(single)}))  # fmt: skip
    config = root / "recipe.yaml"
    recipe = {"data": data.to_dict(), "model": MODEL, "train": train_section}
    config.write_text(yaml.safe_dump(recipe))
    return config, single


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    return root, *reference_run(root)


@pytest.mark.parametrize(
    ("name", "parallel"),
    [
        ("1f1b", {"pp": 2, "pp_schedule": "1F1B"}),
        ("gpipe", {"pp": 2, "pp_schedule": "GPipe"}),
        ("interleaved", {"pp": 2, "pp_schedule": "Interleaved1F1B", "pp_stages_per_rank": 2}),
    ],
)
def test_pipeline_reproduces_the_single_process_run(setup, name, parallel) -> None:
    root, config, single = setup
    out = root / name
    run_torchrun("train_layout.py", 2, str(config), str(out), json.dumps(parallel), timeout=300)
    assert_same_run(single, out)
    meta = json.loads((latest_checkpoint(out).path / "metadata.json").read_text())
    assert meta["consumed_samples"] == 4 * 8 and meta["parallel"]["pp"] == 2
