"""The ``mammoseg`` command line. Every subcommand has ``--help``; those that report a result
print one JSON object on stdout with ``--json`` (logs go to stderr)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="mammoseg",
    help="Breast-lesion segmentation pipeline: synth → ingest → validate → preprocess → train → evaluate → publish.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Pipeline store: path, file:// or s3://bucket/prefix (default: MAMMOSEG_STORE_URL)."),
]


def _emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, default=str, sort_keys=True) + "\n")
    else:
        typer.echo(text)


def _settings(**overrides: Any):  # noqa: ANN202
    from mammoseg.settings import get_settings

    return get_settings(**overrides)


@app.command()
def synth(
    out: Annotated[str | None, typer.Option(help="Store URL to write into (default: <store>/raw/…).")] = None,
    store: StoreOpt = None,
    patients: Annotated[int, typer.Option(min=1, help="CBIS-DDSM-shaped patients.")] = 12,
    height: Annotated[int, typer.Option(min=32, help="Full-mammogram height in px.")] = 320,
    width: Annotated[int, typer.Option(min=32, help="Full-mammogram width in px.")] = 200,
    mias_images: Annotated[int, typer.Option(min=0, help="Held-out mini-MIAS-format images (0: none).")] = 12,
    mias_size: Annotated[int, typer.Option(min=32, help="MIAS image size (square).")] = 256,
    bad: Annotated[int, typer.Option(min=0, help="Deliberately defective cases to add (quarantine demo).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Write a synthetic CBIS-DDSM-shaped dataset (DICOM + the four CSVs) and a mini-MIAS-format set."""
    from tasks.synth import synthesize

    s = _settings(store_url=store)
    result = synthesize(
        store_url=s.store_url, out_url=out, patients=patients, height=height, width=width,
        mias_images=mias_images, mias_size=mias_size, bad=bad, seed=seed,
    )
    _emit(result, as_json, "\n".join(f"{k}: {v}" for k, v in result.items()))


@app.command()
def ingest(
    source: Annotated[str, typer.Option(help="Dataset root: path, file:// or s3://bucket/prefix.")],
    dataset: Annotated[str, typer.Option(help="cbis-ddsm | mini-mias | inbreast | cdd-cesm")] = "cbis-ddsm",
    store: StoreOpt = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: new).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Read a dataset from a store into the lesion table (Prefect flow); quarantine what is unusable."""
    from flows.ingest import ingest_flow
    from mammoseg.layout import new_run_id

    s = _settings(store_url=store)
    summary = ingest_flow(dataset=dataset, source_url=source, store_url=s.store_url, run_id=run_id or new_run_id())
    d = summary.model_dump()
    _emit(d, as_json, "\n".join(f"{k}: {v}" for k, v in d.items()))


@app.command()
def validate(
    source: Annotated[
        str | None,
        typer.Option(help="A folder with the dataset's metadata CSVs (e.g. ../shared/data/cbis-ddsm/csv): metadata suite only, no images read."),
    ] = None,
    lesions: Annotated[str | None, typer.Option(help="URI of an ingested lesion table (runs/<id>/lesions-ingest.csv).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset of --source (cbis-ddsm).")] = "cbis-ddsm",
    docs: Annotated[Path | None, typer.Option(help="Folder for the GX Data Docs HTML (default: <work_dir>/data_docs).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the Great Expectations metadata suite and print a pass/fail summary (exit 1 on failure)."""
    from mammoseg.validation import validate_frame

    s = _settings()
    if (source is None) == (lesions is None):
        raise typer.BadParameter("give exactly one of --source or --lesions")
    if source is not None:
        if dataset != "cbis-ddsm":
            raise typer.BadParameter("--source reads CBIS-DDSM CSV folders; ingest other datasets and use --lesions")
        from mammoseg.adapters.cbis_ddsm import read_cbis_csvs

        result = read_cbis_csvs(Path(source), pseudonym_key=s.pseudonym_key.get_secret_value())
        table, rejects = result.lesions, [r.__dict__ for r in result.rejects]
    else:
        from mammoseg.casetable import from_csv_bytes
        from mammoseg.storage import open_uri

        st, key = open_uri(lesions, s)  # type: ignore[arg-type]
        table, rejects = from_csv_bytes(st.read_bytes(key)), []
    report = validate_frame(table, "lesion_metadata", data_docs_dir=docs or s.work_dir / "data_docs")
    out = report.to_dict()
    out["unparseable_rows"] = rejects
    text = report.summary_text()
    if rejects:
        text += f"\n{len(rejects)} row(s) could not be parsed:\n" + "\n".join(f"  - {r['source']}: {r['reason']}" for r in rejects)
    _emit(out, as_json, text)
    if not report.success or rejects:
        raise typer.Exit(code=1)


@app.command()
def preprocess(
    lesions: Annotated[str, typer.Option(help="URI of a validated lesion table.")],
    source: Annotated[str, typer.Option(help="Dataset root the table's URIs point into.")],
    store: StoreOpt = None,
    size: Annotated[int | None, typer.Option(help="Output size in px (default: MAMMOSEG_IMAGE_SIZE).")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: new).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Crop, flip, CLAHE and resize every case (Prefect flow, cached by content)."""
    from flows.preprocess import preprocess_flow
    from mammoseg.layout import new_run_id

    s = _settings(store_url=store, image_size=size)
    summary = preprocess_flow(
        lesions_uri=lesions, source_url=source, store_url=s.store_url, run_id=run_id or new_run_id(), size=s.image_size
    )
    d = summary.model_dump()
    _emit(d, as_json, "\n".join(f"{k}: {v}" for k, v in d.items()))


@app.command()
def demo(
    store: StoreOpt = None,
    patients: Annotated[int, typer.Option(min=2, help="Synthetic patients.")] = 24,
    size: Annotated[int, typer.Option(min=32, help="Model input size in px.")] = 128,
    bad: Annotated[int, typer.Option(min=0, help="Defective cases to include (shows the quarantine).")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs (default: RetrainParams.epochs).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The main job on the embedded default: synthetic data → ingest → validate → preprocess →
    train → evaluate on a held-out MIAS-format set → publish. No server, no download."""
    from flows.demo import run_demo

    s = _settings(store_url=store)
    result = run_demo(s.store_url, patients=patients, size=size, bad=bad, seed=seed, epochs=epochs)
    _emit(result, as_json, _demo_text(result))


def _demo_text(result: dict[str, Any]) -> str:
    lines = ["mammoseg demo finished.", ""]
    for key in ("run_id", "store_url", "report_uri", "heldout_report_uri", "overlays_uri", "model_uri", "model_version", "gate"):
        if result.get(key):
            lines.append(f"  {key:<18} {result[key]}")
    m = result.get("metrics") or {}
    if m:
        ci = (m.get("ci95") or {}).get("dice_mean") or [float("nan")] * 2
        lines += [
            "",
            f"  held-out ({m.get('n_cases')} images, {m.get('n_patients')} patients): per-image mean Dice "
            f"{m['dice_mean']:.3f} (95% CI {ci[0]:.3f}–{ci[1]:.3f}), mean IoU {m['iou_mean']:.3f}, "
            f"pooled Dice {m['dice_pooled']:.3f}, threshold {m.get('threshold', float('nan')):.2f}",
        ]
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
