"""The ``fastrnn`` command line, end to end in subprocesses, and the demo corpus.

Every CLI test runs ``python -m fastrnn ...`` exactly as a user would, on
small files written to a temporary directory, and checks the exit status,
the output and what was learned (models must beat a stated bar).
"""

import collections
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.corpus import SKIPPED_DIRS, stdlib_docstrings, unigram_entropy


def run(cwd, *args, input=None, expect=0):
    """``python -m fastrnn *args`` in ``cwd``; returns the completed process
    after checking its exit status."""
    env = dict(os.environ, FASTRNN_TRACEBACK="")
    env.pop("FASTRNN_TRACEBACK")
    proc = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=cwd,
                          input=input, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == expect, (
        f"exit {proc.returncode} (expected {expect}) for {args}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def assert_user_error(proc, *fragments):
    """Exit status 2, exactly one line on stderr, no traceback, naming ``fragments``."""
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def entropy(text):
    counts = collections.Counter(text).values()
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts)


# -- data ---------------------------------------------------------------------------------

def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def sentiment(rng, n):
    good, bad = ["great", "superb", "lovely", "fine"], ["awful", "dull", "poor", "boring"]
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        word = rng.choice(good if label == "pos" else bad)
        rows.append((f"the film was {word} today", label))
    return rows


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- demo and generate ----------------------------------------------------------------------

def test_demo_quick_reports_bpc_and_entropy_saves_a_model_that_generates(tmp_path):
    proc = run(tmp_path, "demo", "--quick", "-o", "demo.npz", "--seed", "3")
    out = proc.stdout
    match = re.search(r"validation ([0-9.]+) bits/char vs unigram entropy ([0-9.]+) bits/char",
                      out)
    assert match, out
    bpc, reported_entropy = map(float, match.groups())
    assert 3 < reported_entropy < 6
    assert 0 < bpc < reported_entropy          # even the quick model learns something
    assert re.search(r"epoch 1: train [0-9.]+ bpc, validation [0-9.]+ bpc", out)
    assert "characters/s trained" in out and "temperature 0.8" in out
    from fastrnn.tasks import LanguageModel, load
    model = load(tmp_path / "demo.npz")
    assert isinstance(model, LanguageModel) and model.level == "char"
    # The reported entropy is the corpus's, computed independently here.
    corpus = stdlib_docstrings(max_chars=60_000)
    assert reported_entropy == pytest.approx(entropy(corpus), abs=1e-3)

    first = run(tmp_path, "generate", "demo.npz", "--prompt", "Return", "--length", "30",
                "--seed", "5").stdout
    again = run(tmp_path, "generate", "demo.npz", "--prompt", "Return", "--length", "30",
                "--seed", "5").stdout
    assert first == again and first.startswith("Return")
    assert len(first.rstrip("\n")) == len("Return") + 30


def test_lm_train_generate_evaluate(tmp_path):
    text = "the cat sat on the mat. " * 60
    write(tmp_path / "train.txt", [text])
    write(tmp_path / "valid.txt", ["the cat sat on the mat. " * 5])
    proc = run(tmp_path, "train", "lm", "train.txt", "-o", "lm.npz", "--hidden-size", "32",
               "--epochs", "20", "--bptt", "16", "--batch-size", "8", "--lr", "0.01",
               "--validation-data", "valid.txt")
    assert "Saved the model to lm.npz" in proc.stdout
    scores = json.loads(run(tmp_path, "evaluate", "lm.npz", "valid.txt", "--json").stdout)
    assert set(scores) == {"loss", "perplexity", "bits_per_char"}
    assert scores["bits_per_char"] == pytest.approx(scores["loss"] / math.log(2))
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))
    # Learned: well below the characters' unigram entropy (about 3.1 bits).
    assert scores["bits_per_char"] < 0.6 * entropy(text)
    greedy = run(tmp_path, "generate", "lm.npz", "--prompt", "the cat", "--length", "20",
                 "--temperature", "0").stdout.rstrip("\n")
    assert greedy.startswith("the cat") and len(greedy) == len("the cat") + 20
    assert "sat on the mat" in greedy


