"""Dataset name → adapter. Every adapter has the signature
``(store, *, pseudonym_key) -> AdapterResult`` with ``store`` rooted at the dataset."""

from __future__ import annotations

from collections.abc import Callable

from mammoseg.adapters.common import AdapterResult
from mammoseg.storage import ObjectStore

Adapter = Callable[..., AdapterResult]


def _cbis(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    from mammoseg.adapters.cbis_ddsm import load_cbis

    return load_cbis(store, pseudonym_key=pseudonym_key)


def _mias(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    from mammoseg.adapters.mias import load_mias

    return load_mias(store, pseudonym_key=pseudonym_key)


def _inbreast(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    from mammoseg.adapters.inbreast import load_inbreast

    return load_inbreast(store, pseudonym_key=pseudonym_key)


def _cdd_cesm(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    from mammoseg.adapters.cdd_cesm import load_cdd_cesm

    return load_cdd_cesm(store, pseudonym_key=pseudonym_key)


def _cdd_cesm_dm(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    """CDD-CESM low-energy images only (like standard digital mammograms)."""
    from mammoseg.adapters.cdd_cesm import load_cdd_cesm

    return load_cdd_cesm(store, pseudonym_key=pseudonym_key, image_types=("DM",))


def _mias_masses(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    """mini-MIAS images whose lesions are all masses with coordinates (circle masks); the other
    images are left out as out of scope, not as bad input."""
    from mammoseg.adapters.common import OUT_OF_SCOPE, Reject
    from mammoseg.adapters.mias import load_mias

    result = load_mias(store, pseudonym_key=pseudonym_key)
    lesions = result.lesions
    is_mass = (lesions["abnormality_type"] == "mass") & lesions["mask_geometry"].notna()
    keep = lesions.groupby("case_id")["case_id"].transform(lambda c: is_mass[c.index].all())
    left_out = sorted(set(lesions.loc[~keep, "case_id"]))
    rejects = result.rejects + [
        Reject(source="Info.txt", reason=f"{OUT_OF_SCOPE}: not an image of masses with coordinates", case_id=c)
        for c in left_out
    ]
    return AdapterResult(lesions=lesions[keep.astype(bool)].reset_index(drop=True), rejects=rejects)


def _dicom(store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    """Unlabelled DICOM images (a PACS through dicomweb://, or a folder of .dcm files)."""
    from mammoseg.adapters.dicom_studies import load_dicom_studies

    return load_dicom_studies(store, pseudonym_key=pseudonym_key)


ADAPTERS: dict[str, Adapter] = {
    "cdd-cesm-dm": _cdd_cesm_dm,
    "mini-mias-masses": _mias_masses,
    "cbis-ddsm": _cbis,
    "mini-mias": _mias,
    "inbreast": _inbreast,
    "cdd-cesm": _cdd_cesm,
    "dicom": _dicom,
}


def load_dataset(dataset: str, store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    try:
        adapter = ADAPTERS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(ADAPTERS)}") from None
    return adapter(store, pseudonym_key=pseudonym_key)
