"""Data validation with Great Expectations (GX Core 1.x): suites in ``expectations/*.json``.

``validate_frame(df, "lesion_metadata")`` → :class:`ValidationReport` with a readable summary,
JSON output, Data Docs (optional) and the case ids that fail row-level expectations. GX is
imported only when a suite is built or run.
"""

from mammoseg.validation.report import ExpectationOutcome, ValidationReport
from mammoseg.validation.runner import ValidationInputError, ValidationRunError, validate_frame
from mammoseg.validation.suites import (
    SUITE_NAMES,
    SuiteError,
    SuiteSpec,
    describe_expectation,
    expectations_dir,
    load_suite,
)

__all__ = [
    "SUITE_NAMES",
    "ExpectationOutcome",
    "SuiteError",
    "SuiteSpec",
    "ValidationInputError",
    "ValidationReport",
    "ValidationRunError",
    "describe_expectation",
    "expectations_dir",
    "load_suite",
    "validate_frame",
]
