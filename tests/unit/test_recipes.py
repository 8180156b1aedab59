"""Every shipped recipe validates; real model sizes dry-run on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scifm.cli import main
from scifm.model import count_params
from scifm.recipe import Recipe
from scifm.stages import count_params_on_meta

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

# Published totals of the shapes the recipes copy (tolerance covers norm weights).
SIZES = {
    "llama-125m.yaml": (100e6, 135e6),
    "llama-1b.yaml": (1.2e9, 1.3e9),
    "llama-7b.yaml": (6.7e9, 6.8e9),
    "llama-70b.yaml": (70.4e9, 70.7e9),
}


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_validates_and_round_trips(path: Path) -> None:
    recipe = Recipe.from_yaml(path)
    assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())) == recipe


@pytest.mark.parametrize("name", sorted(SIZES))
def test_real_sizes_dry_run_on_meta(name: str) -> None:
    recipe = Recipe.from_yaml(RECIPES / name)
    low, high = SIZES[name]
    counted = count_params_on_meta(recipe.model)
    assert counted == count_params(recipe.model) and low < counted < high


def test_demo_recipe_file_spells_out_the_defaults() -> None:
    assert Recipe.from_yaml(RECIPES / "demo.yaml") == Recipe()


def test_train_dry_run_prints_config_params_and_flops(capsys) -> None:
    assert main(["train", "--config", str(RECIPES / "llama-7b.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "num_params: 6,7" in out and "flops_per_token:" in out and "dim: 4096" in out
