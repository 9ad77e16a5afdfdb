"""The package as a user installs it: a wheel in a fresh virtualenv, run from a folder outside the
checkout. The new environment borrows the third-party packages of this one (a path line, so this
checkout's editable install is not among them) and gets seq2seq from the wheel alone."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["red dog runs", "big tree house river sun", "cat", "small green", "sits sits sits dog"]


def checkout_files() -> list[str]:
    """The files of the working tree that git tracks or would track (not ignored)."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    return [name for name in listing.splitlines() if (ROOT / name).exists() or (ROOT / name).is_symlink()]


def plain_env() -> dict[str, str]:
    """This environment without anything that would point Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | {"PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def wheel_env(tmp_path_factory) -> Path:
    """A virtualenv (outside the checkout) with seq2seq installed from a freshly built wheel."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in checkout_files():  # build from a copy, so the checkout gets no build/ or egg-info
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to(os.readlink(ROOT / name))
        else:
            shutil.copy2(ROOT / name, target)
    # With this environment's setuptools when it has one (fast, offline); else pip fetches the build tools.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation,
                    "--wheel-dir", str(work / "dist"), str(source)], check=True, capture_output=True, env=plain_env())
    wheel = next((work / "dist").glob("seq2seq-*.whl"))
    env_dir = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = Path(subprocess.run([str(env_dir / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # A path line, not a site dir: the .pth files there (this checkout's editable finder) stay unread.
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, env=plain_env())
    return env_dir


def run_installed(env_dir: Path, command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(env_dir / "bin" / command[0]), *command[1:]], cwd=cwd, env=plain_env(),
                            capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, (f"{command[0]} exited {result.returncode}:\n{result.stdout[-2000:]}\n"
                                    f"{result.stderr[-2000:]}")
    return result


def test_wheel_install_is_the_one_imported_outside_the_checkout(wheel_env, tmp_path):
    where = run_installed(wheel_env, ["python", "-c", "import seq2seq, seq2seq.config as c; print(seq2seq.__file__); "
                                      "print(c.CONF_DIR)"], cwd=tmp_path).stdout.split()
    assert Path(where[0]).is_relative_to(wheel_env) and not Path(where[0]).is_relative_to(ROOT)
    installed = sorted(p.relative_to(where[1]) for p in Path(where[1]).rglob("*.yaml"))
    shipped = sorted(p.relative_to(ROOT / "seq2seq" / "conf") for p in (ROOT / "seq2seq" / "conf").rglob("*.yaml"))
    assert installed == shipped and len(shipped) > 30


def test_installed_train_composes_a_recipe_and_a_users_own_config(wheel_env, tmp_path):
    job = run_installed(wheel_env, ["seq2seq-train", "experiment=multi30k_de_en", "--cfg", "job"], cwd=tmp_path).stdout
    assert "attention: luong_general" in job and "name: translation" in job
    # A config folder of the user's own, added to Hydra's search path.
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: lstm_attention\nmodel:\n  attention: bahdanau\n"
        "  embed_dim: 48\n")
    mine = run_installed(wheel_env, ["seq2seq-train", "hydra.searchpath=[file://my_conf]", "experiment=mine",
                                     "--cfg", "job"], cwd=tmp_path).stdout
    assert "attention: bahdanau" in mine and "embed_dim: 48" in mine


def test_installed_translate_translates_with_a_tiny_model(wheel_env, trained_reversal, tmp_path):
    result = run_installed(wheel_env, ["seq2seq-translate", f"model={trained_reversal / 'run' / 'model'}", "beam=2"],
                           cwd=tmp_path, input="\n".join(SENTENCES) + "\n")
    outputs = result.stdout.splitlines()
    assert len(outputs) == len(SENTENCES)
    expected = [" ".join(reversed(s.split())).upper() for s in SENTENCES]
    assert sum(o == e for o, e in zip(outputs, expected)) >= len(SENTENCES) - 1


@pytest.mark.slow
def test_cli_end_to_end_tests_pass_from_the_wheel(wheel_env, tmp_path):
    """The end-to-end CLI tests, run by the wheel's interpreter (so their commands are the wheel's)."""
    # A copy of the tests outside the checkout: pytest puts the folder above the `tests` package on
    # sys.path, and in the checkout that folder would also give `import seq2seq` the source tree.
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "pyproject.toml", copy / "pyproject.toml")
    tests = [str(copy / "tests" / name) for name in ("cli/test_end_to_end.py", "tasks/translation/test_translate.py")]
    result = subprocess.run([str(wheel_env / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(copy), *tests], cwd=tmp_path, env=plain_env(), capture_output=True,
                            text=True, timeout=3000)
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
