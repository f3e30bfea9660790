"""Find and describe recipes: YAML configs of published experiments, runnable as they are.

Recipes ship inside the package (``deepmetric/assets/recipes/``; a checkout's top-level
``recipes/`` is a link to that folder), so ``deepmetric train NAME``, ``deepmetric recipes`` and
``load_config("NAME")`` work from a plain ``pip install`` as from a checkout. Each file starts
with a comment line ``# <one-line description>``, which ``deepmetric recipes`` prints. The demo
runs the ``demo_omniglot`` recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepmetric.errors import ConfigError, closest_match

PACKAGE_DIR = Path(__file__).resolve().parent
#: the recipes shipped inside the package (a checkout's top-level recipes/ links here)
PACKAGED_RECIPES_DIR = PACKAGE_DIR / "assets" / "recipes"
REPO_RECIPES_DIR = PACKAGED_RECIPES_DIR  # the earlier name
#: the demo's config: the demo_omniglot recipe
PACKAGED_DEMO = PACKAGED_RECIPES_DIR / "demo_omniglot.yaml"


@dataclass(frozen=True)
class Recipe:
    """A recipe file and the description from its first comment line."""

    name: str
    path: Path
    description: str


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes, in order."""
    return [d for d in (PACKAGED_RECIPES_DIR,) if d.is_dir()]


def read_description(path: Path) -> str:
    """The text of the first line if it is a ``# comment``, else a hint to add one."""
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline().strip()
    except OSError:
        return "(unreadable)"
    if first.startswith("#"):
        return first.lstrip("#").strip()
    return "(no description: start the file with a '# <one-line description>' line)"


def list_recipes() -> list[Recipe]:
    """All recipes, sorted by name."""
    found: dict[str, Recipe] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.y*ml")):
            if path.suffix in (".yaml", ".yml") and path.stem not in found:
                found[path.stem] = Recipe(path.stem, path, read_description(path))
    return [found[k] for k in sorted(found)]


def find_recipe(name_or_path: str | Path) -> Path:
    """Resolve a recipe given as a file path or as a recipe name (``demo_omniglot``).

    Raises :class:`ConfigError` naming the closest recipe when neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"recipe '{path}' is not a file; pass a YAML file or a name from `deepmetric recipes`")
    recipes = {r.name: r for r in list_recipes()}
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    if stem in recipes and (path.parent == Path(".") or path.parent.name == "recipes"):
        return recipes[stem].path  # a name, or recipes/NAME.yaml outside a checkout
    hint = closest_match(stem, recipes)
    did = f" Did you mean '{hint}'?" if hint else ""
    raise ConfigError(
        f"recipe '{name_or_path}' not found (no such file, no such recipe name).{did} "
        "Check the path, or run `deepmetric recipes` to list them."
    )
