"""onnxruntime-web for the exported sites: vendored from the npm registry, never fetched at run time.

`npm ci` installs exactly what package-lock.json pins (with the registry's integrity hashes) into
a cache folder once; each site gets a copy of the three files the page loads (the WebAssembly
build of onnxruntime's CPU kernels, its loader and the API) with the package's licence.
`make web-runtime` does the same ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from seq2seq.errors import UserError

HERE = Path(__file__).parent
PACKAGE = "onnxruntime-web"
# The ES-module API (wasm backend only) and the WebAssembly kernels with their loader: the page
# needs nothing else of the package (no WebGL/WebGPU backends).
FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def pinned_version() -> str:
    lock = json.loads((HERE / "package-lock.json").read_text(encoding="utf-8"))
    return lock["packages"][f"node_modules/{PACKAGE}"]["version"]


def cache_root() -> Path:
    base = os.environ.get("SEQ2SEQ_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                           os.path.expanduser("~/.cache"), "seq2seq")
    return Path(base) / "web-runtime"


def install_folder() -> Path:
    """Where `npm ci` of this lock file installs: a new lock file is a new folder."""
    lock = (HERE / "package-lock.json").read_bytes()
    return cache_root() / f"{PACKAGE}-{pinned_version()}-{hashlib.sha256(lock).hexdigest()[:12]}"


def installed_runtime() -> Path:
    """The folder of the pinned onnxruntime-web package, installed by `npm ci` when missing."""
    folder = install_folder()
    package = folder / "node_modules" / PACKAGE
    if all((package / "dist" / name).is_file() for name in FILES):
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(f"format=web needs {PACKAGE} {pinned_version()} from the npm registry, and npm is not "
                        "installed (install Node.js and npm, then run make web-runtime)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(HERE / name, staging / name)
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=staging, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"npm ci of {PACKAGE} {pinned_version()} failed: {last}")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return package


def copy_runtime(target: Path) -> dict[str, str]:
    """The runtime files into `target`, with a notice of where they come from; returns what the
    site's manifest says of them."""
    package = installed_runtime()
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(package / "dist" / name, target / name)
    meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((HERE / "package-lock.json").read_text(encoding="utf-8"))
    about = {"package": PACKAGE, "version": meta["version"], "license": meta.get("license", "unknown"),
             "copyright": "Copyright (c) Microsoft Corporation (the header of each file)",
             "integrity": lock["packages"][f"node_modules/{PACKAGE}"].get("integrity", ""),
             "files": list(FILES)}
    (target / "NOTICE.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    return about


if __name__ == "__main__":  # make web-runtime
    print(f"{installed_runtime()}: {PACKAGE} {pinned_version()}")