# -- classify / tag / seq2seq / regress -------------------------------------------------------

def test_classify_tsv_and_jsonl_predict_evaluate_plot(tmp_path):
    import random
    rows = sentiment(random.Random(0), 240)
    write(tmp_path / "train.tsv", [f"{t}\t{lab}" for t, lab in rows])
    test_rows = sentiment(random.Random(1), 40)
    write(tmp_path / "test.jsonl", [json.dumps({"text": t, "label": lab}) for t, lab in test_rows])
    run(tmp_path, "train", "classify", "train.tsv", "-o", "clf.npz", "--hidden-size", "16",
        "--embedding-dim", "16", "--epochs", "6", "--lr", "0.02", "--cell", "gru",
        "--validation-split", "0.2", "--plot", "curves.png", "--quiet")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    scores = json.loads(run(tmp_path, "evaluate", "clf.npz", "test.jsonl", "--json").stdout)
    assert scores["accuracy"] >= 0.95 and scores["examples"] == 40
    predicted = run(tmp_path, "predict", "clf.npz", "-",
                    input="the film was superb today\nthe film was dull today\n").stdout
    assert predicted.splitlines() == ["pos", "neg"]


def test_tag_conll_predict_evaluate(tmp_path):
    import random
    r = random.Random(0)
    names, cities = ["Ann", "Bob", "Eve", "Max", "Ida"], ["Rome", "Oslo", "Lima", "Pisa"]
    lines = ["-DOCSTART- -X- O O", ""]
    for _ in range(120):
        for token, tag in ((r.choice(names), "B-PER"), ("lives", "O"), ("in", "O"),
                           (r.choice(cities), "B-LOC"), (".", "O")):
            lines.append(f"{token}\t{tag}")
        lines.append("")
    write(tmp_path / "train.conll", lines)
    write(tmp_path / "test.jsonl", [json.dumps({"tokens": ["Eve", "lives", "in", "Oslo", "."],
                                                "tags": ["B-PER", "O", "O", "B-LOC", "O"]})])
    run(tmp_path, "train", "tag", "train.conll", "-o", "tag.npz", "--hidden-size", "16",
        "--embedding-dim", "16", "--epochs", "5", "--lr", "0.02", "-q")
    scores = json.loads(run(tmp_path, "evaluate", "tag.npz", "test.jsonl", "--json").stdout)
    assert scores["f1"] == 1.0 and scores["accuracy"] == 1.0
    out = run(tmp_path, "predict", "tag.npz", "-",
              input="Max lives in Lima .\nIda lives in Rome\n")
    assert out.stdout.splitlines() == ["B-PER O O B-LOC O", "B-PER O O B-LOC"]


def test_seq2seq_reverse_predict_evaluate(tmp_path):
    import random
    r = random.Random(0)
    words = ["".join(r.choice("abcd") for _ in range(r.randint(2, 4))) for _ in range(300)]
    write(tmp_path / "train.tsv", [f"{w}\t{w[::-1]}" for w in words])
    write(tmp_path / "test.jsonl", [json.dumps({"source": w, "target": w[::-1]})
                                    for w in ("abc", "dcab", "bd", "cab")])
    run(tmp_path, "train", "seq2seq", "train.tsv", "-o", "s2s.npz", "--hidden-size", "48",
        "--epochs", "25", "--lr", "0.01", "-q")
    scores = json.loads(run(tmp_path, "evaluate", "s2s.npz", "test.jsonl", "--json").stdout)
    assert scores["exact_match"] >= 0.75
    out = run(tmp_path, "predict", "s2s.npz", "-", "--beam-size", "2", input="abcd\nba\n")
    assert out.stdout.splitlines() == ["dcba", "ab"]


