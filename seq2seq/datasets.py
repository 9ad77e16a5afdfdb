"""Known public corpora: where to fetch them when a data root lacks them.

A recipe names a dataset and a data root (`paths.data_root`, from `SEQ2SEQ_DATA` when set).
Files already in `<data_root>/<folder>` are used as they are; missing ones are downloaded from
their public addresses, decompressed, and moved into place only when complete.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import shutil
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


def zip_member(archive, name: str):
    """The open member of a zip archive whose file name (in whatever folder) is `name`."""
    zipped = zipfile.ZipFile(archive)
    for info in zipped.infolist():
        if Path(info.filename).name == name:
            return zipped.open(info)
    raise KeyError(f"no {name} in the archive")


def ensure_files(folder: str, data_dir: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Make sure `data_dir` holds the files of a known dataset, downloading the missing ones."""
    data_dir = Path(data_dir)
    sources = DOWNLOADS.get(folder)
    if sources is None:
        raise UserError(f"unknown dataset {folder!r}; known: {', '.join(DOWNLOADS)}")
    wanted = names if names is not None else list(sources)
    missing = [n for n in wanted if not (data_dir / n).is_file()]
    if not missing:
        return data_dir
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
                    shutil.copyfileobj(stream, tmp)
            except (urllib.error.URLError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
                tmp.close()
                os.unlink(tmp.name)
                raise UserError(
                    f"cannot download {url} ({getattr(error, 'reason', error)}); on an offline "
                    f"machine put the files in {data_dir} or set SEQ2SEQ_DATA to a folder holding {folder}/"
                ) from None
        os.replace(tmp.name, data_dir / name)
    return data_dir
