"""Where recipes, dataset entries and hostfiles are found.

Search order, later shadowing earlier: the pack bundled with the package, the project directory's own `recipes/`,
`hostfiles/` and `dataset_info.d/`, then each `--recipe-dir`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError
from llf_recipes.recipe import Recipe, load_recipe
from llf_recipes.suggest import nearest

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "samples"  # hand-written rows in each source layout, for offline runs


def read_recipe(path: Path, origin: str) -> Recipe:
    """A recipe file, or a plain LLaMA-Factory YAML as a one-stage recipe."""
    from llf_recipes import plain_config

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = ""  # load_recipe names the byte and line
    if text and plain_config.is_plain(text, where=str(path)):
        return plain_config.plain_recipe(path, text)
    return load_recipe(path, origin=origin)


def bundled_root() -> Path:
    """The pack inside an installed wheel (`_pack/`), or the checkout the package runs from."""
    packed = PACKAGE_DIR / "_pack"
    if packed.is_dir():
        return packed
    return PACKAGE_DIR.parent


@dataclass(frozen=True)
class DatasetDef:
    """One LLaMA-Factory dataset name, defined by a fragment in dataset_info.d/."""

    name: str
    entry: dict[str, Any]
    fragment: Path
    source: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    convert: dict[str, Any] = field(default_factory=dict)
    sample: str | None = None

    @property
    def ranking(self) -> bool:
        return bool(self.entry.get("ranking", False))

    @property
    def columns(self) -> dict[str, Any]:
        return self.entry.get("columns") or {}


def load_fragment(path: Path) -> list[DatasetDef]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LlfError(f"invalid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise LlfError("a dataset fragment needs an `entries` mapping of name -> LLaMA-Factory entry", key="entries", where=str(path))
    return [
        DatasetDef(
            name=name,
            entry=entry,
            fragment=path,
            source=data.get("source") or {},
            description=data.get("description", ""),
            convert=(data.get("convert") or {}).get(name, {}) if isinstance(data.get("convert"), dict) else {},
            sample=data.get("sample"),
        )
        for name, entry in entries.items()
    ]


@dataclass
class Catalog:
    roots: list[tuple[str, Path]]  # (origin label, directory holding recipes/ hostfiles/ dataset_info.d/)
    recipe_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def discover(cls, project_dir: str | Path | None = None, recipe_dirs: list[str] | None = None) -> Catalog:
        roots: list[tuple[str, Path]] = [("bundled", bundled_root())]
        project = Path(project_dir or Path.cwd()).resolve()
        if project != roots[0][1].resolve():
            roots.append(("project", project))
        extra = [Path(d).resolve() for d in recipe_dirs or []]
        for d in extra:
            if not d.is_dir():
                raise LlfError(f"--recipe-dir {d} is not a directory")
        return cls(roots=roots, recipe_dirs=extra)

    def search_dirs(self, sub: str) -> list[tuple[str, Path]]:
        found = [(label, root / sub) for label, root in self.roots if (root / sub).is_dir()]
        if sub == "recipes":
            found += [(f"--recipe-dir {d}", d) for d in self.recipe_dirs]
        return found

    # ------------------------------------------------------------ recipes
    @cached_property
    def recipe_paths(self) -> dict[str, tuple[str, Path]]:
        paths: dict[str, tuple[str, Path]] = {}
        for label, d in self.search_dirs("recipes"):
            for p in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                paths[p.stem] = (label, p)
        return dict(sorted(paths.items()))

    def recipe_names(self) -> list[str]:
        return list(self.recipe_paths)

    def recipe(self, name_or_path: str) -> Recipe:
        p = Path(name_or_path)
        if p.suffix in (".yaml", ".yml", ".json") and p.is_file():  # llamafactory-cli takes a JSON config too
            return read_recipe(p, origin="file")
        if name_or_path not in self.recipe_paths:
            guess = nearest(name_or_path, self.recipe_paths)
            raise LlfError(
                f"no recipe named {name_or_path!r}",
                fix=(f"did you mean {guess!r}? " if guess else "") + "`llf-recipes list` shows every recipe",
            )
        label, path = self.recipe_paths[name_or_path]
        return read_recipe(path, origin=label)

    def recipes(self) -> list[Recipe]:
        return [self.recipe(n) for n in self.recipe_paths]

    # ------------------------------------------------------------ hostfiles
    @cached_property
    def hostfile_paths(self) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for _label, d in self.search_dirs("hostfiles"):
            for p in sorted(d.iterdir()):
                if p.is_file() and not p.name.startswith(("README", ".")):
                    paths[p.stem] = p
        return dict(sorted(paths.items()))

    def hostfile(self, name_or_path: str) -> Path:
        p = Path(name_or_path)
        if p.is_file():
            return p
        if name_or_path in self.hostfile_paths:
            return self.hostfile_paths[name_or_path]
        guess = nearest(name_or_path, self.hostfile_paths)
        raise LlfError(
            f"hostfile {name_or_path!r} is neither a file nor a bundled hostfile",
            fix=(f"did you mean {guess!r}? " if guess else "") + f"bundled: {', '.join(self.hostfile_paths)}",
        )

    # ------------------------------------------------------------ datasets
    @cached_property
    def datasets(self) -> dict[str, DatasetDef]:
        defs: dict[str, DatasetDef] = {}
        for _label, d in self.search_dirs("dataset_info.d"):
            for p in sorted(d.glob("*.json")):
                for ds in load_fragment(p):
                    defs[ds.name] = ds
        return dict(sorted(defs.items()))

    def dataset(self, name: str) -> DatasetDef:
        if name not in self.datasets:
            guess = nearest(name, self.datasets)
            raise LlfError(
                f"no dataset entry named {name!r}",
                fix=(f"did you mean {guess!r}? " if guess else "") + "see dataset_info.d/",
            )
        return self.datasets[name]
