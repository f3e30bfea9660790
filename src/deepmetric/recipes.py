"""Find and describe recipes: YAML configs of published experiments, runnable as they are.

Recipes live in the repository's ``recipes/`` folder (next to ``src/``; found automatically for
a checkout or an editable install). Each file starts with a comment line
``# <one-line description>``, which ``deepmetric recipes`` prints. The demo's config also ships
inside the package (``deepmetric/assets/demo.yaml``) so ``deepmetric demo`` works from any
install.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepmetric.errors import ConfigError, closest_match

PACKAGE_DIR = Path(__file__).resolve().parent
#: the repository's recipes/ folder (src layout: <repo>/src/deepmetric/recipes.py)
REPO_RECIPES_DIR = PACKAGE_DIR.parents[1] / "recipes"
#: the demo config shipped inside the package
PACKAGED_DEMO = PACKAGE_DIR / "assets" / "demo.yaml"


@dataclass(frozen=True)
class Recipe:
    """A recipe file and the description from its first comment line."""

    name: str
    path: Path
    description: str


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes, in order."""
    return [d for d in (REPO_RECIPES_DIR,) if d.is_dir()]


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
    """All recipes, sorted by name (the packaged demo config is listed when no checkout has it)."""
    found: dict[str, Recipe] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.y*ml")):
            if path.suffix in (".yaml", ".yml") and path.stem not in found:
                found[path.stem] = Recipe(path.stem, path, read_description(path))
    if "demo_omniglot" not in found and PACKAGED_DEMO.is_file():
        found["demo_omniglot"] = Recipe("demo_omniglot", PACKAGED_DEMO, read_description(PACKAGED_DEMO))
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
    if stem in recipes and path.parent == Path("."):
        return recipes[stem].path
    hint = closest_match(stem, recipes)
    did = f" Did you mean '{hint}'?" if hint else ""
    raise ConfigError(
        f"recipe '{name_or_path}' not found (no such file, no such recipe name).{did} "
        "Check the path, or run `deepmetric recipes` to list them."
    )
