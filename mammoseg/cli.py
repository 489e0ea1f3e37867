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


def _settings(**overrides: Any):
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
    patients: Annotated[int, typer.Option(min=2, help="Synthetic patients.")] = 40,
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


@app.command()
def retrain(
    source: Annotated[str, typer.Option(help="Training dataset root: path, file:// or s3://bucket/prefix.")],
    heldout_source: Annotated[str, typer.Option(help="Held-out dataset root (another dataset).")],
    dataset: Annotated[str, typer.Option(help="cbis-ddsm | cdd-cesm-dm | cdd-cesm | inbreast | mini-mias")] = "cbis-ddsm",
    heldout_dataset: Annotated[str, typer.Option(help="mini-mias | mini-mias-masses | inbreast | cdd-cesm-dm …")] = "mini-mias",
    store: StoreOpt = None,
    size: Annotated[int, typer.Option(help="Model input size in px.")] = 256,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    base_filters: Annotated[int, typer.Option(min=2)] = 16,
    depth: Annotated[int, typer.Option(min=1, max=6)] = 4,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    learning_rate: Annotated[float, typer.Option()] = 1e-3,
    loss: Annotated[str, typer.Option(help="focal | dice | focal_dice")] = "focal_dice",
    lesion_oversample: Annotated[float, typer.Option(help="Share of batches drawn from lesion images (0 = none).")] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: new; reuse one to resume its training).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest → validate → preprocess → train → evaluate on a held-out dataset → publish (Prefect flow)."""
    from flows.retrain import retrain_flow
    from mammoseg.layout import new_run_id
    from mammoseg.params import RetrainParams

    s = _settings(store_url=store)
    params = RetrainParams(
        size=size, epochs=epochs, base_filters=base_filters, depth=depth, batch_size=batch_size,
        learning_rate=learning_rate, loss=loss, lesion_oversample=lesion_oversample, seed=seed,
    )
    result = retrain_flow(dataset, source, heldout_dataset, heldout_source, s.store_url, run_id or new_run_id(), params)
    d = result.model_dump()
    _emit(d, as_json, _demo_text(d | {"store_url": s.store_url}))


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="URI or path of a model.keras (a published version's, or a run's).")],
    image: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="A DICOM, or a PNG/PGM (8- or 16-bit), or a JPEG.")],
    out: Annotated[Path, typer.Option(file_okay=False, help="Folder for <name>_mask.png and <name>_overlay.png.")],
    threshold: Annotated[float | None, typer.Option(help="Probability cut-off (default: the one chosen on validation, else 0.5).")] = None,
    laterality: Annotated[str | None, typer.Option(help="L or R, only to break a tie when the pixels cannot tell.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Segment lesions in one image; writes the mask and an overlay in the original image's geometry."""
    import tempfile

    import cv2
    import numpy as np

    from mammoseg.evaluation import overlay_png
    from mammoseg.imageio import encode_png8, load_image
    from mammoseg.inference import load_model, predict_original
    from mammoseg.storage import ObjectNotFound, open_uri

    s = _settings()
    uri = model if "://" in model else Path(model).resolve().as_uri()
    store, key = open_uri(uri, s)
    if threshold is None:
        try:
            config = json.loads(store.read_bytes("training_config.json"))
            threshold = float(config.get("threshold", 0.5))
        except ObjectNotFound:
            threshold = 0.5
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(store.read_bytes(key))
        net = load_model(path)
    pixels = load_image(image.read_bytes(), image.name)
    prob, _ = predict_original(net, pixels, laterality=laterality)
    mask = prob >= threshold
    out.mkdir(parents=True, exist_ok=True)
    mask_path = out / f"{image.stem}_mask.png"
    overlay_path = out / f"{image.stem}_overlay.png"
    mask_path.write_bytes(encode_png8((mask * 255).astype(np.uint8)))
    overlay_path.write_bytes(overlay_png(pixels, np.zeros_like(mask), mask, title=f"{image.stem} (red: prediction)", max_side=1024))
    n, _, _, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    result = {
        "mask": str(mask_path), "overlay": str(overlay_path), "threshold": threshold,
        "shape": list(mask.shape), "lesion_pixels": int(mask.sum()), "components": int(n - 1),
    }
    _emit(result, as_json, "\n".join(f"{k}: {v}" for k, v in result.items()))


@app.command()
def serve(
    api_url: Annotated[
        str | None,
        typer.Option(help="Prefect API (default: PREFECT_API_URL, else http://127.0.0.1:4200/api; started if local and silent)."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Poll the store for new objects (mammoseg.object.created).")] = True,
    store: StoreOpt = None,
) -> None:
    """Serve the `retrain-weekly` (cron) and `new-data` (debounced upload events) deployments
    against a Prefect server, starting a local one when none answers. Ctrl-C stops everything."""
    from mammoseg.serve import ServerUnavailable, run_service

    try:
        run_service(_settings(store_url=store), api_url=api_url, watch=watch)
    except ServerUnavailable as exc:
        typer.echo(f"mammoseg serve: {exc}", err=True)
        raise typer.Exit(code=2) from exc


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
            (
                f"  held-out ({m.get('n_cases')} images, {m.get('n_patients')} patients): per-image mean Dice "
                f"{m['dice_mean']:.3f} (95% CI {ci[0]:.3f}–{ci[1]:.3f}), mean IoU {m['iou_mean']:.3f}, "
                f"pooled Dice {m['dice_pooled']:.3f}, threshold {m.get('threshold', float('nan')):.2f}"
            ),
        ]
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
