"""The recipe: typed, validated configuration of a whole job."""

from lmforge.recipe.loader import dump_recipe, load_recipe, parse_recipe, recipe_json_schema
from lmforge.recipe.reference import template, write_template
from lmforge.recipe.schema import Recipe

__all__ = [
    "Recipe",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "recipe_json_schema",
    "template",
    "write_template",
]
