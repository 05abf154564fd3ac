"""Every recipe shipped in recipes/ validates against the stage settings (a renamed field breaks it here,
not in a user's run)."""

from pathlib import Path

import pytest

from sparseft.recipe import load_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages, f"{path.name} has no stages"


def test_there_are_recipes():
    assert len(RECIPES) >= 3
