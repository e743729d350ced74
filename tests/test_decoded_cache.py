"""The decoded-face cache: same pixels as decoding, atomic and resumable builds, stale caches rebuilt, same training."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from sevnet_hf.data import decoded_cache, transforms
from sevnet_hf.data.decoded_cache import build_decoded_cache, cache_files, number_rows
from sevnet_hf.data.folds import split_fold
from sevnet_hf.data.schema import load_prepared, read_metadata
from sevnet_hf.data.transforms import AUImageDataset
from tests.fixtures_data import make_prepared_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared_dataset(tmp_path_factory.mktemp("data") / "tiny")


def test_cached_faces_equal_decoded_faces_for_a_split(prepared, tmp_path):
    cache = build_decoded_cache(prepared, 40, cache_dir=tmp_path, progress=False)
    dataset = load_prepared(prepared)
    columns = read_metadata(prepared)["au_columns"]
    test = split_fold(number_rows(dataset), 1, seed=0, verbose=False)["test"]
    plain = AUImageDataset(test, columns, size=40)
    cached = AUImageDataset(test, columns, size=40, decoded=cache)
    assert len(cached) == len(plain) == 12
    assert cached.rows.tolist() != list(range(12))  # test rows are not the first rows: the mapping matters
    for index in range(len(plain)):
        a, b = plain[index], cached[index]
        assert b["pixel_values"].dtype == torch.uint8 and b["pixel_values"].shape == (3, 40, 40)
        assert torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["labels"], b["labels"])


def test_a_complete_cache_is_reused_and_a_stale_one_rebuilt(prepared, tmp_path, monkeypatch):
    build_decoded_cache(prepared, 32, cache_dir=tmp_path, progress=False)
    calls = []
    original = transforms.decode_resized
    monkeypatch.setattr(transforms, "decode_resized", lambda *a: calls.append(1) or original(*a))
    build_decoded_cache(prepared, 32, cache_dir=tmp_path, progress=False)
    assert calls == []  # reused
    meta = cache_files(tmp_path, 32)["meta"]
    stale = json.loads(meta.read_text())
    stale["fingerprint"] = "another dataset"
    meta.write_text(json.dumps(stale))
    build_decoded_cache(prepared, 32, cache_dir=tmp_path, progress=False)
    assert len(calls) == len(load_prepared(prepared))  # rebuilt from the start
    assert json.loads(meta.read_text())["fingerprint"] != "another dataset"


def test_an_interrupted_build_leaves_no_cache_and_resumes_where_it_stopped(prepared, tmp_path, monkeypatch):
    rows = len(load_prepared(prepared))
    original = transforms.decode_resized
    calls = []

    def failing(data, size):
        if len(calls) == 10:
            raise KeyboardInterrupt
        calls.append(1)
        return original(data, size)

    monkeypatch.setattr(transforms, "decode_resized", failing)
    with pytest.raises(KeyboardInterrupt):
        build_decoded_cache(prepared, 24, cache_dir=tmp_path, chunk_rows=4, progress=False)
    files = cache_files(tmp_path, 24)
    assert not files["data"].exists() and not files["meta"].exists()
    assert json.loads(files["progress"].read_text())["rows_done"] == 8  # two whole chunks of 4

    calls.clear()
    monkeypatch.setattr(transforms, "decode_resized", lambda *a: calls.append(1) or original(*a))
    cache = build_decoded_cache(prepared, 24, cache_dir=tmp_path, chunk_rows=4, progress=False)
    assert len(calls) == rows - 8  # the finished chunks were not decoded again
    assert not files["partial"].exists() and not files["progress"].exists()
    fresh = build_decoded_cache(prepared, 24, cache_dir=tmp_path / "fresh", progress=False)
    assert np.array_equal(np.asarray(cache.array), np.asarray(fresh.array))


def test_no_room_on_disk_is_refused_before_writing(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(decoded_cache.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    with pytest.raises(OSError, match=r"needs .* GiB .*--decoded_cache_dir"):
        build_decoded_cache(prepared, 64, cache_dir=tmp_path, progress=False)
    assert not cache_files(tmp_path, 64)["partial"].exists()


def test_pickling_carries_the_path_not_the_array(prepared, tmp_path):
    cache = build_decoded_cache(prepared, 32, cache_dir=tmp_path, progress=False)
    first = cache[0]
    payload = pickle.dumps(cache)
    assert len(payload) < 1000  # DataLoader workers get the path and map the file themselves
    assert torch.equal(pickle.loads(payload)[0], first)


def test_a_cache_of_another_side_is_refused(prepared, tmp_path):
    cache = build_decoded_cache(prepared, 32, cache_dir=tmp_path, progress=False)
    dataset = number_rows(load_prepared(prepared))
    with pytest.raises(ValueError, match="32 px faces, not 40 px"):
        AUImageDataset(dataset, read_metadata(prepared)["au_columns"], size=40, decoded=cache)


def test_training_from_the_cache_ends_with_the_same_weights(prepared, tiny_text_encoder_dir, tmp_path):
    from sevnet_hf.training.loop import train
    from tests.test_training import run_args, weights

    train(run_args(prepared, tiny_text_encoder_dir, tmp_path / "decode", decoded_cache="never", report_to="none"))
    train(
        run_args(
            prepared,
            tiny_text_encoder_dir,
            tmp_path / "cache",
            decoded_cache="always",
            decoded_cache_dir=str(tmp_path / "faces"),
            report_to="none",
        )
    )
    assert cache_files(tmp_path / "faces", 64)["data"].is_file()
    a, b = weights(tmp_path / "decode" / "model"), weights(tmp_path / "cache" / "model")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_batches_from_the_cache_equal_item_by_item_batches_also_from_workers(prepared, tmp_path):
    from sevnet_hf.data.transforms import collate_uint8

    cache = build_decoded_cache(prepared, 40, cache_dir=tmp_path, progress=False)
    dataset = split_fold(number_rows(load_prepared(prepared)), 1, seed=0, verbose=False)["train"]
    data = AUImageDataset(dataset, read_metadata(prepared)["au_columns"], size=40, decoded=cache)
    indices = [5, 0, 17, 3, 3]
    expected = collate_uint8([data[i] for i in indices])
    batch = collate_uint8(data.__getitems__(indices))
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])
    assert torch.equal(batch["labels"], expected["labels"])
    assert torch.equal(torch.utils.data.default_collate(data.__getitems__(indices))["labels"], expected["labels"])
    plain = AUImageDataset(dataset, read_metadata(prepared)["au_columns"], size=40)
    loaders = [
        torch.utils.data.DataLoader(d, batch_size=4, num_workers=2, collate_fn=collate_uint8) for d in (plain, data)
    ]
    for a, b in zip(*loaders, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
