"""The README as a newcomer meets it: its Python example runs (as written, but 1 epoch instead of
20), it stays short, and every document it and the guides link to exists."""

import os
import re

from conftest import REPO

README = os.path.join(REPO, "README.md")
MARK = "<!-- example: tests/test_readme.py -->"


def _readme():
    with open(README, encoding="utf-8") as fh:
        return fh.read()


def test_the_python_example_runs(tmp_path, monkeypatch, capsys):
    block = re.search(re.escape(MARK) + r"\n```python\n(.*?)```", _readme(), re.S)
    assert block, f"README.md has no python block after {MARK}"
    code = block.group(1)
    assert "epochs=20" in code
    monkeypatch.chdir(tmp_path)  # the example saves model.keras in the working directory
    exec(compile(code.replace("epochs=20", "epochs=1"), "README.md", "exec"), {"__name__": "readme_example"})
    mean_ap = float(capsys.readouterr().out.strip().splitlines()[-1])  # it prints mAP@all last
    assert 0.0 <= mean_ap <= 1.0
    assert (tmp_path / "model.keras").exists()


def test_the_readme_is_short_and_its_links_resolve():
    text = _readme()
    assert len(text.splitlines()) <= 200
    docs = os.path.join(REPO, "docs")
    for path in [README] + [os.path.join(docs, n) for n in sorted(os.listdir(docs)) if n.endswith(".md")]:
        with open(path, encoding="utf-8") as fh:
            links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", fh.read())
        for link in links:
            if not link.startswith(("http://", "https://", "mailto:")):
                target = os.path.normpath(os.path.join(os.path.dirname(path), link))
                assert os.path.exists(target), f"{os.path.relpath(path, REPO)} links to missing {link}"
