import gzip
import hashlib
from pathlib import Path

import pytest

from seq2seq import datasets
from seq2seq.errors import UserError


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
    # The sum of the decompressed text, not of the .gz: what lands in the data folder is pinned.
    monkeypatch.setitem(datasets.SHA256, "toy", {"train.de": sha256("Ein Hund.\nZwei Katzen.\n"),
                                                 "train.en": sha256("A dog.\nTwo cats.\n")})
    local = tmp_path / "data" / "toy"
    (local).mkdir(parents=True)
    (local / "train.en").write_text("kept as it is\n")
    datasets.ensure_files("toy", local)
    assert (local / "train.de").read_text() == "Ein Hund.\nZwei Katzen.\n"
    assert (local / "train.en").read_text() == "kept as it is\n"  # present files are not fetched
    assert not list(local.glob(".*"))  # no temporary files left behind


def test_failed_download_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DOWNLOADS, "toy", {"a.txt": (tmp_path / "absent.gz").as_uri()})
    monkeypatch.setitem(datasets.SHA256, "toy", {"a.txt": sha256("")})
    with pytest.raises(UserError, match="SEQ2SEQ_DATA"):
        datasets.ensure_files("toy", tmp_path / "data")
    assert not (tmp_path / "data" / "a.txt").exists()
    assert not list((tmp_path / "data").glob(".*"))


def test_multi30k_addresses_cover_the_recipe_files():
    names = set(datasets.DOWNLOADS["multi30k"])
    assert {"train.de", "train.en", "val.de", "val.en", "test_2016_flickr.de", "test_2016_flickr.en"} == names
    assert all(url.startswith("https://") and url.endswith(".gz") for url in datasets.DOWNLOADS["multi30k"].values())


def test_a_download_with_the_wrong_sum_is_one_line_and_not_kept(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "good.txt").write_text("as pinned\n")
    (remote / "changed.txt").write_text("not what was pinned\n")
    monkeypatch.setitem(datasets.DOWNLOADS, "toy", {"good.txt": (remote / "good.txt").as_uri(),
                                                    "changed.txt": (remote / "changed.txt").as_uri()})
    monkeypatch.setitem(datasets.SHA256, "toy", {"good.txt": sha256("as pinned\n"),
                                                 "changed.txt": sha256("the text that was pinned\n")})
    local = tmp_path / "data"
    with pytest.raises(UserError) as caught:
        datasets.ensure_files("toy", local)
    message, nl = str(caught.value), "\n"
    assert nl not in message
    assert message == (f"{(remote / 'changed.txt').as_uri()}: changed.txt has SHA-256 "
                       f"{sha256('not what was pinned' + nl)}, expected {sha256('the text that was pinned' + nl)}; "
                       "the download was not kept (the source has changed or the transfer was damaged)")
    assert sorted(p.name for p in local.iterdir()) == ["good.txt"]  # nothing of the bad file, not even a temporary
    assert (local / "good.txt").read_text() == "as pinned\n"


def test_a_file_without_a_pinned_sum_is_not_downloaded(tmp_path, monkeypatch):
    (tmp_path / "x.txt").write_text("x\n")
    monkeypatch.setitem(datasets.DOWNLOADS, "toy", {"x.txt": (tmp_path / "x.txt").as_uri()})
    with pytest.raises(UserError, match="no pinned SHA-256 sum for toy/x.txt"):
        datasets.ensure_files("toy", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_every_download_has_a_pinned_sum():
    for folder, files in datasets.DOWNLOADS.items():
        assert set(files) == set(datasets.SHA256[folder]), folder
        assert all(len(s) == 64 and int(s, 16) >= 0 for s in datasets.SHA256[folder].values())


SHARED_SUMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "SHA256SUMS"


@pytest.mark.skipif(not SHARED_SUMS.is_file(), reason="no shared data folder beside the checkout")
def test_pinned_sums_match_the_shared_copy_of_the_corpora():
    shared = dict(reversed(line.split()) for line in SHARED_SUMS.read_text().splitlines() if line.strip())
    for folder, files in datasets.SHA256.items():
        for name, pinned in files.items():
            assert shared[f"{folder}/{name}"] == pinned, f"{folder}/{name}"
