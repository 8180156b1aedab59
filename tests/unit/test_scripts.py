"""Cluster launch templates: valid bash, launching `scifm train` through the site launcher."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.mark.parametrize(("name", "launcher"), [("slurm.sbatch", "srun"),
                                                ("pbs_mpiexec.sh", "mpiexec")])  # fmt: skip
def test_template_is_valid_bash_and_runs_scifm_train(name: str, launcher: str) -> None:
    path = SCRIPTS / name
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert f"{launcher} " in text and "python -m scifm.cli train --config" in text
    assert "python -m scifm.cli launch --max-restarts" in text  # restarts resume the run
