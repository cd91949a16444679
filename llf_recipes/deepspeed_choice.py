"""Which DeepSpeed config a training stage gets, so that `render` shows exactly what `run` writes and uses.

In order: the command line's choice for the stage, `--set STAGE.deepspeed=...` or else `--set deepspeed=...`
(z0..z3_offload, none or a JSON path; `auto` is no choice); else the config's own `deepspeed:` (a file written in the
recipe or the LLaMA-Factory YAML); else the layout's profile (the `deepspeed` variable, `auto`: none on one device,
ZeRO-2 on one node, ZeRO-3 across nodes), which is added to the config when the template does not write the key
itself. `--set ~deepspeed` removes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llf_recipes.errors import LlfError
from llf_recipes.hardware import HostLayout, choose_deepspeed


def profile_file(variables: dict[str, Any], layout: HostLayout, search_dirs) -> tuple[str | None, Path | None]:
    """The profile the `deepspeed` variable asks for on this layout: (its name, the JSON file), or (None, None)."""
    request = variables.get("deepspeed", "auto")
    if isinstance(request, str) and request.endswith(".json"):
        path = Path(request)
        if not path.is_file():
            raise LlfError(f"DeepSpeed config {request} does not exist", key="deepspeed")
        return path.stem, path.resolve()
    profile = choose_deepspeed(layout, request, bool(variables.get("offload")))
    if profile is None:
        return None, None
    for _label, d in reversed(search_dirs):
        candidate = d / "deepspeed" / f"ds_{profile}_config.json"
        if candidate.is_file():
            return profile, candidate.resolve()
    raise LlfError(f"DeepSpeed profile ds_{profile}_config.json not found under recipes/deepspeed/", key="deepspeed")


def settle(config: dict[str, Any], blocks: dict[str, str], chosen: tuple[str | None, Path | None], *,
           explicit: bool, removed: bool) -> tuple[str | None, Path | None]:
    """Make the config's `deepspeed` key and the returned (profile, source file) agree; see the module's order."""
    profile, path = chosen
    if removed:
        return None, None
    value = config.get("deepspeed")
    if value is None:
        if path is not None:
            config["deepspeed"] = str(path)
            blocks.setdefault("deepspeed", "train")
        return profile, path
    if path is not None and value == str(path):
        return profile, path
    if explicit:  # the command line's choice beats the one written in the file
        if path is None:
            del config["deepspeed"]
            return None, None
        config["deepspeed"] = str(path)
        return profile, path
    if isinstance(value, str) and Path(value).is_file():  # the config's own file, copied beside the YAML
        return Path(value).stem, Path(value).resolve()
    return None, None  # an inline mapping, or a path the validation reports as missing
