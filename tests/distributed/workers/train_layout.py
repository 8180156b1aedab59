"""Worker: train the tiny recipe under the launcher's ranks with a given parallel layout.

argv: CONFIG_YAML OUT_DIR PARALLEL_JSON (the YAML holds data, model, train sections; the JSON
holds `ParallelConfig` fields, e.g. {"tp": 2, "sequence_parallel": true} or {"pp": 2}).
Used by the tensor- and pipeline-parallel tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from scifm.data import DataConfig
from scifm.model import ModelConfig
from scifm.parallel import ParallelConfig
from scifm.train import train
from scifm.train.config import TrainConfig


def main(config_path: str, out_dir: str, parallel_json: str) -> None:
    sections = yaml.safe_load(Path(config_path).read_text())
    train_cfg = TrainConfig.from_dict({**sections["train"], "out_dir": out_dir})
    parallel = ParallelConfig.from_dict(json.loads(parallel_json))
    train(ModelConfig.from_dict(sections["model"]), DataConfig.from_dict(sections["data"]),
          train_cfg, parallel=parallel)  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:4])
