"""The ``mammoseg`` command line. Every subcommand has ``--help``; those that report a result
print one JSON object on stdout with ``--json`` (logs go to stderr)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

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
    patients: Annotated[int | None, typer.Option(min=1, help="CBIS-DDSM-shaped patients (default: synthesize()'s, tasks/synth.py).")] = None,
    height: Annotated[int | None, typer.Option(min=32, help="Full-mammogram height in px.")] = None,
    width: Annotated[int | None, typer.Option(min=32, help="Full-mammogram width in px.")] = None,
    mias_images: Annotated[int | None, typer.Option(min=0, help="Held-out mini-MIAS-format images (0: none).")] = None,
    mias_size: Annotated[int | None, typer.Option(min=32, help="MIAS image size (square).")] = None,
    bad: Annotated[int, typer.Option(min=0, help="Deliberately defective cases to add (quarantine demo).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Write a synthetic CBIS-DDSM-shaped dataset (DICOM + the four CSVs) and a mini-MIAS-format set."""
    from tasks.synth import synthesize

    s = _settings(store_url=store)
    # options left out take synthesize()'s defaults (one default per knob, in tasks/synth.py)
    given = {"patients": patients, "height": height, "width": width, "mias_images": mias_images, "mias_size": mias_size}
    result = synthesize(store_url=s.store_url, out_url=out, bad=bad, seed=seed,
                        **{k: v for k, v in given.items() if v is not None})
    _emit(result, as_json, "\n".join(f"{k}: {v}" for k, v in result.items()))


@app.command()
def ingest(
    source: Annotated[str, typer.Option(help="Dataset root: path, file://, s3://bucket/prefix, or a PACS dicomweb://host:port/dicom-web (optionally /<StudyInstanceUID>).")],
    dataset: Annotated[str, typer.Option(help="cbis-ddsm | mini-mias | inbreast | cdd-cesm | dicom (unlabelled DICOMs, e.g. a PACS)")] = "cbis-ddsm",
    store: StoreOpt = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: new).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Read a dataset from a store into the lesion table (Prefect flow); quarantine what is unusable."""
    from flows.ingest import ingest_flow
    from mammoseg.layout import new_run_id

    s = _settings(store_url=store)
    summary = ingest_flow(dataset=dataset, source_url=source, store_url=s.store_url, run_id=run_id or new_run_id())
    d = summary.model_dump()  # report_uri: the flow's run report (runs/<id>/report-ingest.json)
    lines = [f"{k}: {v}" for k, v in d.items() if k != "report_uri"]
    _emit(d, as_json, "\n".join([*lines, f"run report: {d['report_uri']}"]))


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
        from mammoseg.settings import require_pseudonym_key

        result = read_cbis_csvs(Path(source), pseudonym_key=require_pseudonym_key(s))
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
    from mammoseg.preprocess.params import PreprocessParams

    s = _settings(store_url=store, image_size=size)
    summary = preprocess_flow(
        lesions_uri=lesions, source_url=source, store_url=s.store_url, run_id=run_id or new_run_id(),
        params=PreprocessParams.from_settings(s),
    )
    d = summary.model_dump()  # report_uri: the flow's run report (runs/<id>/report-preprocess.json)
    lines = [f"{k}: {v}" for k, v in d.items() if k != "report_uri"]
    _emit(d, as_json, "\n".join([*lines, f"run report: {d['report_uri']}"]))


@app.command()
def demo(
    store: StoreOpt = None,
    patients: Annotated[int | None, typer.Option(min=2, help="Synthetic CBIS-shaped patients (default: flows/demo.py DemoData.patients).")] = None,
    size: Annotated[int | None, typer.Option(min=32, help="Model input size in px (default: RetrainParams.size).")] = None,
    bad: Annotated[int, typer.Option(min=0, help="Defective cases to include (shows the quarantine).")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs (default: the demo's, flows/demo.py DEMO_OVERRIDES).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The main job on the embedded default: synthetic data → ingest → validate → preprocess →
    train → evaluate on a held-out MIAS-format set → publish. No server, no download."""
    from flows.demo import run_demo
    from mammoseg.settings import demo_pseudonym_key

    s = _settings(store_url=store)
    # synthetic data: the configured key, else this install's random one (<work_dir>/pseudonym.key)
    os.environ["MAMMOSEG_PSEUDONYM_KEY"] = demo_pseudonym_key(s)
    result = run_demo(s.store_url, patients=patients, size=size, bad=bad, seed=seed, epochs=epochs)
    _emit(result, as_json, _run_text("mammoseg demo finished.", result))


