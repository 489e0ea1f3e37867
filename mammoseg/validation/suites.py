"""Great Expectations suites kept as JSON under ``expectations/`` and what we read from them.

A suite file is GX Core 1.x's own suite serialisation, loadable with ``ExpectationSuite(**data)``::

    {"name": "pairing",
     "meta": {"mammoseg": {"id_column": "case_id",
                           "parameters": {"min_mask_in_breast_fraction": 0.5},
                           "drop_duplicates": null}},
     "expectations": [{"type": "expect_column_values_to_be_in_set",
                       "kwargs": {"column": "mask_found", "value_set": [true]},
                       "meta": {"why": "..."}}, ...]}

Everything mammoseg-specific lives in the suite's ``meta.mammoseg`` (GX keeps meta as is):

* ``id_column`` — the column that names what gets quarantined (``case_id``; ``patient_id`` for
  the splits suite). Row-level failures are reported as values of this column.
* ``parameters`` — defaults of the suite's ``{"$PARAMETER": name}`` placeholders (GX expectation
  parameters), overridable per run.
* ``drop_duplicates`` — columns to de-duplicate on before validating (splits: one row per
  ``(patient_id, split)``, so "patient_id unique" means "no patient in two splits").

An expectation may carry GX's own ``description`` (shown in Data Docs and in our reports instead
of the generated one-line rule) and ``meta.why`` (the reason for the rule, shown in reports).

Suites are found in ``expectations/`` at the repository root, located from this file. A wheel
does not ship that folder; pass ``directory=`` (or a file path) when running from one.
This module imports GX only inside :func:`build_gx_suite`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite

#: The suites the pipeline runs (file ``expectations/<name>.json``).
SUITE_NAMES: Final = ("lesion_metadata", "pairing", "splits")

_TABLE_KEYS: Final = frozenset({"name", "id", "expectations", "suite_parameters", "meta", "notes"})
_EXPECTATION_KEYS: Final = frozenset(
    {"type", "kwargs", "meta", "id", "rendered_content", "notes", "severity", "description"}
)


class SuiteError(ValueError):
    """A suite file is missing, unreadable, not a valid GX suite, or run with wrong parameters."""


def expectations_dir() -> Path:
    """``<repo>/expectations`` — where the suite JSON files live; an installed wheel carries
    the same files as ``mammoseg/_expectations``."""
    here = Path(__file__).resolve()
    repo = here.parents[2] / "expectations"
    return repo if repo.is_dir() else here.parents[1] / "_expectations"


@dataclass(frozen=True)
class SuiteSpec:
    """A suite as read from JSON: GX's own fields plus the ``meta.mammoseg`` settings.

    ``data`` is the parsed JSON (GX suite serialisation); it is never modified.
    """

    name: str
    data: Mapping[str, Any]
    id_column: str | None = None
    parameters: Mapping[str, float] = field(default_factory=dict)
    drop_duplicates: tuple[str, ...] = ()
    source: str = "<memory>"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<memory>") -> SuiteSpec:
        """Check the structure of a GX suite dict and read its ``meta.mammoseg`` settings."""
        if not isinstance(data, Mapping):
            raise SuiteError(f"{source}: a suite must be a JSON object, not {type(data).__name__}")
        unknown = set(data) - _TABLE_KEYS
        if unknown:
            raise SuiteError(f"{source}: unknown suite keys {sorted(unknown)}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise SuiteError(f"{source}: the suite has no 'name'")
        exps = data.get("expectations")
        if not isinstance(exps, list) or not exps:
            raise SuiteError(f"{source}: 'expectations' must be a non-empty list")
        for i, exp in enumerate(exps):
            where = f"{source}: expectation #{i + 1}"
            if not isinstance(exp, Mapping):
                raise SuiteError(f"{where} is not an object")
            if not isinstance(exp.get("type"), str) or not exp["type"].startswith("expect_"):
                raise SuiteError(f"{where} has no 'type' of the form expect_…")
            if not isinstance(exp.get("kwargs", {}), Mapping):
                raise SuiteError(f"{where}: 'kwargs' must be an object")
            extra = set(exp) - _EXPECTATION_KEYS
            if extra:
                raise SuiteError(f"{where} ({exp['type']}): unknown keys {sorted(extra)}")
        meta = data.get("meta") or {}
        ours = meta.get("mammoseg") or {}
        if not isinstance(ours, Mapping):
            raise SuiteError(f"{source}: meta.mammoseg must be an object")
        id_column = ours.get("id_column")
        if id_column is not None and not isinstance(id_column, str):
            raise SuiteError(f"{source}: meta.mammoseg.id_column must be a column name")
        params = ours.get("parameters") or {}
        if not isinstance(params, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in params.items()
        ):
            raise SuiteError(f"{source}: meta.mammoseg.parameters must map names to numbers")
        used = set(_parameter_names(exps))
        undeclared = used - set(params)
        if undeclared:
            raise SuiteError(
                f"{source}: parameters {sorted(undeclared)} are used but have no default in "
                "meta.mammoseg.parameters"
            )
        dedupe = ours.get("drop_duplicates") or ()
        if not isinstance(dedupe, (list, tuple)) or not all(isinstance(c, str) for c in dedupe):
            raise SuiteError(f"{source}: meta.mammoseg.drop_duplicates must be a list of columns")
        return cls(
            name=name,
            data=data,
            id_column=id_column,
            parameters={k: float(v) for k, v in params.items()},
            drop_duplicates=tuple(dedupe),
            source=source,
        )

    @property
    def expectations(self) -> list[Mapping[str, Any]]:
        return list(self.data["expectations"])

    def resolve_parameters(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """The suite's parameter defaults with ``overrides`` on top; unknown names are refused."""
        values = dict(self.parameters)
        for key, value in (overrides or {}).items():
            if key not in values:
                known = ", ".join(sorted(values)) or "none"
                raise SuiteError(f"suite {self.name!r} has no parameter {key!r} (it has: {known})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SuiteError(f"parameter {key!r} must be a number, not {value!r}")
            values[key] = float(value)
        return values


def _parameter_names(node: object) -> Iterator[str]:
    """Names of all ``{"$PARAMETER": name}`` placeholders below ``node``."""
    if isinstance(node, Mapping):
        if set(node) == {"$PARAMETER"} and isinstance(node["$PARAMETER"], str):
            yield node["$PARAMETER"]
            return
        for value in node.values():
            yield from _parameter_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _parameter_names(value)


def load_suite(suite: str | Path, *, directory: Path | None = None) -> SuiteSpec:
    """Read a suite by name (``expectations/<name>.json``) or from a JSON file path."""
    if isinstance(suite, Path) or str(suite).endswith(".json"):
        path = Path(suite)
    else:
        if not suite or "/" in suite or "\\" in suite or suite.startswith("."):
            raise SuiteError(f"{suite!r} is not a suite name")
        path = (directory or expectations_dir()) / f"{suite}.json"
    if not path.is_file():
        raise SuiteError(f"no suite file {path} (known suites: {', '.join(SUITE_NAMES)})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SuiteError(f"cannot read suite file {path}: {exc}") from exc
    return SuiteSpec.from_dict(data, source=str(path))


def build_gx_suite(spec: SuiteSpec) -> ExpectationSuite:
    """The GX ``ExpectationSuite`` of ``spec``.

    Each expectation is built on its own first: GX's ``ExpectationSuite(**data)`` only *logs* an
    unknown expectation type and drops it, so a typo in a suite file would silently disable a
    check. Here any expectation GX cannot build raises :class:`SuiteError` naming it.
    """
    import copy

    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    data = copy.deepcopy(dict(spec.data))
    expectations = []
    for i, exp in enumerate(data.pop("expectations"), start=1):
        try:
            expectations.append(ExpectationConfiguration(**exp).to_domain_obj())
        except Exception as exc:  # GX raises its own and pydantic errors here
            reason = " ".join(str(exc).split())
            raise SuiteError(
                f"{spec.source}: GX refused expectation #{i} ({exp.get('type')}): {reason}"
            ) from exc
    try:
        return ExpectationSuite(expectations=expectations, **data)
    except Exception as exc:
        raise SuiteError(f"{spec.source}: not a valid GX suite: {exc}") from exc


# ----------------------------------------------------------------------------------------------
# One-line, human-readable rule text of an expectation
# ----------------------------------------------------------------------------------------------


def _fmt(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return repr(value)


def _fmt_list(values: object, limit: int = 8) -> str:
    items = [_fmt(v) for v in (values or [])]  # type: ignore[union-attr]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", … (+{len(items) - limit} more)"
    return ", ".join(items)


def _condition_text(row_condition: object) -> str:
    """``lesion_id > 0 AND mask_geometry IS NULL`` from a serialised GX row condition."""
    if not row_condition:
        return ""
    if isinstance(row_condition, str):
        return row_condition
    try:
        from great_expectations.expectations.row_conditions import deserialize_row_condition

        return repr(deserialize_row_condition(row_condition))
    except (ValueError, TypeError):  # unparseable condition: show it raw, never fail a report
        return json.dumps(row_condition, default=str)


def describe_expectation(expectation_type: str, kwargs: Mapping[str, Any]) -> str:
    """A readable rule, e.g. ``pathology must be one of MALIGNANT, BENIGN``.

    ``kwargs`` are those of the validation result (expectation parameters already resolved).
    Unknown expectation types fall back to ``<type>(<kwargs>)``.
    """
    col = kwargs.get("column")
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    t = expectation_type
    if t == "expect_table_columns_to_match_set":
        how = "exactly" if kwargs.get("exact_match", True) else "at least"
        text = f"the table must have {how} the columns {_fmt_list(kwargs.get('column_set'), 20)}"
    elif t == "expect_table_row_count_to_be_between":
        text = (
            "the table must not be empty"
            if lo == 1 and hi is None
            else (f"the table must have between {_fmt(lo)} and {_fmt(hi)} rows")
        )
    elif t == "expect_column_to_exist":
        text = f"column {col} must exist"
    elif t == "expect_column_values_to_not_be_null":
        text = f"{col} must not be empty"
    elif t == "expect_column_values_to_be_in_set":
        vs = kwargs.get("value_set") or []
        text = (
            f"{col} must be true" if list(vs) == [True] else f"{col} must be one of {_fmt_list(vs)}"
        )
    elif t in (
        "expect_column_values_to_be_between",
        "expect_column_proportion_of_non_null_values_to_be_between",
    ):
        what = col if t == "expect_column_values_to_be_between" else f"the non-empty share of {col}"
        if lo is not None and hi is not None:
            text = f"{what} must be between {_fmt(lo)} and {_fmt(hi)}"
        elif lo is not None:
            text = f"{what} must be ≥ {_fmt(lo)}"
        else:
            text = f"{what} must be ≤ {_fmt(hi)}"
    elif t == "expect_column_values_to_be_unique":
        text = f"{col} must be unique"
    elif t == "expect_compound_columns_to_be_unique":
        text = f"({_fmt_list(kwargs.get('column_list'))}) must be unique together"
    elif t == "expect_column_pair_values_to_be_equal":
        text = f"{kwargs.get('column_A')} must equal {kwargs.get('column_B')}"
    elif t == "expect_column_values_to_be_json_parseable":
        text = f"{col} must be valid JSON"
    elif t == "expect_column_values_to_match_regex":
        text = f"{col} must match /{kwargs.get('regex')}/"
    else:
        shown = {
            k: v
            for k, v in kwargs.items()
            if k not in ("batch_id", "row_condition", "condition_parser")
        }
        text = f"{t}({', '.join(f'{k}={_fmt(v)}' for k, v in shown.items())})"
    cond = _condition_text(kwargs.get("row_condition"))
    return f"{text} (where {cond})" if cond else text


def expectation_columns(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The column(s) an expectation is about (empty for table-level ones)."""
    if "column" in kwargs:
        return (str(kwargs["column"]),)
    if "column_A" in kwargs:
        return (str(kwargs["column_A"]), str(kwargs["column_B"]))
    if "column_list" in kwargs:
        return tuple(str(c) for c in kwargs["column_list"])
    return ()