def test_regress_tsv_predict_evaluate(tmp_path, rng):
    lines = []
    for _ in range(300):
        xs = rng.normal(size=rng.integers(3, 7))
        lines.append(" ".join(f"{x:.4f}" for x in xs) + f"\t{xs.mean():.4f}")
    write(tmp_path / "train.tsv", lines)
    run(tmp_path, "train", "regress", "train.tsv", "-o", "reg.npz", "--hidden-size", "16",
        "--epochs", "12", "--lr", "0.01", "-q")
    scores = json.loads(run(tmp_path, "evaluate", "reg.npz", "train.tsv", "--json").stdout)
    assert scores["r2"] > 0.5 and scores["rmse"] < scores["rmse_of_mean"]
    values = run(tmp_path, "predict", "reg.npz", "-", input="1 1 1\n-1,-1,-1\n").stdout.split()
    assert float(values[0]) > 0.3 > -0.3 > float(values[1])


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    import random
    write(tmp_path / "train.tsv", [f"{t}\t{lab}" for t, lab in sentiment(random.Random(2), 96)])
    options = ["--hidden-size", "8", "--embedding-dim", "8", "--seed", "4", "-q"]
    run(tmp_path, "train", "classify", "train.tsv", "-o", "full.npz", "--epochs", "3",
        "--checkpoint", "full.ckpt.npz", *options)
    run(tmp_path, "train", "classify", "train.tsv", "-o", "part.npz", "--epochs", "1",
        "--checkpoint", "run.ckpt.npz", *options)
    run(tmp_path, "train", "classify", "train.tsv", "-o", "part.npz", "--epochs", "3",
        "--resume", "run.ckpt.npz", *options)
    from fastrnn.tasks import load
    texts = ["the film was fine today", "the film was poor today"]
    full, resumed = load(tmp_path / "full.npz"), load(tmp_path / "part.npz")
    np.testing.assert_array_equal(full.predict_proba(texts), resumed.predict_proba(texts))
    mismatch = run(tmp_path, "train", "classify", "train.tsv", "-o", "x.npz", "--epochs", "3",
                   "--resume", "run.ckpt.npz", "--hidden-size", "12", "-q", expect=2)
    assert_user_error(mismatch, "checkpoint", "does not fit")


# -- info, bench ------------------------------------------------------------------------------

def test_info(tmp_path):
    import fastrnn as fr
    out = run(tmp_path, "info").stdout
    assert f"fastrnn   {fr.__version__}".split() == out.splitlines()[0].split()[:2]
    assert re.search(r"^OpenMP\s+(on|off)", out, re.M)
    assert re.search(r"^numpy\s+" + re.escape(np.__version__), out, re.M)
    assert "BLAS" in out and "threads" in out
    levels = fr.kernel_levels()
    assert re.search(rf"^kernels\s+{levels['chosen']} \(", out, re.M), out
    assert f"built: {', '.join(levels['built'])}" in out


def test_bench_quick(tmp_path):
    out = run(tmp_path, "bench", "--quick").stdout
    assert re.search(r"roofline: numpy float32 GEMM \d+\^3 = [0-9.]+ GFLOP/s", out)
    for cell in ("lstm", "gru", "rnn"):
        row = re.search(rf"^{cell}\s+20\s+16\s+64 \|\s+([0-9.]+)", out, re.M)
        assert row and float(row.group(1)) > 0, out


# -- user errors: one line, exit status 2 -----------------------------------------------------

@pytest.fixture
def data_dir(tmp_path):
    write(tmp_path / "bad.tsv", ["good film\tpos", "a line without a label", "ok\tneg"])
    write(tmp_path / "bad.jsonl", ['{"text": "fine", "label": "pos"}', '{"text": "dull"}'])
    write(tmp_path / "ok.tsv", ["good film\tpos", "bad film\tneg"] * 4)
    write(tmp_path / "spaces.tsv", ["a whole sentence\tpos"])
    write(tmp_path / "notamodel.npz", ["hello"])
    return tmp_path


