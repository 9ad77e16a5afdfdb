import gzip

import pytest

from seq2seq import datasets
from seq2seq.errors import UserError


def test_missing_files_are_downloaded_and_decompressed(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    remote.mkdir()
    with gzip.open(remote / "train.de.gz", "wt", encoding="utf-8") as handle:
        handle.write("Ein Hund.\nZwei Katzen.\n")
    (remote / "plain.en").write_text("A dog.\nTwo cats.\n")
    monkeypatch.setitem(datasets.DOWNLOADS, "toy", {
        "train.de": (remote / "train.de.gz").as_uri(),
        "train.en": (remote / "plain.en").as_uri(),
    })
    local = tmp_path / "data" / "toy"
    (local).mkdir(parents=True)
    (local / "train.en").write_text("kept as it is\n")
    datasets.ensure_files("toy", local)
    assert (local / "train.de").read_text() == "Ein Hund.\nZwei Katzen.\n"
    assert (local / "train.en").read_text() == "kept as it is\n"  # present files are not fetched
    assert not list(local.glob(".*"))  # no temporary files left behind


def test_failed_download_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DOWNLOADS, "toy", {"a.txt": (tmp_path / "absent.gz").as_uri()})
    with pytest.raises(UserError, match="SEQ2SEQ_DATA"):
        datasets.ensure_files("toy", tmp_path / "data")
    assert not (tmp_path / "data" / "a.txt").exists()
    assert not list((tmp_path / "data").glob(".*"))


def test_multi30k_addresses_cover_the_recipe_files():
    names = set(datasets.DOWNLOADS["multi30k"])
    assert {"train.de", "train.en", "val.de", "val.en", "test_2016_flickr.de", "test_2016_flickr.en"} == names
    assert all(url.startswith("https://") and url.endswith(".gz") for url in datasets.DOWNLOADS["multi30k"].values())
