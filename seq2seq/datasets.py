"""Known public corpora: where to fetch them when a data root lacks them.

A recipe names a dataset and a data root (`paths.data_root`, from `SEQ2SEQ_DATA` when set).
Files already in `<data_root>/<folder>` are used as they are; missing ones are downloaded from
their public addresses, decompressed, checked against a pinned SHA-256 sum, and moved into place
only when complete and correct.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from seq2seq.errors import UserError

log = logging.getLogger(__name__)

_MULTI30K = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{name}.gz"

_RT_POLARITY = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/sentence_polarity.zip"

# folder -> {file name: URL}; ".gz" URLs are decompressed on the way in; "archive.zip#name" is
# the member of the zip archive whose file name is `name`.
DOWNLOADS: dict[str, dict[str, str]] = {
    "multi30k": {
        f"{split}.{lang}": _MULTI30K.format(name=f"{split}.{lang}")
        for split in ("train", "val", "test_2016_flickr")
        for lang in ("de", "en")
    },
    "tinyshakespeare": {
        "input.txt": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    },
    "small_parallel_enja": {
        f"{split}.{lang}": f"https://raw.githubusercontent.com/odashi/small_parallel_enja/master/{split}.{lang}"
        for split in ("train", "dev", "test")
        for lang in ("en", "ja")
    },
    "co2_maunaloa": {
        "co2.csv": "https://raw.githubusercontent.com/statsmodels/statsmodels/main/statsmodels/datasets/co2/co2.csv",
    },
    "rt_polarity": {name: f"{_RT_POLARITY}#{name}" for name in ("rt-polarity.pos", "rt-polarity.neg")},
}

# folder -> {file name: SHA-256 of the file as it is written into the data folder}: after the
# .gz is decompressed or the member taken out of the zip, so the sum pins the text the recipes
# train on, whatever compression the source serves. A download that does not match is not kept.
SHA256: dict[str, dict[str, str]] = {
    "multi30k": {
        "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
        "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
        "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
        "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
        "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
        "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    },
    "tinyshakespeare": {
        "input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    },
    "small_parallel_enja": {
        "train.en": "148b05dcd28638fe20ee84f2b1127001c80982be352007dda241fb759adadc76",
        "train.ja": "fc81a1434349ec98a449d7ae9cd2530057f689637684ecfed3501ea6a8a07ecc",
        "dev.en": "04a2673449770657fd5e3b963cb856be3130923212b6db8ac7eaeef18f06c041",
        "dev.ja": "cd534f56b8639dc130f86a365e5ec0aa70042000bdd740a622fbbf8b6be4acca",
        "test.en": "45edb380749ec2b49cca7618fc5a7595fc9f791180672ba466b90c873a4aa8bf",
        "test.ja": "d37dc460a81b064e4106c8913eb11fa300da05cf3f58a7a5bbfec7e20947ddef",
    },
    "co2_maunaloa": {
        "co2.csv": "16695fa2786e53414e5a6b54767a3fdf5de99cfbc68617f69d1362d92776a92f",
    },
    "rt_polarity": {
        "rt-polarity.pos": "c2dc6b2f55bcf725725372916287cc3f8f9b19402edaa9167de5287cb3ade421",
        "rt-polarity.neg": "614274f81185a850e5a88d533d4679f916d6f62e9af6f0b4ec71fb94bf466ea5",
    },
}


def zip_member(archive, name: str):
    """The open member of a zip archive whose file name (in whatever folder) is `name`."""
    zipped = zipfile.ZipFile(archive)
    for info in zipped.infolist():
        if Path(info.filename).name == name:
            return zipped.open(info)
    raise KeyError(f"no {name} in the archive")


def copy_hashing(stream, out) -> str:
    """Copy `stream` into `out`; the SHA-256 of what was copied."""
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def ensure_files(folder: str, data_dir: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Make sure `data_dir` holds the files of a known dataset, downloading the missing ones
    and keeping each only if its SHA-256 sum is the pinned one."""
    data_dir = Path(data_dir)
    sources = DOWNLOADS.get(folder)
    if sources is None:
        raise UserError(f"unknown dataset {folder!r}; known: {', '.join(DOWNLOADS)}")
    wanted = names if names is not None else list(sources)
    missing = [n for n in wanted if not (data_dir / n).is_file()]
    if not missing:
        return data_dir
    unpinned = [n for n in missing if n not in SHA256.get(folder, {})]
    if unpinned:
        raise UserError(f"no pinned SHA-256 sum for {folder}/{unpinned[0]}; refusing to download it unchecked")
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in missing:
        url, _, member = sources[name].partition("#")
        log.info("downloading %s -> %s", url, data_dir / name)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=f".{name}.", delete=False) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    if member:
                        stream = zip_member(io.BytesIO(response.read()), member)
                    else:
                        stream = gzip.GzipFile(fileobj=response) if url.endswith(".gz") else response
                    digest = copy_hashing(stream, tmp)
            except (urllib.error.URLError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
                tmp.close()
                os.unlink(tmp.name)
                raise UserError(
                    f"cannot download {url} ({getattr(error, 'reason', error)}); on an offline "
                    f"machine put the files in {data_dir} or set SEQ2SEQ_DATA to a folder holding {folder}/"
                ) from None
        expected = SHA256[folder][name]
        if digest != expected:
            os.unlink(tmp.name)
            raise UserError(f"{url}: {name} has SHA-256 {digest}, expected {expected}; the download was not kept "
                            f"(the source has changed or the transfer was damaged)")
        os.replace(tmp.name, data_dir / name)
    return data_dir