@app.command()
def retrain(
    dataset: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=SOURCE", help="Training set NAME=SOURCE (repeatable: train on several datasets together); "
                          "or one NAME with --source. Names: cbis-ddsm | cdd-cesm-dm | cdd-cesm | inbreast | mini-mias …"),
    ] = None,
    source: Annotated[str | None, typer.Option(help="Root of the one training set (path, file:// or s3://bucket/prefix); its --dataset NAME defaults to cbis-ddsm.")] = None,
    heldout: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=SOURCE", help="Held-out set NAME=SOURCE, scored zero-shot (repeatable), e.g. mini-mias-masses=../shared/data/mini-mias."),
    ] = None,
    heldout_dataset: Annotated[str | None, typer.Option(help="The one held-out set's NAME, with --heldout-source (default mini-mias).")] = None,
    heldout_source: Annotated[str | None, typer.Option(help="The one held-out set's root.")] = None,
    primary: Annotated[
        str | None,
        typer.Option(help="The set that gates the champion: a held-out NAME, or heldout-NAME / internal-test-NAME "
                          "(default: the first held-out set, else the first training set's internal test)."),
    ] = None,
    store: StoreOpt = None,
    size: Annotated[int | None, typer.Option(help="Model input size in px (default: RetrainParams.size).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs per model (default: RetrainParams.epochs).")] = None,
    base_filters: Annotated[int | None, typer.Option(min=2)] = None,
    depth: Annotated[int | None, typer.Option(min=1, max=6)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    loss: Annotated[str | None, typer.Option(help="focal | dice | focal_dice")] = None,
    lesion_oversample: Annotated[float | None, typer.Option(help="Share of batches drawn from lesion images (0 = none).")] = None,
    input_norm: Annotated[str | None, typer.Option(help="none | breast | breast_robust.")] = None,
    tta_mirror: Annotated[bool | None, typer.Option("--tta-mirror/--no-tta-mirror", help="Average predictions with the mirrored image's (in the plan).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Any other RetrainParams field (repeatable), e.g. folds=5, "
                     "patch_size=256, suppress_pectoral=true, aug_gamma=0.4, max_train_minutes=20 "
                     "(see mammoseg/params.py)."),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: new; reuse one to resume its training).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest → validate → preprocess every set → train on the training sets together → evaluate
    each one's internal test split and every held-out set → publish (Prefect flow)."""
    from pydantic import ValidationError

    from flows.retrain import retrain_flow
    from mammoseg.layout import new_run_id
    from mammoseg.params import DatasetSource, RetrainParams, check_datasets, resolve_primary

    s = _settings(store_url=store)
    try:
        train = _dataset_sources(dataset or [], source, "cbis-ddsm", "--dataset", "--source")
        if heldout and (heldout_dataset or heldout_source):
            raise ValueError("use either --heldout NAME=SOURCE … or --heldout-dataset/--heldout-source, not both")
        if heldout_dataset and not heldout_source:
            raise ValueError(f"--heldout-dataset {heldout_dataset} needs --heldout-source")
        held = [DatasetSource.parse(h) for h in heldout or []]
        if heldout_source:
            held = [DatasetSource(dataset=heldout_dataset or "mini-mias", source_url=heldout_source)]
        check_datasets(train, held)
        resolve_primary(train, held, primary)
        # flags left out take RetrainParams' defaults (one default per knob, in mammoseg/params.py)
        given = {
            "size": size, "epochs": epochs, "base_filters": base_filters, "depth": depth, "batch_size": batch_size,
            "learning_rate": learning_rate, "loss": loss, "lesion_oversample": lesion_oversample,
            "input_norm": input_norm, "tta_mirror": tta_mirror, "seed": seed,
        }
        params = RetrainParams(**{k: v for k, v in given.items() if v is not None}, **_param_overrides(set_ or []))
    except (ValueError, ValidationError) as exc:
        raise typer.BadParameter(_one_line(exc)) from None
    result = retrain_flow(train, held, s.store_url, run_id or new_run_id(), params, primary)
    d = result.model_dump()
    _emit(d, as_json, _run_text("mammoseg retrain finished.", d | {"store_url": s.store_url}))


def _param_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options → RetrainParams overrides (see :func:`key_value_overrides`)."""
    from mammoseg.params import RetrainParams

    return key_value_overrides(items, RetrainParams.model_fields, "RetrainParams field (see mammoseg/params.py)")


def key_value_overrides(items: list[str], fields: Iterable[str], what: str, option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` → ``{KEY: VALUE}``, VALUE read as JSON when it is (numbers, true/false,
    null), else as text; a KEY not in ``fields`` is an error naming ``what`` (the caller's
    dataclass or model validates the values)."""
    allowed = set(fields)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{option} {item!r}: expected KEY=VALUE")
        if key not in allowed:
            raise ValueError(f"{option} {key}: not a {what}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _dataset_sources(specs: list[str], source: str | None, default: str, option: str, source_option: str) -> list[Any]:
    """``NAME=SOURCE`` options, or one bare ``NAME`` (default ``default``) with ``source``."""
    from mammoseg.params import DatasetSource

    bare = [x for x in specs if "=" not in x]
    if source is None:
        if bare:
            raise ValueError(f"{option} {bare[0]} has no root: write {option} {bare[0]}=SOURCE, or give {source_option}")
        if not specs:
            raise ValueError(f"give {option} NAME=SOURCE (repeatable), or {source_option} ROOT")
        return [DatasetSource.parse(x) for x in specs]
    if len(bare) != len(specs) or len(bare) > 1:
        raise ValueError(f"{source_option} goes with one {option} NAME; for several datasets write {option} NAME=SOURCE each")
    return [DatasetSource(dataset=bare[0] if bare else default, source_url=source)]


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="URI or path of a model.keras (a published version's, or a run's); its plan.json beside it is used.")],
    out: Annotated[Path, typer.Option(file_okay=False, help="Folder for <name>_mask.png, <name>_overlay.png, <name>_lesions.json (and <name>_seg.dcm, a DICOM SEG, for a DICOM input).")],
    image: Annotated[
        list[Path] | None,
        typer.Option(dir_okay=False, metavar="PATH", help="A DICOM, PNG/PGM (8- or 16-bit) or JPEG; repeat for more images."),
    ] = None,
    input_dir: Annotated[
        Path | None,
        typer.Option("--input", file_okay=False, help="A folder: every DICOM/PNG/PGM/JPEG file in it, sorted by name."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="A store URL: every DICOM/PNG/PGM/JPEG object below it, e.g. a PACS study "
                          "dicomweb://host:8042/dicom-web/<StudyInstanceUID> (fetched by WADO-RS; outputs named by pseudonym)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Probability cut-off in (0, 1] (default: the model plan's, chosen on validation)."),
    ] = None,
    laterality: Annotated[str | None, typer.Option(help="L or R, only to break a tie when the pixels cannot tell.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Segment lesions in images with one model (loaded once), each in its original geometry.

    Unusable images are reported on one line each and skipped (exit code 1); a missing or
    unusable model or plan stops before any image (exit code 2)."""
    from mammoseg.prediction import image_files, model_version, output_names, predict_file

    if threshold is not None and not 0.0 < threshold <= 1.0:
        _fail(f"--threshold must be in (0, 1], got {threshold:g}", code=2)
    paths = list(image or [])
    if input_dir is not None:
        if not input_dir.is_dir():
            _fail(f"--input {input_dir} is not a folder", code=2)
        found = image_files(input_dir)
        if not found:
            _fail(f"--input {input_dir} holds no DICOM/PNG/PGM/JPEG file", code=2)
        paths += found
    fetched = None
    if source is not None:  # objects of a store (a PACS included) → local files named safely
        import tempfile

        fetched = tempfile.TemporaryDirectory(prefix="mammoseg-predict-")
        paths += _fetch_source(source, Path(fetched.name))
    if not paths:
        _fail("give --image (repeatable), --input DIR or --source URL", code=2)
    uri = model if "://" in model else Path(model).resolve().as_uri()
    predictor = _load_predictor(uri)
    cut = predictor.plan.threshold if threshold is None else threshold
    version = model_version(uri)
    s = _settings()
    seg_key = None  # DICOM inputs also get a DICOM SEG; a pseudonymous one needs the key
    if s.seg_patient_module == "pseudonymous" and any(p.suffix.lower() in (".dcm", ".dicom") for p in paths):
        from mammoseg.settings import require_pseudonym_key

        seg_key = require_pseudonym_key(s)
    results, errors = [], []
    for path, name in zip(paths, output_names(paths), strict=True):
        try:
            results.append(predict_file(predictor, path, out, threshold=cut, name=name, laterality=laterality,
                                        version=version, seg_patient=s.seg_patient_module, pseudonym_key=seg_key))
        except (OSError, ValueError, MemoryError) as exc:  # unreadable, undecodable (pixel budget included), no breast
            errors.append({"image": str(path), "error": _one_line(exc)})
            typer.echo(f"mammoseg predict: {path}: {_one_line(exc)}", err=True)
    payload = {
        "model_uri": uri, "model_version": version, "threshold": cut, "out": str(out),
        "results": [r.to_dict() for r in results], "errors": errors,
    }
    lines = [f"model {version or uri}, threshold {cut:g}: {len(results)} image(s) done, {len(errors)} failed"]
    lines += [
        f"  {Path(r.image).name}: {r.n_lesions} lesion(s), {r.lesion_pixels} px → {r.mask}, {r.overlay}, {r.lesions_json}"
        for r in results
    ]
    _emit(payload, as_json, "\n".join(lines))
    if fetched is not None:
        fetched.cleanup()
    if errors:
        raise typer.Exit(code=1)


def _fetch_source(source: str, folder: Path) -> list[Path]:
    """Every image object below the store URL ``source``, copied into ``folder``. Objects of a
    PACS are named by the keyed pseudonym of their key (UIDs stay out of file names and output)."""
    from mammoseg.ids import case_pseudonym
    from mammoseg.pacs import PacsError, is_pacs_url
    from mammoseg.prediction import IMAGE_SUFFIXES
    from mammoseg.storage import StoreError, open_store

    s = _settings()
    try:
        store = open_store(source, s)
        pacs = is_pacs_url(source)
        key = None
        if pacs:
            from mammoseg.settings import require_pseudonym_key

            key = require_pseudonym_key(s)
        out = []
        for info in store.list(""):
            suffix = Path(info.key).suffix.lower()
            if suffix not in IMAGE_SUFFIXES:
                continue
            name = case_pseudonym(key, "dicom", info.key) if key else Path(info.key).stem
            path = folder / f"{name}{suffix}"
            path.write_bytes(store.read_bytes(info.key))
            out.append(path)
    except (StoreError, PacsError, ConnectionError) as exc:
        _fail(f"cannot read --source {source}: {_one_line(exc)}", code=2)
    if not out:
        _fail(f"--source {source} holds no DICOM/PNG/PGM/JPEG object", code=2)
    return sorted(out)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _fail(message: str, *, code: int) -> NoReturn:
    """One line on stderr, then exit (no traceback)."""
    typer.echo(f"mammoseg: {message}", err=True)
    raise typer.Exit(code=code)


def _load_predictor(model_uri: str):
    """The model and its plan, or a one-line error (exit 2): missing, corrupt, or a plan that
    cannot be honoured."""
    from mammoseg.bundle import BundleError
    from mammoseg.inference import load_predictor
    from mammoseg.plan import PlanError
    from mammoseg.storage import ObjectNotFound, StoreError

    try:
        return load_predictor(model_uri, _settings())
    except ObjectNotFound:
        _fail(f"model not found: {model_uri}", code=2)
    except BundleError as exc:
        _fail(f"cannot use the model bundle of {model_uri}: {_one_line(exc)}", code=2)
    except PlanError as exc:
        _fail(f"cannot use the plan of {model_uri}: {_one_line(exc)}", code=2)
    except StoreError as exc:
        _fail(f"cannot read the model {model_uri}: {_one_line(exc)}", code=2)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a corrupt file
        _fail(_unloadable(model_uri, exc), code=2)


def _unloadable(model_uri: str | None, exc: Exception) -> str:
    """A corrupt model file: Keras's own message names a temporary copy, so leave it out."""
    import zipfile

    if isinstance(exc, ValueError | OSError | zipfile.BadZipFile):
        return f"cannot load the model {model_uri}: corrupt, or not a .keras model file"
    return f"cannot load the model {model_uri} ({type(exc).__name__}): {_one_line(exc)}"


@app.command()
def evaluate(
    dataset: Annotated[str, typer.Option(help="mini-mias | mini-mias-masses | inbreast | cbis-ddsm | cdd-cesm-dm …")],
    source: Annotated[str, typer.Option(help="Dataset root: path, file:// or s3://bucket/prefix.")],
    model: Annotated[
        str | None,
        typer.Option(help="URI or path of a model.keras (default: the champion, models/CURRENT of the store)."),
    ] = None,
    store: StoreOpt = None,
    n_boot: Annotated[int, typer.Option(min=0, help="Bootstrap resamples of patients for the 95% CIs.")] = 1000,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: new).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Score a published model on any dataset without retraining (Prefect flow): data pipeline at
    the model plan's size, then the held-out evaluation under runs/<run-id>/evaluation/."""
    from flows.data_pipeline import GateClosed
    from flows.evaluate import NothingToEvaluate, evaluate_flow
    from mammoseg.layout import new_run_id
    from mammoseg.plan import PlanError
    from mammoseg.publish import PublishError
    from mammoseg.storage import ObjectNotFound, StoreError
    from tasks.model_ref import NoChampion, resolve_model

    s = _settings(store_url=store)
    uri = None if model is None else model if "://" in model else Path(model).resolve().as_uri()
    try:  # fail fast, in one line and before any flow run, on a bad model or plan
        resolve_model.fn(s.store_url, uri)
    except ObjectNotFound:
        _fail(f"model not found: {uri}", code=2)
    except (NoChampion, PlanError, PublishError, StoreError) as exc:
        _fail(_one_line(exc), code=2)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a corrupt file
        _fail(_unloadable(uri, exc), code=2)
    try:
        result = evaluate_flow(dataset, source, s.store_url, run_id or new_run_id(), uri, n_boot)
    except (GateClosed, NothingToEvaluate) as exc:
        _fail(_one_line(exc), code=1)
    d = result.model_dump()
    _emit(d, as_json, _evaluate_text(d))


def _evaluate_text(result: dict[str, Any]) -> str:
    m = result["metrics"]
    det = m.get("detection") or {}

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    def ci(key: str) -> str:
        c = (m.get("ci95") or {}).get(key)
        return f" (95% CI {num(c[0])}–{num(c[1])})" if c else ""

    findings = result["leakage_findings"]
    audit = "not run" if findings is None else "; ".join(findings) or "no overlap found"
    lines = [
        (
            f"mammoseg evaluate: model {result['model_version'] or result['model_uri']}"
            f"{' (champion)' if result['champion'] else ''} on {result['dataset']}, run {result['run_id']}"
        ),
        "",
        f"  {m.get('n_cases')} images, {m.get('n_patients')} patients, threshold {result['threshold']:g} (the model's plan)",
        f"  per-image mean Dice {num(m.get('dice_mean'))}{ci('dice_mean')}",
        f"  mean IoU            {num(m.get('iou_mean'))}{ci('iou_mean')}",
        f"  pooled Dice         {num(m.get('dice_pooled'))}{ci('dice_pooled')}",
        (
            f"  detection ({det.get('n_lesions')} lesions): sensitivity {num(det.get('sensitivity_at_0_5fp'))} / "
            f"{num(det.get('sensitivity_at_1fp'))} / {num(det.get('sensitivity_at_2fp'))} at 0.5 / 1 / 2 FP per image"
        ),
        f"  leakage audit: {audit} ({result['leakage_audit_basis']})",
        "",
        f"  metrics   {result['metrics_uri']}",
        f"  overlays  {result['overlays_uri'] or '-'}",
        f"  model     {result['record_uri']}",
        f"  data      {result['report_uri']}",
    ]
    if m.get("suspicious"):
        lines.insert(2, "  WARNING: mean Dice above 0.9 is suspicious; read the leakage audit")
    return "\n".join(lines)


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


@app.command()
def deploy(
    cpu_pool: Annotated[str | None, typer.Option(help="CPU work pool (default: MAMMOSEG_CPU_WORK_POOL).")] = None,
    gpu_pool: Annotated[str | None, typer.Option(help="GPU work pool (default: MAMMOSEG_GPU_WORK_POOL).")] = None,
) -> None:
    """Register the work-pool deployments (data-pipeline, evaluate: CPU pool; retrain,
    retrain-weekly, new-data: GPU pool) with the Prefect API; workers of the pools run them.
    The Python equivalent of `prefect deploy --all` with prefect.yaml, plus new-data's trigger."""
    from flows.deployments import WorkPoolsUnset, apply_pool_deployments

    try:
        names = apply_pool_deployments(_settings(cpu_work_pool=cpu_pool, gpu_work_pool=gpu_pool))
    except WorkPoolsUnset as exc:
        typer.echo(f"mammoseg deploy: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo("registered: " + ", ".join(names))


def _run_text(title: str, result: dict[str, Any]) -> str:
    """The human-readable end of ``demo`` and ``retrain``: where things are, then one line per
    evaluated set (in-domain internal test splits, then held-out sets)."""

    def num(v: Any, fmt: str = ".3f") -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = [title, ""]
    version = result.get("model_version") or result.get("version")
    for key, value in (("run_id", result.get("run_id")), ("store_url", result.get("store_url")),
                       ("model_uri", result.get("model_uri")), ("plan_uri", result.get("plan_uri")),
                       ("model_version", version), ("gate", result.get("gate") or result.get("gate_reason"))):
        if value:
            lines.append(f"  {key:<18} {value}")
    for run, uri in (result.get("data_reports") or {}).items():
        lines.append(f"  {'data report':<18} {uri}  ({run})")
    evaluations = result.get("evaluations") or []
    if evaluations:
        folder = evaluations[0]["metrics_uri"].rsplit("/", 1)[0]
        lines += ["", f"  evaluated sets (metrics and overlays in {folder}/):"]
    for e in evaluations:
        m = e.get("metrics") or {}
        ci = (m.get("ci95") or {}).get("dice_mean") or [None, None]
        where = "in-domain" if e["kind"] == "internal_test" else "cross-dataset"
        mark = ", primary" if e["name"] == result.get("primary") else ""
        lines.append(
            f"  {e['name']} ({where}{mark}; {m.get('n_cases')} images, {m.get('n_patients')} patients): "
            f"per-image mean Dice {num(m.get('dice_mean'))} (95% CI {num(ci[0])}–{num(ci[1])}), "
            f"mean IoU {num(m.get('iou_mean'))}, pooled Dice {num(m.get('dice_pooled'))}, "
            f"threshold {num(m.get('threshold'), '.2f')}"
        )
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - console entry point
    from mammoseg.settings import PseudonymKeyMissing

    # Prefect's temporary API server may take longer than its default 20 s to start on a busy
    # machine; the user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    try:
        app()
    except PseudonymKeyMissing as exc:  # a one-line error, not a traceback
        sys.exit(f"mammoseg: {exc}")


if __name__ == "__main__":  # pragma: no cover
    main()
