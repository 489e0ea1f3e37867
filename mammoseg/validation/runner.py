"""Run a suite on a DataFrame with GX Core 1.x and return a :class:`ValidationReport`.

Each call builds a fresh *ephemeral* GX context whose stores are all in memory: nothing is
written to the repository, the working directory or ``~`` (no ``gx/`` folder). Only when
``data_docs_dir`` is given does GX write a static Data Docs site, into that folder and nowhere
else. Analytics are off (``GX_ANALYTICS_ENABLED=false`` and ``analytics_enabled=False`` in the
context config) and progress bars are off. GX is imported lazily: importing this module is cheap.

GX keeps a process-wide "current project"; run suites one at a time per process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mammoseg.validation.report import ValidationReport, build_report
from mammoseg.validation.suites import SuiteSpec, build_gx_suite, load_suite

#: Name of the filesystem Data Docs site we configure.
DOCS_SITE = "mammoseg"
#: GX's COMPLETE result format lists every failing row; examples are capped in the report.
RESULT_FORMAT: dict[str, Any] = {"result_format": "COMPLETE", "partial_unexpected_count": 20}


class ValidationInputError(ValueError):
    """The table handed to the runner is not something a suite can be run on."""


class ValidationRunError(RuntimeError):
    """GX could not run the suite at all (not a data problem: those become failed outcomes)."""


@contextmanager
def _quiet_gx() -> Iterator[None]:
    """GX logs chatty INFO lines; keep its loggers at WARNING for the duration of a run."""
    logger = logging.getLogger("great_expectations")
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def _prepare(df: pd.DataFrame, spec: SuiteSpec) -> pd.DataFrame:
    """A copy indexed 0..n-1 by row position (how GX will name failing rows), de-duplicated on
    the suite's ``drop_duplicates`` columns when they are all present."""
    if not isinstance(df, pd.DataFrame):
        raise ValidationInputError(f"expected a pandas DataFrame, got {type(df).__name__}")
    cols = list(df.columns)
    if len(set(cols)) != len(cols):
        dupes = sorted({str(c) for c in cols if cols.count(c) > 1})
        raise ValidationInputError(f"the table has duplicate column names: {dupes}")
    if not all(isinstance(c, str) for c in cols):
        raise ValidationInputError("column names must be strings")
    frame = df.reset_index(drop=True).copy(deep=True)
    if spec.drop_duplicates and set(spec.drop_duplicates) <= set(frame.columns):
        frame = frame.drop_duplicates(subset=list(spec.drop_duplicates), keep="first")
    return frame


def _context(data_docs_dir: Path | None) -> Any:
    """An in-memory GX context; one filesystem Data Docs site when ``data_docs_dir`` is set."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites: dict[str, Any] = {}
    if data_docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(data_docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        # init_temp_docs_sites=False: no default site in a temp folder
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def validate_frame(
    df: pd.DataFrame,
    suite: str | Path | SuiteSpec,
    *,
    data_docs_dir: Path | None = None,
    run_name: str | None = None,
    parameters: Mapping[str, float] | None = None,
    suites_dir: Path | None = None,
) -> ValidationReport:
    """Validate ``df`` (never modified) against a suite and say which cases fail.

    ``suite`` is a suite name (``expectations/<name>.json``, or ``suites_dir/<name>.json``), a
    path to a suite JSON file, or a loaded :class:`SuiteSpec`. ``parameters`` override the
    suite's expectation-parameter defaults (e.g. ``{"min_mask_in_breast_fraction": 0.6}``).
    With ``data_docs_dir``, GX Data Docs HTML is built there and ``report.data_docs_index``
    is the path of its ``index.html``.

    Raises :class:`ValidationInputError` for a table GX cannot take (not a DataFrame, duplicate
    or non-string column names), :class:`~mammoseg.validation.suites.SuiteError` for a bad suite
    or parameter, :class:`ValidationRunError` if GX fails outright. Bad *data* never raises: it
    shows up as failed outcomes in the report.
    """
    spec = suite if isinstance(suite, SuiteSpec) else load_suite(suite, directory=suites_dir)
    params = spec.resolve_parameters(parameters)
    frame = _prepare(df, spec)
    id_column = spec.id_column
    evaluated_ids = (
        int(df[id_column].dropna().nunique()) if id_column and id_column in df.columns else 0
    )
    docs_dir = Path(data_docs_dir).expanduser().resolve() if data_docs_dir is not None else None
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # before GX is imported
    with _quiet_gx():
        import great_expectations as gx
        from great_expectations.checkpoint import UpdateDataDocsAction
        from great_expectations.core.run_identifier import RunIdentifier

        gx_suite = build_gx_suite(spec)
        try:
            context = _context(docs_dir)
            gx_suite = context.suites.add(gx_suite)
            batch_definition = (
                context.data_sources.add_pandas("mammoseg")
                .add_dataframe_asset(spec.name)
                .add_batch_definition_whole_dataframe("whole_table")
            )
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=spec.name, data=batch_definition, suite=gx_suite)
            )
            actions = (
                [UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])] if docs_dir else []
            )
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=f"{spec.name}_checkpoint",
                    validation_definitions=[definition],
                    actions=actions,
                    result_format=RESULT_FORMAT,
                )
            )
            run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
            result = checkpoint.run(
                batch_parameters={"dataframe": frame},
                expectation_parameters=params,
                run_id=run_id,
            )
        except Exception as exc:  # GX raises many unrelated types; name the suite and go
            raise ValidationRunError(f"GX could not run suite {spec.name!r}: {exc}") from exc

    (suite_result,) = result.run_results.values()
    index = None
    if docs_dir is not None:
        path = docs_dir / "index.html"
        if not path.is_file():
            raise ValidationRunError(f"GX did not write Data Docs to {docs_dir}")
        index = str(path)
    return build_report(
        suite=spec.name,
        gx_results=suite_result.results,
        order=[e.id for e in gx_suite.expectations],
        frame=frame,
        evaluated_rows=len(df),
        evaluated_ids=evaluated_ids,
        id_column=id_column,
        data_docs_index=index,
        run_name=run_name,
        parameters=params,
    )
