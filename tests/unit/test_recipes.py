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


def test_sections_left_empty_keep_the_defaults(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("train:\nmodel:\n")
    assert Recipe.from_yaml(path) == Recipe()


def test_a_budget_override_replaces_the_recipes_budget() -> None:
    recipe = Recipe.from_yaml(RECIPES / "debug.yaml", ["train.max_tokens=1000"])
    assert (recipe.train.max_steps, recipe.train.max_tokens) == (None, 1000)
    assert Recipe.from_yaml(RECIPES / "debug.yaml").train.max_steps == 60


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.seq_len=4096", "data.seq_len=4096 exceeds model.max_seq_len=256"),
        ("demo.weights={nope: 1}", "demo.weights names corpora not in corpus.corpora"),
        ("demo.weights={math: -1}", "weights must be >= 0"),
    ],
)
def test_cross_section_checks(override: str, message: str) -> None:
    from scifm.core.errors import ScifmError

    with pytest.raises(ScifmError, match=message):
        Recipe.from_dict({}, [override])
