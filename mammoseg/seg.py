"""DICOM Segmentation output: a predicted mask as a DICOM SEG object (highdicom).

:func:`build_seg` turns a binary mask *in the source image's own geometry* (what
:meth:`mammoseg.inference.Predictor.predict_original` returns, already mapped back through the
recorded crop box) into a SEG instance that any DICOM viewer overlays on the source image:

* ``BINARY`` segmentation, one segment ``lesion`` (SNOMED *Lesion* 52988006, category
  *Morphologically Abnormal Structure*), automatic, with the algorithm identified
  (``mammoseg``, model version) in the segment's *Algorithm Identification Sequence*;
* same Study Instance UID and Frame of Reference as the source, referencing the source series
  and instance (Referenced Series Sequence / Source Image Sequence);
* Series and SOP Instance UIDs derived from (source instance, model version): the same model on
  the same image always gives the same UIDs, so storing a result twice in a PACS overwrites it
  instead of adding a second SEG, and :func:`seg_series_uid` tells whether a result exists;
* the patient module either **pseudonymous** (default: Patient ID/Name replaced by the keyed
  pseudonym of :mod:`mammoseg.ids`, birth date, sex, accession number and referring physician
  emptied, *Patient Identity Removed* YES) or **copied** from the source (``patient="copy"``,
  for a PACS that must file the SEG under the patient's own record).

Pure: bytes in, bytes out, no I/O. pydicom's log records are dropped while the source is read
(they may quote header values).
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final, Literal

import numpy as np

from mammoseg.dicom import DicomError, _parse, _quiet_pydicom, make_uid

PatientModule = Literal["pseudonymous", "copy"]

SEG_SOP_CLASS: Final = "1.2.840.10008.5.1.4.1.1.66.4"
SEGMENT_LABEL: Final = "lesion"
ALGORITHM_NAME: Final = "mammoseg"
MANUFACTURER: Final = "mammoseg"
SERIES_NUMBER: Final = 9701
SERIES_DESCRIPTION: Final = "mammoseg lesion segmentation"


class SegError(ValueError):
    """The SEG cannot be built (mask does not fit the source, unusable source); one line."""


@dataclass(frozen=True)
class SegResult:
    """The encoded SEG and its UIDs (UIDs are not patient data, but stay out of logs anyway)."""

    data: bytes
    study_uid: str
    series_uid: str
    sop_uid: str
    lesion_pixels: int


def seg_series_uid(source_sop_uid: str, model_version: str | None) -> str:
    """Series Instance UID of the SEG of one source instance under one model version."""
    return make_uid("mammoseg-seg-series", source_sop_uid, model_version or "unversioned")


def seg_sop_uid(source_sop_uid: str, model_version: str | None) -> str:
    return make_uid("mammoseg-seg-instance", source_sop_uid, model_version or "unversioned")


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"mammoseg {version('mammoseg')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "mammoseg"


def build_seg(
    source: bytes,
    mask: np.ndarray,
    *,
    model_version: str | None,
    patient: PatientModule = "pseudonymous",
    pseudonym_key: str | None = None,
) -> SegResult:
    """A DICOM SEG (bytes) of the binary ``mask`` (rows x columns of the source) over ``source``.

    ``pseudonym_key`` is required with ``patient="pseudonymous"``. Raises :class:`SegError`
    (or :class:`~mammoseg.dicom.DicomError` for bytes that are not DICOM).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if patient not in ("pseudonymous", "copy"):
        raise SegError(f"patient module must be 'pseudonymous' or 'copy', got {patient!r}")
    if patient == "pseudonymous" and not pseudonym_key:
        raise SegError("a pseudonymous SEG needs the pseudonym key (MAMMOSEG_PSEUDONYM_KEY)")
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise SegError(f"the mask must be 2-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1, 255)).all():
            raise SegError("the mask must be boolean (or integers 0/1/255)")
        arr = arr > 0
    with _quiet_pydicom():
        ds = _parse(source, stop_before_pixels=True)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if (rows, cols) != arr.shape:
            raise SegError(
                f"the mask is {arr.shape[0]}x{arr.shape[1]} but the source image is {rows}x{cols}: "
                "a SEG must be in the source image's geometry"
            )
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if not sop or "StudyInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
            raise DicomError("the source DICOM lacks its Study/Series/SOP Instance UIDs")
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise SegError("multi-frame source images are not supported")
        algorithm = hd.AlgorithmIdentificationSequence(
            name=ALGORITHM_NAME,
            version=model_version or "unversioned",
            family=codes.cid7162.ArtificialIntelligence,
        )
        segment = hd.seg.SegmentDescription(
            segment_number=1,
            segment_label=SEGMENT_LABEL,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        series_uid = seg_series_uid(sop, model_version)
        sop_uid = seg_sop_uid(sop, model_version)
        try:
            seg = hd.seg.Segmentation(
                source_images=[ds],
                pixel_array=arr[None],
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[segment],
                series_instance_uid=series_uid,
                series_number=SERIES_NUMBER,
                sop_instance_uid=sop_uid,
                instance_number=1,
                manufacturer=MANUFACTURER,
                manufacturer_model_name=ALGORITHM_NAME,
                software_versions=_software_version(),
                device_serial_number=model_version or "unversioned",
                content_label="LESION",
                content_description="mammoseg lesion segmentation",
                series_description=SERIES_DESCRIPTION,
                omit_empty_frames=False,  # an empty prediction is a result too
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise SegError(f"highdicom refused the source image ({type(exc).__name__}: {exc})") from None
        if patient == "pseudonymous":
            _pseudonymise(seg, ds, pseudonym_key or "")
        buf = BytesIO()
        seg.save_as(buf, enforce_file_format=True)
    return SegResult(
        data=buf.getvalue(),
        study_uid=str(seg.StudyInstanceUID),
        series_uid=series_uid,
        sop_uid=sop_uid,
        lesion_pixels=int(arr.sum()),
    )


def _pseudonymise(seg: Any, source: Any, key: str) -> None:
    """Replace the copied patient module by the pseudonym; blank the other identifying fields."""
    from mammoseg.ids import patient_pseudonym

    pid = str(getattr(source, "PatientID", "") or "")
    pseudo = patient_pseudonym(key, "pacs", pid or str(getattr(source, "StudyInstanceUID", "")))
    seg.PatientID = pseudo
    seg.PatientName = pseudo
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName",
                    "StudyID", "StudyDate", "StudyTime"):
        setattr(seg, keyword, "")
    for keyword in ("OtherPatientIDs", "OtherPatientNames", "OtherPatientIDsSequence",
                    "PatientAge", "PatientAddress", "InstitutionName"):
        if keyword in seg:  # type: ignore[operator]
            delattr(seg, keyword)
    seg.PatientIdentityRemoved = "YES"
    seg.DeidentificationMethod = "mammoseg: keyed pseudonym (HMAC-SHA256) for patient id"


@dataclass(frozen=True)
class SegReadBack:
    """What a SEG says, read back with highdicom: mask in the source geometry, references."""

    mask: np.ndarray
    study_uid: str
    referenced: tuple[tuple[str, str, str], ...]  # (study, series, sop) of the source images
    segment_labels: tuple[str, ...]
    algorithm: tuple[str, str]  # (name, version)


def read_seg(data: bytes) -> SegReadBack:
    """Read a SEG with highdicom (its own parser and checks); the one segment's binary mask."""
    import highdicom as hd

    seg = hd.seg.segread(BytesIO(data))
    numbers = list(seg.get_segment_numbers())
    labels = tuple(str(seg.get_segment_description(n).segment_label) for n in numbers)
    desc = seg.get_segment_description(numbers[0])
    alg = desc.algorithm_identification
    frame = np.asarray(seg.pixel_array)
    if frame.ndim == 3:
        frame = frame[0]
    return SegReadBack(
        mask=frame.astype(bool),
        study_uid=str(seg.StudyInstanceUID),
        referenced=tuple(tuple(map(str, t)) for t in seg.get_source_image_uids()),  # type: ignore[misc]
        segment_labels=labels,
        algorithm=(str(alg[0].AlgorithmName), str(alg[0].AlgorithmVersion)) if alg else ("", ""),
    )
