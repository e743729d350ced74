"""Decoded faces in one memory-mapped uint8 file, so that the training data path copies instead of decoding JPEGs.

Decoding a prepared 256 px face takes about 0.9 ms of one CPU core (measured on this project's CPU, 2026-11-27),
so JPEG decoding in DataLoader workers caps training near 1,000 images/s per core, while a ResNet-18 step on one H100
consumes about 10,000. The cache stores every row of a prepared dataset once, decoded and resized to the training
resize side, as ``rows x 3 x S x S`` uint8 (``3 * S * S`` bytes a face: 196 KiB at 256 px, about 29 GB for BP4D's
146k frames). All worker processes share it through the page cache.

Layout, next to the prepared dataset (``<prepared>/decoded/``):

- ``faces_<S>.u8``: the raw array, written as ``faces_<S>.u8.partial`` and renamed when complete;
- ``faces_<S>.json``: rows, side and the dataset fingerprint the cache was built from (a stale cache is rebuilt);
- ``faces_<S>.progress.json`` while building: how many rows are done, so an interrupted build resumes there.

The training command builds and uses it by default on a GPU (``--decoded_cache auto``), where decoding would be the
bottleneck; on a CPU the model is far slower than decoding and the cache would only cost disk.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic_io import write_json_atomic
from . import transforms
from .schema import DATASET_DIR, load_prepared

ROW_COLUMN = "_row"
CACHE_DIR = "decoded"
CACHE_VERSION = 1


def prepared_root(path: str | os.PathLike) -> Path:
    """The output folder of ``sevnet-hf prepare`` from either that folder or its ``dataset`` subfolder."""
    folder = Path(path)
    if folder.name == DATASET_DIR and not (folder / DATASET_DIR).is_dir():
        return folder.parent
    return folder


def cache_files(folder: Path, size: int) -> dict[str, Path]:
    stem = f"faces_{size}"
    return {
        "data": folder / f"{stem}.u8",
        "partial": folder / f"{stem}.u8.partial",
        "meta": folder / f"{stem}.json",
        "progress": folder / f"{stem}.progress.json",
    }


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _EncodedRows(torch.utils.data.Dataset):
    """Row ``i`` of a prepared dataset decoded to 3 x S x S uint8 (what the cache stores)."""

    def __init__(self, dataset: Any, size: int):
        self.images = transforms.encoded_images(dataset)
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        try:
            array = transforms.decode_row(self.images, index, self.size)
        except Exception as error:  # name the row: the prepared set is damaged there
            raise ValueError(f"row {index} of the prepared dataset does not decode: {error}") from error
        return np.ascontiguousarray(array.transpose(2, 0, 1))


class DecodedFaces:
    """A built cache, mapped lazily in each process (pickling carries the path, not the array)."""

    def __init__(self, path: str | os.PathLike, rows: int, size: int):
        self.path, self.rows, self.size = str(path), int(rows), int(size)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            # copy-on-write mapping: reads share the page cache; being writable, torch can wrap it without a warning
            self._array = np.memmap(self.path, dtype=np.uint8, mode="c", shape=(self.rows, 3, self.size, self.size))
        return self._array

    def __getitem__(self, row: int) -> torch.Tensor:
        """Row ``row`` as a writable 3 x S x S uint8 tensor (one copy out of the page cache)."""
        return torch.from_numpy(np.array(self.array[row]))

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """Rows as one B x 3 x S x S uint8 tensor, gathered in one call into memory that a DataLoader worker can hand
        to the main process without another copy (measured 2x faster than item by item and stacking)."""
        source = torch.from_numpy(self.array.view(np.ndarray))  # no copy; index_select only reads it
        out = batch_buffer((len(rows), 3, self.size, self.size))
        return torch.index_select(source, 0, torch.as_tensor(rows, dtype=torch.int64), out=out)

    def __getstate__(self) -> dict:
        return {"path": self.path, "rows": self.rows, "size": self.size, "_array": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty uint8 tensor; inside a DataLoader worker it lives in shared memory, as ``default_collate`` does it, so
    sending the batch to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def _cache_key(dataset: Any, size: int) -> dict:
    return {"version": CACHE_VERSION, "rows": len(dataset), "size": size, "fingerprint": dataset._fingerprint}


def build_decoded_cache(
    prepared: str | os.PathLike,
    size: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    chunk_rows: int = 1024,
    progress: bool = True,
) -> DecodedFaces:
    """Decode every row of a prepared dataset at ``size x size`` into the cache and return it opened.

    Reuses a complete cache built from the same dataset and side; resumes an interrupted build from its last finished
    chunk. Refuses to start (naming the folder and the bytes needed) when the disk lacks room for it.
    """
    from tqdm.auto import tqdm

    dataset = load_prepared(prepared)
    folder = Path(cache_dir) if cache_dir else prepared_root(prepared) / CACHE_DIR
    files = cache_files(folder, size)
    key = _cache_key(dataset, size)
    if files["data"].is_file() and _read_json(files["meta"]) == key:
        return DecodedFaces(files["data"], key["rows"], size)

    folder.mkdir(parents=True, exist_ok=True)
    nbytes = key["rows"] * 3 * size * size
    done = 0
    saved = _read_json(files["progress"])
    if files["partial"].is_file() and saved is not None and saved.get("key") == key:
        done = int(saved["rows_done"])
    else:
        files["meta"].unlink(missing_ok=True)
        files["data"].unlink(missing_ok=True)  # stale (another dataset or side): free its space before checking
        needed = nbytes - (files["partial"].stat().st_size if files["partial"].is_file() else 0)
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise OSError(
                f"{folder}: the decoded-face cache needs {nbytes / 2**30:.1f} GiB ({key['rows']} faces at {size} px) "
                f"and the disk has {free / 2**30:.1f} GiB free; pass --decoded_cache_dir on a larger disk or "
                "--decoded_cache never"
            )
        with open(files["partial"], "wb") as handle:
            handle.truncate(nbytes)
        write_json_atomic(files["progress"], {"key": key, "rows_done": 0})

    array = np.memmap(files["partial"], dtype=np.uint8, mode="r+", shape=(key["rows"], 3, size, size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(_EncodedRows(dataset, size), range(done, key["rows"])),
        batch_size=chunk_rows,
        num_workers=num_workers,
        collate_fn=torch.utils.data.default_collate,  # stacks in shared memory inside workers: no pickled arrays
    )
    bar = tqdm(total=key["rows"], initial=done, desc=f"decoding faces to {files['data']}", disable=not progress)
    for chunk in loader:
        array[done : done + len(chunk)] = chunk.numpy()
        array.flush()  # the rows are on disk before the progress file says so
        done += len(chunk)
        write_json_atomic(files["progress"], {"key": key, "rows_done": done})
        bar.update(len(chunk))
    bar.close()
    del array
    os.replace(files["partial"], files["data"])
    write_json_atomic(files["meta"], key)
    files["progress"].unlink(missing_ok=True)
    return DecodedFaces(files["data"], key["rows"], size)


def number_rows(dataset: Any) -> Any:
    """The dataset with each row's position as ``_row``, so splits made from it can find their rows in the cache."""
    if ROW_COLUMN in dataset.column_names:
        return dataset
    return dataset.add_column(ROW_COLUMN, np.arange(len(dataset), dtype=np.int64))
