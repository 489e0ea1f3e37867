"""How often one retrain run downloads each of its artifacts (the run catalog's cache at work).

Runs a tiny retrain (synthetic data, 64-px U-Net, one epoch) on a local store and counts the
GETs of every run artifact: the lesion tables, the manifests (``preprocessed.csv``), the split
and the model. A GET is a call of the store's ``_open`` (an ETag check, ``head``, is not one).

    MAMMOSEG_PSEUDONYM_KEY=k uv run python benchmarks/run_reads.py

(The count wraps ``LocalStore._open`` in this script only; the pipeline itself is unchanged.)
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

from mammoseg.storage import LocalStore

GETS: collections.Counter[str] = collections.Counter()
_open = LocalStore._open


def _counting_open(self: LocalStore, key: str):  # type: ignore[no-untyped-def]
    path = Path(str(self.root), key)
    GETS[f"{path.name} ({path.parent.name})"] += 1
    return _open(self, key)


def main() -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow
    from mammoseg.layout import new_run_id
    from mammoseg.params import DatasetSource, RetrainParams
    from tasks.synth import synthesize

    tiny = RetrainParams(size=64, base_filters=4, depth=2, epochs=1, batch_size=4, n_boot=100, early_stopping_patience=2)
    LocalStore._open = _counting_open  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        store_url = str(Path(tmp) / "store")
        data = synthesize(store_url=store_url, patients=6, height=128, width=96, mias_images=4, mias_size=64, seed=1)
        GETS.clear()
        retrain_flow([DatasetSource(dataset="cbis-ddsm", source_url=data["cbis_source_url"])],
                     [DatasetSource(dataset="mini-mias", source_url=data["mias_source_url"])], store_url, new_run_id(), tiny)
    for name in sorted(GETS):
        if name.startswith(("preprocessed.csv", "split.csv", "model.keras", "lesions-")):
            print(f"{GETS[name]:3d}  {name}")


if __name__ == "__main__":
    main()
