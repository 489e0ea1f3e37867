"""Pseudonymous identifiers.

Patient and case ids in every derived artifact are keyed hashes (HMAC-SHA256) of the source
dataset's own identifiers, so they are stable across runs but cannot be reversed without the
key (``MAMMOSEG_PSEUDONYM_KEY``). Nothing from a DICOM header is ever used as an id.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonym(key: str, *parts: object, prefix: str = "", length: int = 12) -> str:
    """A stable, non-reversible id of ``parts`` under ``key``: ``prefix`` + hex digest."""
    msg = "\x1f".join(str(p) for p in parts).encode("utf-8")
    digest = hmac.new(key.encode("utf-8"), msg, hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:length]}"


def patient_pseudonym(key: str, dataset: str, source_patient: str) -> str:
    return pseudonym(key, dataset, "patient", source_patient, prefix="pt-")


def case_pseudonym(key: str, dataset: str, source_image: str) -> str:
    """One case = one image (a view of one breast)."""
    return pseudonym(key, dataset, "image", source_image, prefix="cs-")