@pytest.mark.parametrize("args, fragments", [
    (["frobnicate"], ["invalid choice", "frobnicate"]),
    (["train", "classify", "missing.tsv"], ["missing.tsv", "no such file"]),
    (["train", "classify", "bad.tsv"], ["bad.tsv, line 2", "text<TAB>label"]),
    (["train", "classify", "bad.jsonl"], ["bad.jsonl, line 2", "missing key 'label'"]),
    (["train", "tag", "spaces.tsv"], ["line 1", "one token per line"]),
    (["train", "classify", "ok.tsv", "--epochs", "0"], ["--epochs", "int >= 1", "'0'"]),
    (["train", "classify", "ok.tsv", "--dropout", "1.5"], ["--dropout"]),
    (["train", "classify", "ok.tsv", "--threads", "0"], ["--threads", "int >= 1"]),
    (["train", "lm", "ok.tsv", "--pooling", "max"], ["unrecognized arguments"]),
    (["predict", "notamodel.npz", "ok.tsv"], ["not a fastrnn model"]),
    (["evaluate", "missing.npz", "ok.tsv"], ["missing.npz", "no such model file"]),
    (["demo", "--max-chars", "10"], ["--max-chars"]),
    (["demo", "--max-chars", "2000"], ["--max-chars 2000 gives only", "larger value"]),
    (["train", "classify", "ok.tsv", "-o", "nodir/x.npz"],
     ["--output nodir/x.npz", "does not exist"]),
    (["train", "classify", "ok.tsv", "--validation-data", "ok.tsv", "--validation-split",
      "0.1"], ["either --validation-data or --validation-split"]),
    (["predict", "notamodel.npz", "-"], ["not a fastrnn model"]),
], ids=["unknown-command", "missing-file", "malformed-tsv", "jsonl-key", "conll-spaces",
        "epochs-0", "dropout", "threads-0", "wrong-option", "not-a-model", "missing-model",
        "max-chars", "max-chars-cut", "output-dir", "two-validations", "model-before-stdin"])
def test_user_errors_exit_2_with_one_line(data_dir, args, fragments):
    assert_user_error(run(data_dir, *args, expect=2), *fragments)


