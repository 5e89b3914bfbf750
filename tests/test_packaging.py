"""What `pip install` puts on a user's path: one top-level import package, coophash_keras, with the
repository's export/ and serving/ folders installed as coophash_keras.export and
coophash_keras.serving (pyproject's package-dir). scripts/check_wheel.sh checks a built wheel in a
fresh environment; these check the declarations and the code that imports them."""

import os
import re
import subprocess

import pytest
from conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

MAPPED = {"coophash_keras": "coophash_keras", "coophash_keras.export": "export", "coophash_keras.serving": "serving"}


def _setuptools():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]


def test_every_package_folder_is_declared_under_coophash_keras():
    config = _setuptools()
    assert config["package-dir"] == MAPPED
    found = set()
    for package, folder in MAPPED.items():
        for root, dirs, files in os.walk(os.path.join(REPO, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if "__init__.py" in files:
                rel = os.path.relpath(root, os.path.join(REPO, folder))
                found.add(package if rel == "." else package + "." + rel.replace(os.sep, "."))
    # a subpackage added without its line in pyproject.toml would be left out of the wheel
    assert sorted(config["packages"]) == sorted(found)
    assert all(p == "coophash_keras" or p.startswith("coophash_keras.") for p in config["packages"])


def test_nothing_imports_the_folders_as_top_level_packages():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"^\s*(from|import)\s+(export|serving)(\s|\.|$)", re.M)
    offenders = []
    for path in tracked:
        if path.endswith((".py", ".md", ".sh")) and not path.startswith("results/"):
            with open(os.path.join(REPO, path), encoding="utf-8") as fh:
                offenders += [f"{path}: {m.group(0).strip()}" for m in pattern.finditer(fh.read())]
    assert offenders == [], "import coophash_keras.export / coophash_keras.serving instead"


def test_the_installed_names_resolve_to_the_folders():
    import coophash_keras.export
    import coophash_keras.serving

    assert os.path.dirname(coophash_keras.export.__file__) == os.path.join(REPO, "export")
    assert os.path.dirname(coophash_keras.serving.__file__) == os.path.join(REPO, "serving")
