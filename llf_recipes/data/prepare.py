"""prepare = download (or the bundled sample) -> convert -> check -> register, for each dataset entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llf_recipes.catalog import SAMPLES_DIR, Catalog, DatasetDef
from llf_recipes.data.check import check_file
from llf_recipes.data.convert import convert_file
from llf_recipes.data.registry import register
from llf_recipes.errors import LlfError


@dataclass
class Prepared:
    name: str
    sources: list[Path]
    output: Path
    rows: int
    rejected: int


def check_stage(ds: DatasetDef) -> str:
    if ds.convert.get("check"):
        return ds.convert["check"]
    if ds.ranking:
        return "dpo"
    if ds.columns.get("kto_tag"):
        return "kto"
    return "sft" if ds.columns.get("response") else "pt"


def split_files(files: list[Path], split: str | None) -> list[Path]:
    """The shards of one split among a snapshot's data files (`data/train_prefs-00000-of-00001.parquet`...)."""
    if not split or len(files) == 1:
        return files
    chosen = [f for f in files if f.name.split("-")[0].split(".")[0] == split or f.parent.name == split]
    if not chosen:
        raise LlfError(f"no data file for split {split!r} among: {', '.join(f.name for f in files)}", key="split")
    return chosen


def sources_for(ds: DatasetDef, sample: bool, hub: str | None, catalog: Catalog) -> list[Path]:
    if sample:
        if not ds.sample:
            raise LlfError(f"entry {ds.name!r} has no bundled sample", where=str(ds.fragment))
        return [SAMPLES_DIR / ds.sample]
    from llf_recipes.data.download import download

    got = download(ds.name, hub=hub, catalog=catalog)
    return split_files(got.files, ds.convert.get("split") or ds.source.get("split"))


def prepare(names: list[str], data_dir: str | Path, *, catalog: Catalog, sample: bool = False, hub: str | None = None,
            skip_bad: bool = False, limit: int | None = None, force: bool = False, say=print) -> list[Prepared]:
    data_dir = Path(data_dir)
    done: list[Prepared] = []
    for name in names:
        ds = catalog.dataset(name)
        kind = ds.convert.get("kind")
        if not kind:
            raise LlfError(f"entry {name!r} declares no conversion", where=str(ds.fragment))
        sources = sources_for(ds, sample, hub, catalog)
        output = data_dir / ds.entry["file_name"]
        report = convert_file(sources, output, kind, skip_bad=skip_bad, limit=limit, options=ds.convert.get("options"))
        stage = check_stage(ds)
        checked = check_file(output, stage, ds.entry) if stage != "none" else None
        if checked is not None and checked.bad:
            first = checked.bad[0]
            raise LlfError(f"{len(checked.bad)} converted row(s) unusable for stage {check_stage(ds)}; first: {first.where}: "
                           f"{first.message}", where=str(output))
        say(f"{name}: {report.written} row(s) -> {output} ({kind}" + (f", checked for {stage})" if checked else ")")
            + (f", {report.dropped} dropped by the conversion" if report.dropped else "")
            + (f", {len(report.rejected)} rejected into {report.rejects_path}" if report.rejected else ""))
        done.append(Prepared(name, sources, output, report.written, len(report.rejected)))
    changes = register(data_dir, {p.name: catalog.dataset(p.name).entry for p in done}, force=force)
    written = [c.name for c in changes if c.action != "unchanged"]
    info = data_dir / "dataset_info.json"
    say(f"registered {', '.join(written)} in {info}" if written else f"{info}: already registered, unchanged")
    return done