def test_plot_without_matplotlib_is_a_user_error_before_training(tmp_path):
    write(tmp_path / "ok.tsv", ["good film\tpos", "bad film\tneg"] * 4)
    script = ("import sys\n"
              "class Block:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.split('.')[0] == 'matplotlib':\n"
              "            raise ImportError('blocked for the test')\n"
              "sys.meta_path.insert(0, Block())\n"
              "from fastrnn.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, "train", "classify", "ok.tsv",
                           "--plot", "curves.png", "-o", "clf.npz"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert_user_error(proc, "--plot needs matplotlib", "pip install matplotlib")
    assert not (tmp_path / "clf.npz").exists()


def test_wrong_model_kind_for_the_command(tmp_path):
    write(tmp_path / "ok.tsv", ["good film\tpos", "bad film\tneg"] * 4)
    run(tmp_path, "train", "classify", "ok.tsv", "-o", "clf.npz", "--epochs", "1",
        "--hidden-size", "4", "-q")
    assert_user_error(run(tmp_path, "generate", "clf.npz", expect=2),
                      "SequenceClassifier", "language model")
    write(tmp_path / "empty.txt", [""])
    assert_user_error(run(tmp_path, "predict", "clf.npz", "empty.txt", expect=2),
                      "no examples")


# -- reading every format, options that do not apply, output -------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A directory with small trained models and the files they were trained on:
    clf.npz (classify, train.tsv), tag.npz (tag, train.conll), reg2.npz (regress,
    2 features and 2 targets per sequence, reg2.jsonl), abc.npz (lm on 'abc' lines)."""
    import random
    path = tmp_path_factory.mktemp("trained")
    rows = sentiment(random.Random(5), 120)
    write(path / "train.tsv", [f"{t}\t{lab}" for t, lab in rows])
    write(path / "texts.txt", [t for t, _ in rows])
    write(path / "train.jsonl", [json.dumps({"text": t, "label": lab, "id": i})
                                 for i, (t, lab) in enumerate(rows)])
    r = random.Random(0)
    sentences = [[r.choice(["Ann", "Bob", "Eve"]), "lives", "in", r.choice(["Rome", "Oslo"])]
                 for _ in range(40)]
    conll = []
    for tokens in sentences:
        conll += [f"{token}\t{'B-PER' if i == 0 else 'B-LOC' if i == 3 else 'O'}"
                  for i, token in enumerate(tokens)] + [""]
    write(path / "train.conll", conll)
    write(path / "sentences.txt", [" ".join(tokens) for tokens in sentences])
    write(path / "reg2.jsonl", [json.dumps({"sequence": [[x, -x] for x in range(n)],
                                            "target": [n / 10, -n / 10]})
                                for n in range(1, 30)])
    write(path / "abc.txt", ["abc"] * 200)
    small = ["--hidden-size", "16", "-q"]
    run(path, "train", "classify", "train.tsv", "-o", "clf.npz", "--epochs", "4", "--lr", "0.05",
        *small)
    run(path, "train", "tag", "train.conll", "-o", "tag.npz", "--epochs", "2", *small)
    run(path, "train", "regress", "reg2.jsonl", "-o", "reg2.npz", "--epochs", "1", *small)
    run(path, "train", "lm", "abc.txt", "--lines", "-o", "abc.npz", "--epochs", "15", "--lr",
        "0.03", "--bptt", "8", "--batch-size", "4", *small)
    return path


def test_predict_reads_the_training_files_too(trained):
    """A tab ends a predict input (the label of a TSV file is ignored), CoNLL input
    gives one line of tags per sentence, JSONL ignores other keys; all agree."""
    from_texts = run(trained, "predict", "clf.npz", "texts.txt").stdout
    assert run(trained, "predict", "clf.npz", "train.tsv", "--threads", "1").stdout == from_texts
    assert run(trained, "predict", "clf.npz", "train.jsonl").stdout == from_texts
    labels = [line.split("\t")[1] for line in (trained / "train.tsv").read_text().splitlines()]
    assert np.mean(np.array(from_texts.splitlines()) == np.array(labels)) >= 0.9

    sentences = (trained / "sentences.txt").read_text().splitlines()
    from_lines = run(trained, "predict", "tag.npz", "sentences.txt").stdout
    assert len(from_lines.splitlines()) == len(sentences)
    assert [len(tags.split()) for tags in from_lines.splitlines()] == [4] * len(sentences)
    assert run(trained, "predict", "tag.npz", "train.conll").stdout == from_lines
    conll = (trained / "train.conll").read_text()
    assert run(trained, "predict", "tag.npz", "-", "--format", "conll",
               input=conll).stdout == from_lines


@pytest.mark.parametrize("args, stdin, fragments", [
    (["predict", "clf.npz", "texts.txt", "--beam-size", "2"], None,
     ["--beam-size applies to Seq2Seq models only", "clf.npz is a SequenceClassifier"]),
    (["evaluate", "clf.npz", "train.tsv", "--lines"], None,
     ["--lines applies to language models only"]),
    (["evaluate", "tag.npz", "train.conll", "--format", "tsv"], None,
     ["--format tsv does not apply to a SequenceTagger", "conll or jsonl"]),
    (["predict", "clf.npz", "texts.txt", "--format", "conll"], None,
     ["--format conll does not apply to a SequenceClassifier"]),
    (["evaluate", "abc.npz", "abc.txt", "--format", "jsonl"], None,
     ["does not apply to a LanguageModel", "plain text"]),
    (["predict", "reg2.npz", "-"], "1 2 3\n",
     ["<stdin>: the model expects 2 feature(s) per step, the data has 1", "JSONL"]),
    (["evaluate", "reg2.npz", "-", "--format", "jsonl"],
     '{"sequence": [[1, 2], [3, 4]], "target": 0.5}\n',
     ["<stdin>: the model predicts 2 value(s) per sequence, the targets have 1"]),
    (["predict", "clf.npz", "-"], "", ["<stdin>: no examples found"]),
], ids=["beam-size-classifier", "lines-classifier", "tsv-tagger", "conll-classifier",
        "format-lm", "features", "targets", "empty-stdin"])
def test_options_and_data_that_do_not_fit_the_model(trained, args, stdin, fragments):
    assert_user_error(run(trained, *args, input=stdin, expect=2), *fragments)


def test_generate_stop_at_eos_ends_samples_where_the_texts_end(trained):
    out = run(trained, "generate", "abc.npz", "--temperature", "0", "--stop-at-eos",
              "--length", "10", "-n", "2").stdout
    assert out == "abc\n---\nabc\n"
    # Without it the end of a text cannot be drawn: all 10 characters are generated.
    out = run(trained, "generate", "abc.npz", "--temperature", "0", "--length", "10").stdout
    assert out.startswith("abc") and len(out.rstrip("\n")) == 10


def test_regress_jsonl_scalar_targets_and_a_byte_order_mark(tmp_path, rng):
    """JSONL targets may be plain numbers (as documented); a UTF-8 BOM (Windows
    editors) is not part of the first number."""
    sequences = [rng.normal(size=rng.integers(2, 6)) for _ in range(40)]
    write(tmp_path / "scalar.jsonl", [json.dumps({"sequence": list(x), "target": x.mean()})
                                      for x in sequences])
    (tmp_path / "bom.tsv").write_text("\ufeff" + "".join(
        " ".join(f"{v:.4f}" for v in x) + f"\t{x.mean():.4f}\n" for x in sequences),
        encoding="utf-8")
    for name in ("scalar.jsonl", "bom.tsv"):
        out = run(tmp_path, "train", "regress", name, "-o", "reg.npz", "--epochs", "1",
                  "--hidden-size", "4").stdout
        assert "40 sequences (1 feature per step, 1 target value each)" in out
    scores = json.loads(run(tmp_path, "evaluate", "reg.npz", "scalar.jsonl", "--json").stdout)
    assert scores["examples"] == 40 and math.isfinite(scores["r2"])
    assert len(run(tmp_path, "predict", "reg.npz", "bom.tsv").stdout.split()) == 40
    from fastrnn.tasks import load
    assert load(tmp_path / "reg.npz").n_outputs_ == 1


def test_train_reports_the_data_and_the_epoch_whose_weights_it_saved(tmp_path):
    """With --patience the saved weights are the best epoch's; the summary says
    which, with that epoch's metrics (checked here against the saved model)."""
    import random
    r = random.Random(1)

    def noisy(n):
        return [(" ".join(r.choice("abcdefgh") for _ in range(5)), r.choice("xy"))
                for _ in range(n)]
    train, valid = noisy(120), noisy(40)
    write(tmp_path / "train.tsv", [f"{t}\t{lab}" for t, lab in train])
    write(tmp_path / "valid.tsv", [f"{t}\t{lab}" for t, lab in valid])
    out = run(tmp_path, "train", "classify", "train.tsv", "--validation-data", "valid.tsv",
              "--patience", "2", "--epochs", "40", "--lr", "0.05", "--hidden-size", "16",
              "-o", "clf.npz").stdout
    assert "on 120 examples (2 labels) from train.tsv" in out
    assert "validation: 40 examples (2 labels) from valid.tsv" in out
    match = re.search(r"Early stopping: val_loss has not improved for 2 epochs; saved the "
                      r"weights of epoch (\d+): .*val_loss ([0-9.]+)", out)
    assert match, out
    epochs_run = int(re.search(r"After epoch (\d+)", out).group(1))
    assert int(match.group(1)) == epochs_run - 2
    from fastrnn.tasks import load
    model = load(tmp_path / "clf.npz")
    proba = model.predict_proba([t for t, _ in valid])
    index = {label: i for i, label in enumerate(model.classes_)}
    loss = -np.mean(np.log([p[index[lab]] for p, (_, lab) in zip(proba, valid)]))
    assert loss == pytest.approx(float(match.group(2)), abs=2e-4)


def test_interrupted_training_saves_the_model_and_exits_130(tmp_path):
    import random
    import signal
    r = random.Random(0)
    write(tmp_path / "big.tsv", [" ".join(r.choice(["good", "bad", "film", "not"])
                                          for _ in range(20)) + f"\t{r.choice('ab')}"
                                 for _ in range(2000)])
    proc = subprocess.Popen([sys.executable, "-m", "fastrnn", "train", "classify", "big.tsv",
                             "-o", "big.npz", "--epochs", "10000", "--checkpoint", "run.ckpt",
                             "--threads", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:            # progress lines go to stderr
            if line.startswith("Epoch 1/"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted; saved the model as it was to big.npz" in err
    assert "--resume run.ckpt" in err
    assert "Saved the model to big.npz" in out
    assert (tmp_path / "big.npz").exists() and (tmp_path / "run.ckpt").exists()


@pytest.mark.parametrize("args, fragments", [
    (["train", "classify"], ["text<TAB>label", "clip the gradient norm to C (default: no "
                             "clipping)", "learning rate (default: 0.001 for sgd, adam",
                             "0.01 for adamw", "(default: no limit)"]),
    (["train", "lm"], ["--lines", "parallel text streams per batch", "(default: 5.0)"]),
    (["train", "regress"], ["x1 x2 x3 ...<TAB>y", "--pooling"]),
    (["predict"], ["(default: 1)", "(default: 50)", "A tab ends the input", "--threads"]),
    (["evaluate"], ["conll or jsonl (tag)", "--threads"]),
    (["generate"], ["--stop-at-eos", "characters or words"]),
])
def test_help_says_formats_and_defaults(capsys, args, fragments):
    from fastrnn.cli import main
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in fragments:
        assert fragment in text, fragment


def test_bench_counts_the_flops_of_a_training_step():
    """Training (no input gradient) = forward (x W_ih, h W_hh) + dW_ih + dW_hh +
    the gradient to the previous state (dz W_hh): 2 input and 3 hidden products."""
    from fastrnn.cli.bench import _recurrent_flops
    forward, train = _recurrent_flops("lstm", T=7, B=3, H=5, E=2)
    assert forward == 2 * 7 * 3 * (2 * 20 + 5 * 20)
    assert train == 2 * 7 * 3 * (2 * 2 * 20 + 3 * 5 * 20)


# -- the corpus ---------------------------------------------------------------------------

def test_stdlib_docstrings_reads_sources_in_order_and_skips_noise(tmp_path):
    (tmp_path / "b.py").write_text('"""Module B."""\n\ndef f():\n    """Function f.\n\n'
                                   '       Indented."""\n', encoding="utf-8")
    (tmp_path / "a.py").write_text('"""Module A."""\nclass C:\n    """Class C."""\n',
                                   encoding="utf-8")
    (tmp_path / "broken.py").write_text('"""Never read."""\ndef (:\n', encoding="utf-8")
    for skipped in ("test", "site-packages", "idlelib"):
        assert skipped in SKIPPED_DIRS
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "m.py").write_text('"""Noise."""\n', encoding="utf-8")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text('"""Package module."""\n', encoding="utf-8")
    text = stdlib_docstrings(max_chars=None, root=tmp_path)
    assert text == ("Module A.\n\nClass C.\n\nModule B.\n\nFunction f.\n\nIndented.\n\n"
                    "Package module.")
    assert stdlib_docstrings(max_chars=20, root=tmp_path) == "Module A.\n\nClass C."


def test_stdlib_docstrings_is_deterministic_and_capped():
    first = stdlib_docstrings(max_chars=50_000)
    assert first == stdlib_docstrings(max_chars=50_000)
    assert 40_000 < len(first) <= 50_000
    with pytest.raises(ValueError, match="max_chars must be None or an int >= 1"):
        stdlib_docstrings(max_chars=0)


def test_unigram_entropy():
    assert unigram_entropy("aabb") == pytest.approx(1.0)
    assert unigram_entropy("abcd") == pytest.approx(2.0)
    assert unigram_entropy("aaaa") == 0.0
    text = "hello world"
    assert unigram_entropy(text) == pytest.approx(entropy(text))
    with pytest.raises(ValueError, match="empty"):
        unigram_entropy("")
    with pytest.raises(TypeError, match="must be a str"):
        unigram_entropy(b"bytes")


# -- data meant for another task, labels the model never saw (issue 13) -----------------------

def test_train_refuses_a_file_in_another_tasks_format(tmp_path):
    conll = tmp_path / "ner.tsv"
    conll.write_text("EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\n\nPeter\tB-PER\nleft\tO\n")
    result = subprocess.run([sys.executable, "-m", "fastrnn", "train", "classify", str(conll),
                             "-o", str(tmp_path / "m.npz")], capture_output=True, text=True)
    assert result.returncode == 2 and not (tmp_path / "m.npz").exists()
    assert "looks like CoNLL tagging data" in result.stderr
    assert f"fastrnn train tag {conll}" in result.stderr
    numbers = tmp_path / "series.tsv"
    numbers.write_text("".join(f"{i} {i + 1} {i + 2}\t{i + 3}\n" for i in range(8)))
    result = subprocess.run([sys.executable, "-m", "fastrnn", "train", "classify",
                             str(numbers)], capture_output=True, text=True)
    assert result.returncode == 2 and "looks like regression data" in result.stderr


def test_shape_checks_directly():
    from fastrnn.cli.common import CLIError
    from fastrnn.cli.shape import check_task_shape
    check_task_shape("classify", ["a good film", "bad"], ["pos", "neg"], "f")   # fine
    check_task_shape("tag", [["EU", "rejects"]], [["B-ORG", "O"]], "f")
    with pytest.raises(CLIError, match="not tag data: evaluate it with a classify model"):
        check_task_shape("tag", [["a good film", "a bad one"]], [["pos", "neg"]], "f",
                         "evaluate")
    with pytest.raises(CLIError, match="looks like CoNLL tagging data"):
        check_task_shape("seq2seq", ["EU", "rejects"], ["B-ORG", "O"], "f")


def test_evaluate_warns_about_labels_the_model_never_saw(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("a great film\tpos\na dull film\tneg\ngreat acting\tpos\ndull\tneg\n")
    model = tmp_path / "m.npz"
    subprocess.run([sys.executable, "-m", "fastrnn", "train", "classify", str(train), "-o",
                    str(model), "--epochs", "1", "-q"], check=True, capture_output=True)
    unseen = tmp_path / "other.tsv"
    unseen.write_text("a great film\tgood\nbad\tpos\n")
    result = subprocess.run([sys.executable, "-m", "fastrnn", "evaluate", str(model),
                             str(unseen)], capture_output=True, text=True)
    assert result.returncode == 0
    assert "1 of 2 labels are ones the model never saw ('good')" in result.stderr
    assert "The model knows: 'neg', 'pos'" in result.stderr
    result = subprocess.run([sys.executable, "-m", "fastrnn", "evaluate", str(model),
                             str(train)], capture_output=True, text=True)
    assert "warning" not in result.stderr


def test_demo_reports_a_budget_cut_epoch_and_progress_off_a_terminal(tmp_path):
    """A time budget that ends inside an epoch still reports that epoch's train
    bits/char; progress goes to stderr although it is not a terminal."""
    # The budget is far shorter than the run; which epoch it cuts depends on
    # the machine's speed.
    proc = run(tmp_path, "demo", "--quick", "--minutes", "0.002", "-o", "cut.npz")
    match = re.search(r"epoch \d \(cut by the time budget .* after (\d+) of (\d+) batches; "
                      r"its training is kept\): train ([0-9.]+) bpc", proc.stdout)
    assert match, proc.stdout
    done, total, bpc = int(match[1]), int(match[2]), float(match[3])
    assert 1 <= done < total and 0 < bpc < 8
    proc = run(tmp_path, "demo", "--quick", "-o", "full.npz")
    assert re.search(r"Epoch 1/3 - \d+ batches", proc.stderr), proc.stderr
    assert "cut by the time budget" not in proc.stdout
