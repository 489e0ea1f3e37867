"""mini-MIAS → lesion table.

Reads ``<prefix>/Info.txt`` and the listing of ``<prefix>/mdbNNN.pgm``; of each image it reads
only the PGM header (a few bytes, for the height needed to flip y). Conventions:

* **Data lines** are the lines matching ``^mdb\\d{3}\\s`` (the free-text preamble is skipped):
  ``mdbNNN BG CLASS [SEVERITY [X Y RADIUS]]``.
* **Coordinates**: Info.txt has a bottom-left origin; the table's geometry is top-left, so a
  lesion is ``circle_geometry(x, H - y, radius)`` with ``H`` the image height from its header
  (1024 for the real data; the synthetic generator writes other sizes).
* **No coordinates** (``mdb059 F CIRC B``, widely distributed calcifications marked
  ``*NOTE 3*``): the lesion row is kept with ``mask_geometry = <NA>`` and ``lesion_detail``
  saying ``"no coordinates"``; pairing validation downstream flags it.
* **Several lines for one image** → several lesions (``lesion_id`` 1, 2, … in file order).
  ``NORM`` → one row, ``lesion_id`` 0, ``abnormality_type`` normal, pathology NORMAL.
* **Classes**: CIRC/SPIC/MISC → mass, CALC → calcification, ARCH → distortion, ASYM →
  asymmetry; severity B/M → BENIGN/MALIGNANT.
* **Patients**: images 2k-1 and 2k are one woman; the source patient is the pair number
  ``(n + 1) // 2``, zero-padded to 3 digits.
* **Laterality** follows Info.txt's note 1: even numbers are left breasts, odd numbers right
  ones (checked against the pixels of the real images: even ones have the breast in the left
  half of the image, odd ones in the right half). **View**: all MIAS films are MLO.
* **Density** stays <NA>: MIAS' background tissue (F fatty, G fatty-glandular, D dense-glandular)
  is not the ACR scale; it is kept as text in ``lesion_detail``.
* **Rejects**: an entry whose image is not in the store (the held-back part of the real data:
  :data:`IMAGE_ABSENT`); a malformed line or an unreadable header. If any line of an image is
  rejected, all its lines are, so no image is kept with part of its lesions missing. Images in
  the store without an Info.txt line are rejected too. Reasons say what is wrong (which field,
  which kind of problem) but quote no field value and name no image (``mdbNNN``): rejects carry
  the case's pseudonym, and :attr:`Reject.source` (``Info.txt:line N`` or the object key) locates
  the entry for the operator.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import pandas as pd

from mammoseg.adapters.common import (
    IMAGE_ABSENT,
    AdapterError,
    AdapterResult,
    Reject,
    list_keys,
    read_text,
)
from mammoseg.casetable import circle_geometry, conform
from mammoseg.ids import case_pseudonym, patient_pseudonym
from mammoseg.storage import ObjectNotFound, ObjectStore, join_key

DATASET = "mini-mias"
INFO_NAME = "Info.txt"
_DATA_LINE = re.compile(r"^mdb\d{3}\s")
_IMAGE_NAME = re.compile(r"^(mdb\d{3})\.pgm$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_NO_COORDS = "no coordinates"

#: MIAS class → (abnormality_type, description)
CLASSES: dict[str, tuple[str, str]] = {
    "CIRC": ("mass", "well-defined/circumscribed mass"),
    "SPIC": ("mass", "spiculated mass"),
    "MISC": ("mass", "ill-defined mass"),
    "CALC": ("calcification", "calcification cluster"),
    "ARCH": ("distortion", "architectural distortion"),
    "ASYM": ("asymmetry", "asymmetry"),
    "NORM": ("normal", "normal"),
}
SEVERITIES: dict[str, str] = {"B": "BENIGN", "M": "MALIGNANT"}
BACKGROUNDS: dict[str, str] = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}


class PgmHeaderError(ValueError):
    """The first bytes of a file are not a readable binary/ASCII PGM header."""


def parse_pgm_size(head: bytes) -> tuple[int, int]:
    """``(width, height)`` from the start of a PGM file (``P5``/``P2``; ``#`` comments allowed)."""
    tokens: list[bytes] = []
    i, n = 0, len(head)
    while len(tokens) < 4 and i < n:
        c = head[i : i + 1]
        if c.isspace():
            i += 1
        elif c == b"#":
            end = head.find(b"\n", i)
            if end < 0:
                break
            i = end + 1
        else:
            j = i
            while j < n and not head[j : j + 1].isspace() and head[j : j + 1] != b"#":
                j += 1
            if j == n and len(tokens) < 3:
                break  # token cut off by the end of the bytes read
            tokens.append(head[i:j])
            i = j
    if not tokens or tokens[0] not in (b"P5", b"P2"):
        raise PgmHeaderError("not a PGM image (no 'P5'/'P2' magic number)")
    if len(tokens) < 4:
        raise PgmHeaderError("PGM header is truncated (width, height or maxval missing)")
    try:
        width, height, maxval = (int(t) for t in tokens[1:4])
    except ValueError:
        raise PgmHeaderError("PGM header has non-integer width, height or maxval") from None
    if width <= 0 or height <= 0 or not 0 < maxval < 65536:
        raise PgmHeaderError(f"PGM header out of range: {width}x{height}, maxval {maxval}")
    return width, height


@dataclass(frozen=True)
class InfoLine:
    """One parsed Info.txt data line (coordinates as written: bottom-left origin)."""

    line_no: int
    ref: str  # mdbNNN
    background: str  # F | G | D
    cls: str  # CIRC | … | NORM
    severity: str | None  # B | M | None for NORM
    xyr: tuple[float, float, float] | None  # None when the line gives no coordinates
    note: str  # trailing text such as '*NOTE 3*'


class InfoLineError(ValueError):
    """A data line of Info.txt that does not follow ``mdbNNN BG CLASS [SEV [X Y R]]``."""


def parse_info_line(line: str, line_no: int) -> InfoLine:
    """Parse one data line; raise :class:`InfoLineError` with the reason."""
    parts = line.split()
    ref, rest = parts[0], parts[1:]
    if len(rest) < 2:
        raise InfoLineError("fewer than 3 fields (need reference, background and class)")
    bg, cls = rest[0], rest[1]
    if bg not in BACKGROUNDS:
        raise InfoLineError("unknown background tissue (expected F, G or D)")
    if cls not in CLASSES:
        raise InfoLineError(f"unknown abnormality class (expected one of {', '.join(CLASSES)})")
    if cls == "NORM":
        if len(rest) > 2:
            raise InfoLineError(f"NORM line has {len(rest) - 2} extra field(s)")
        return InfoLine(line_no, ref, bg, cls, None, None, "")
    if len(rest) < 3:
        raise InfoLineError(f"{cls} line has no severity (B or M)")
    sev = rest[2]
    if sev not in SEVERITIES:
        raise InfoLineError("unknown severity (expected B or M)")
    tail = rest[3:]
    if not tail:
        return InfoLine(line_no, ref, bg, cls, sev, None, "")
    if all(_NUMBER.match(t) for t in tail):
        if len(tail) != 3:
            raise InfoLineError(f"expected X Y RADIUS, got {len(tail)} number(s)")
        x, y, r = (float(t) for t in tail)
        if r <= 0:
            raise InfoLineError("radius must be positive")
        return InfoLine(line_no, ref, bg, cls, sev, (x, y, r), "")
    if any(_NUMBER.match(t) for t in tail):
        raise InfoLineError("unreadable coordinates (expected X Y RADIUS, as numbers)")
    return InfoLine(line_no, ref, bg, cls, sev, None, " ".join(tail))


@dataclass(frozen=True)
class BadLine:
    """A data line that could not be parsed."""

    line_no: int
    ref: str
    reason: str


def read_info(text: str) -> tuple[list[InfoLine], list[BadLine]]:
    """Data lines of an Info.txt (regex ``^mdb\\d{3}\\s``): parsed, or with why they fail."""
    lines: list[InfoLine] = []
    bad: list[BadLine] = []
    for no, raw in enumerate(text.splitlines(), start=1):
        if not _DATA_LINE.match(raw):
            continue
        try:
            lines.append(parse_info_line(raw, no))
        except InfoLineError as exc:
            bad.append(BadLine(no, raw.split()[0], str(exc)))
    return lines, bad


def _read_size(store: ObjectStore, key: str, nbytes: int = 1024) -> tuple[int, int]:
    """``(width, height)`` of a stored PGM, reading only its first ``nbytes`` (ranged GET on S3)."""
    return parse_pgm_size(store.read_prefix(key, nbytes))


def load_mias(
    store: ObjectStore,
    *,
    pseudonym_key: str,
    prefix: str = "",
    source_dataset: str = DATASET,
) -> AdapterResult:
    """Info.txt + listing under ``prefix`` → lesion table (see the module doc for conventions).

    ``source_dataset`` names the dataset in the table and in the pseudonyms; the synthetic MIAS
    data (same format) is loaded with e.g. ``source_dataset="synthetic-mias"`` so its ids can
    never collide with the real dataset's.
    """
    info_key = join_key(prefix, INFO_NAME)
    lines, bad = read_info(read_text(store, info_key))
    if not lines and not bad:
        raise AdapterError(f"{info_key} has no data lines (lines starting 'mdbNNN ')")

    images: dict[str, str] = {}  # mdbNNN -> key, images directly in the prefix folder
    for key in list_keys(store, prefix):
        name = key.rsplit("/", 1)[-1]
        m = _IMAGE_NAME.match(name)
        if m and key == join_key(prefix, name):
            images[m.group(1)] = key

    by_ref: dict[str, list[InfoLine]] = defaultdict(list)
    for line in lines:
        by_ref[line.ref].append(line)
    bad_by_ref: dict[str, list[BadLine]] = defaultdict(list)
    for b in bad:
        bad_by_ref[b.ref].append(b)

    rejects: list[Reject] = []
    records: list[dict[str, object]] = []
    for ref in sorted(set(by_ref) | set(bad_by_ref)):
        group = by_ref.get(ref, [])
        image_key = images.get(ref)
        case_id = case_pseudonym(pseudonym_key, source_dataset, image_key) if image_key else None

        def line_reject(line_no: int, reason: str, case_id: str | None = case_id) -> Reject:
            return Reject(f"{info_key}:line {line_no}", reason, case_id)

        if image_key is None:
            absent = f"{IMAGE_ABSENT}: the line's image is not in the store"
            rejects += [line_reject(ln.line_no, absent) for ln in group]
            rejects += [
                line_reject(b.line_no, f"{absent}; also {b.reason}") for b in bad_by_ref[ref]
            ]
            continue
        if bad_by_ref[ref]:
            rejects += [line_reject(b.line_no, b.reason) for b in bad_by_ref[ref]]
            first = bad_by_ref[ref][0].line_no
            why = f"line {first} of the same image is malformed; the image is left out whole"
            rejects += [line_reject(ln.line_no, why) for ln in group]
            continue
        if len(group) > 1 and any(ln.cls == "NORM" for ln in group):
            why = f"the image has a NORM line and {len(group) - 1} other line(s)"
            rejects += [line_reject(ln.line_no, why) for ln in group]
            continue
        try:
            width, height = _read_size(store, image_key)
        except PgmHeaderError as exc:
            rejects += [line_reject(ln.line_no, f"image header: {exc}") for ln in group]
            continue
        except ObjectNotFound:  # listed, then gone; an outage raises instead
            gone = "image is no longer in the store (deleted since the listing)"
            rejects += [line_reject(ln.line_no, gone) for ln in group]
            continue
        outside = [
            ln
            for ln in group
            if ln.xyr is not None and not (0 <= ln.xyr[0] <= width and 0 <= ln.xyr[1] <= height)
        ]
        if outside:
            for ln in group:
                if ln in outside:
                    why = f"centre lies outside the {width}x{height} image"
                else:
                    first = outside[0].line_no
                    why = f"line {first} of the same image is invalid; image left out whole"
                rejects.append(line_reject(ln.line_no, why))
            continue
        records += _records(
            group, ref, image_key, case_id, height, store, pseudonym_key, source_dataset
        )

    for ref, key in sorted(images.items()):
        if ref not in by_ref and ref not in bad_by_ref:
            case_id = case_pseudonym(pseudonym_key, source_dataset, key)
            rejects.append(Reject(key, f"image has no line in {INFO_NAME}", case_id))
    lesions = conform(pd.DataFrame.from_records(records)) if records else conform(pd.DataFrame())
    return AdapterResult(lesions=lesions, rejects=rejects)


def _records(
    group: list[InfoLine],
    ref: str,
    image_key: str,
    case_id: str | None,
    height: int,
    store: ObjectStore,
    pseudonym_key: str,
    source_dataset: str,
) -> list[dict[str, object]]:
    """Lesion rows of one image whose lines are all valid."""
    number = int(ref[3:])
    base: dict[str, object] = {
        "case_id": case_id,
        "patient_id": patient_pseudonym(pseudonym_key, source_dataset, f"{(number + 1) // 2:03d}"),
        "source_dataset": source_dataset,
        "source_split": "",
        "laterality": "L" if number % 2 == 0 else "R",
        "view": "MLO",
        "image_type": "film",
        "image_uri": store.uri(image_key),
    }
    out = []
    for lesion_id, ln in enumerate(group, start=1):
        kind, text = CLASSES[ln.cls]
        detail = f"{text}; background {BACKGROUNDS[ln.background]}"
        if ln.cls == "NORM":
            out.append(
                dict(
                    base,
                    lesion_id=0,
                    abnormality_type=kind,
                    pathology="NORMAL",
                    lesion_detail=detail,
                )
            )
            continue
        rec = dict(
            base,
            lesion_id=lesion_id,
            abnormality_type=kind,
            pathology=SEVERITIES[ln.severity or ""],
        )
        if ln.xyr is None:
            note = f" ({ln.note})" if ln.note else ""
            rec["lesion_detail"] = f"{detail}; {_NO_COORDS}{note}"
        else:
            x, y, r = ln.xyr
            rec["mask_geometry"] = circle_geometry(x, height - y, r)  # bottom-left → top-left
            rec["lesion_detail"] = detail
        out.append(rec)
    return out
