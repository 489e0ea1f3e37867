"""Training input that streams from the store: every case read lazily and yielded once per epoch,
and an epoch over a data set larger than what the process may grow by."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammoseg.storage import LocalStore
from mammoseg.training.dataset import DatasetError, make_dataset

REPO = Path(__file__).resolve().parents[2]


class CountingStore(LocalStore):
    """A real local store that counts the reads of each key."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.reads: dict[str, int] = {}

    def read_with_info(self, key: str):
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().read_with_info(key)


def _npz(image: np.ndarray, mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, image=image, mask=mask, transform="{}")
    return buf.getvalue()


def _manifest(store: LocalStore, n: int, size: int = 16) -> pd.DataFrame:
    """Case ``i``'s image is filled with ``i + 1`` (uint16), so a yielded image names its case."""
    rows = []
    for i in range(n):
        key = f"preprocessed/s/{i:03d}.npz"
        mask = np.zeros((size, size), np.uint8)
        mask[: i % 3, :] = 1
        store.write_bytes(key, _npz(np.full((size, size), i + 1, np.uint16), mask))
        rows.append({"case_id": f"cs-{i:03d}", "npz_key": key, "lesion_fraction": float(mask.mean())})
    return pd.DataFrame(rows)


def _case_ids(batch_images: np.ndarray) -> list[int]:
    return [round(float(v) * 65535) - 1 for v in batch_images[:, 0, 0, 0]]


def test_streaming_reads_lazily_and_yields_every_case_once_per_epoch(tmp_path) -> None:
    store = CountingStore(str(tmp_path))
    n = 40
    manifest = _manifest(store, n)
    store.reads.clear()
    ds = make_dataset(store, manifest, batch_size=4, training=True, cache=False, shuffle_seed=1)
    assert sum(store.reads.values()) == 1  # building it read one NPZ (its shape), no more

    epochs = []
    for _ in range(3):
        store.reads.clear()
        it = iter(ds)
        first = next(it)
        assert sum(store.reads.values()) < n  # the first batch came before the epoch was read
        seen = _case_ids(first[0].numpy()) + [c for x, _ in it for c in _case_ids(x.numpy())]
        assert sorted(seen) == list(range(n))  # every case once
        assert set(store.reads.values()) == {1} and len(store.reads) == n  # each read once, this epoch
        epochs.append(seen)
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled every epoch


def test_auto_cache_streams_over_the_budget_and_caches_under_it(tmp_path) -> None:
    store = CountingStore(str(tmp_path))
    manifest = _manifest(store, 10)  # 10 x (512 + 256) bytes decoded
    store.reads.clear()
    make_dataset(store, manifest, batch_size=2, training=False, cache_budget_bytes=10 * 768 - 1)
    assert sum(store.reads.values()) == 1  # over budget: streams, nothing read ahead
    store.reads.clear()
    make_dataset(store, manifest, batch_size=2, training=False, cache_budget_bytes=10 * 768)
    assert len(store.reads) == 10  # fits: every NPZ read into memory now


def test_a_broken_npz_mid_stream_names_its_case(tmp_path) -> None:
    import tensorflow as tf

    store = CountingStore(str(tmp_path))
    manifest = _manifest(store, 6)
    store.write_bytes(manifest["npz_key"][4], b"PK\x03\x04 not really a zip")
    ds = make_dataset(store, manifest, batch_size=2, training=False, cache=False)
    with pytest.raises(tf.errors.OpError, match=r"case cs-004 .*not a readable NPZ"):
        for _ in ds:
            pass
    with pytest.raises(DatasetError, match=r"case cs-004 .*not a readable NPZ"):
        make_dataset(store, manifest, batch_size=2, training=False, cache=True)


_MEMORY_PROBE = textwrap.dedent(
    """
    import io, json, os, sys, tempfile, threading, time
    import numpy as np, pandas as pd
    sys.path.insert(0, sys.argv[1])
    from mammoseg.storage import LocalStore
    from mammoseg.training.dataset import make_dataset

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20

    def growth(work):
        # the most the resident set grew above its level at the start while ``work`` ran,
        # sampled every 2 ms (the process's all-time peak would hide it behind TensorFlow's
        # start-up allocations)
        start, top, done = rss_mb(), [0.0], threading.Event()
        def sample():
            while not done.is_set():
                top[0] = max(top[0], rss_mb())
                time.sleep(0.002)
        t = threading.Thread(target=sample); t.start()
        try:
            result = work()
        finally:
            done.set(); t.join()
        return result, max(0.0, max(top[0], rss_mb()) - start)

    n, size = int(sys.argv[2]), int(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        store, rows = LocalStore(tmp), []
        rng = np.random.default_rng(0)
        for i in range(n):
            buf = io.BytesIO()
            np.savez(buf, image=rng.integers(0, 65535, (size, size), dtype=np.uint16),
                     mask=np.zeros((size, size), np.uint8), transform="{}")
            store.write_bytes(f"p/{i:04d}.npz", buf.getvalue())
            rows.append({"case_id": f"cs-{i}", "npz_key": f"p/{i:04d}.npz"})
            del buf
        manifest = pd.DataFrame(rows)
        # TensorFlow's own start-up allocations, on a different small set
        for _ in make_dataset(store, manifest.head(16), batch_size=8, training=True, cache=False):
            pass
        ds = make_dataset(store, manifest, batch_size=8, training=True, cache=False)
        count, streamed = growth(lambda: sum(int(x.shape[0]) for x, _ in ds))
        kept, cached = growth(lambda: make_dataset(store, manifest, batch_size=8, training=True, cache=True))
    print(json.dumps({"count": count, "streamed_mb": streamed, "cached_mb": cached}))
    """
)


def test_an_epoch_larger_than_the_process_may_grow_streams(tmp_path) -> None:
    """The data set (800 x 512 px: 600 MB decoded) is more than the streamed epoch may grow the
    process's resident memory by (half of it); the in-memory cache of the same data set does grow
    it by all of it, so the probe can tell the two apart. The streamed growth is what is in
    flight (a few batches, read, cast and augmented) plus what the allocator keeps: 130-190 MB
    seen on one 2-core machine, whatever the data set's size, hence a data set this large."""
    n, size = 800, 512
    total_mb = n * size * size * 3 / 2**20
    script = tmp_path / "probe.py"
    script.write_text(_MEMORY_PROBE)
    out = subprocess.run(  # noqa: PLW1510 — the return code is asserted below
        [sys.executable, str(script), str(REPO), str(n), str(size)],
        capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["count"] == n
    assert got["streamed_mb"] < total_mb / 2, got
    assert got["cached_mb"] > 0.9 * total_mb, got
