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


ADAPTERS: dict[str, Adapter] = {
    "cbis-ddsm": _cbis,
    "mini-mias": _mias,
    "inbreast": _inbreast,
    "cdd-cesm": _cdd_cesm,
}


def load_dataset(dataset: str, store: ObjectStore, *, pseudonym_key: str) -> AdapterResult:
    try:
        adapter = ADAPTERS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(ADAPTERS)}") from None
    return adapter(store, pseudonym_key=pseudonym_key)
