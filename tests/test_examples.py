"""Every script in examples/ runs with --quick, exits 0 and prints its quality."""

import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# script -> a pattern its output must contain (the measured quality line).
EXPECTED = {
    "ner_tagging.py": r"unseen names: token accuracy [0-9.]+, .*F1 [0-9.]+",
    "sentiment_classification.py": r"test accuracy: [0-9.]+ \(bag of words: [0-9.]+",
    "char_text_generation.py": r"held-out: [0-9.]+ bits/char \(unigram entropy [0-9.]+\)",
    "seq2seq_dates.py": r"held-out exact match: greedy [0-9.]+, beam 3 [0-9.]+",
    "time_series_forecast.py": r"LSTM: R\^2 +-?[0-9.]+, RMSE [0-9.]+",
    "online_forecast.py": r"RTRL: MSE [0-9.]+, TBPTT\(16\): MSE [0-9.]+",
}


def test_every_example_is_listed():
    scripts = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert scripts == sorted(EXPECTED)
    with open(os.path.join(EXAMPLES, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    for script in scripts:
        assert f"`{script}`" in readme, script


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_quick(script, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(EXPECTED[script], proc.stdout), proc.stdout
    assert "Traceback" not in proc.stderr
