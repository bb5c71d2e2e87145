"""The README's Python examples run as written (in a temporary directory)."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _python_blocks():
    with open(README, encoding="utf-8") as handle:
        return re.findall(r"```python\n(.*?)```", handle.read(), re.S)


def test_readme_has_examples():
    assert len(_python_blocks()) >= 5


@pytest.mark.torch
def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    """One namespace for all blocks, as a reader pasting them in order would have."""
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in _python_blocks():
        exec(compile(block, README, "exec"), namespace)
    printed = capsys.readouterr().out
    assert "['pos' 'neg']" in printed                  # the classifier's answer
    assert "[['B-PER', 'O', 'B-LOC']]" in printed      # the tagger's
    assert "['cba']" in printed                        # seq2seq reverses
    assert "\n3\n" in printed                          # joblib workers predict all chunks
    assert "\nTrue\n" in printed                       # ONNX Runtime agrees
    assert (tmp_path / "run.npz").exists()
