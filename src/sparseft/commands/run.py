"""`sparseft run RECIPE.yaml`: run a recipe's stages in order, resuming finished ones."""

from __future__ import annotations

import argparse
import json

EPILOG = """A recipe names the model, an output folder and the stages (prune, oneshot, finetune, quantize,
compress, eval); see `recipes/` and the README's recipe reference. Each stage writes OUTPUT/NN-KIND/;
rerunning skips stages whose folder is complete (use --restart to redo them)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a YAML recipe (stages in order, resumable)", description=__doc__.split("\n")[0],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="path to a YAML recipe")
    parser.add_argument("--restart", action="store_true", help="redo every stage, ignoring finished folders")
    parser.add_argument("--check", action="store_true", help="only validate the recipe and print it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.pipeline import run_recipe
    from sparseft.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.check:
        print(json.dumps(recipe.model_dump(exclude_none=True), indent=2))
        return 0
    records = run_recipe(recipe, resume=not args.restart)
    for record in records:
        print(json.dumps({k: v for k, v in record.items() if k != "layers"}, default=str))
    return 0
