"""Every bad input gets one clear error naming what was wrong, status 1 (2 for argparse's own), no
traceback and no output left behind."""

import pytest

from sparseft.cli import main
from tiny_models import build_tiny_model, byte_tokenizer

CASES = [  # (argv with {m} = a tiny model folder, {d} = the test's folder; expected words of the error)
    (["prune", "{m}", "--target", "(", "--out", "{d}/o"], "not a valid regular expression"),
    (["prune", "{m}", "--override", "([=0.3", "--out", "{d}/o"], "not a valid regular expression"),
    (["prune", "{m}", "--override", "nothing", "--out", "{d}/o"], "REGEX=SPARSITY"),
    (["prune", "{m}", "--sparsity", "1.5", "--out", "{d}/o"], "less than 1"),
    (["prune", "{m}", "--nm", "3:2", "--out", "{d}/o"], "0 < N < M"),
    (["prune", "./nowhere/model", "--out", "{d}/o"], "cannot load"),
    (["oneshot", "{m}", "--device", "bogus", "--out", "{d}/o"], "not a torch device"),
    (["oneshot", "{m}", "--batch-size", "0", "--out", "{d}/o"], "--batch-size"),
    (["oneshot", "{m}", "--method", "magic", "--out", "{d}/o"], "registered pruning solvers"),
    (["oneshot", "{m}", "--seqlen", "100000", "--calib", "fortunes", "--out", "{d}/o"], "positions"),
    (["oneshot", "{m}", "--calib", "{d}/bin.txt", "--out", "{d}/o"], "not UTF-8"),
    (["oneshot", "{m}", "--calib", "{d}/empty.txt", "--out", "{d}/o"], "holds no text"),
    (["oneshot", "{m}", "--calib", "{d}/missing.txt", "--out", "{d}/o"], "neither"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--grad-accum", "0", "--out", "{d}/o"], "--grad-accum"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--lr", "nan", "--out", "{d}/o"], "--lr"),
    (["finetune", "--student", "{m}", "--teacher", "{m}", "--loss", "ce+kd", "--temperature", "0", "--out", "{d}/o"],
     "--temperature"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--steps", "0", "--out", "{d}/o"], "--steps"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--steps", "-1", "--out", "{d}/o"], "--steps"),
    (["finetune", "--student", "{m}", "--loss", "ce+magic", "--out", "{d}/o"], "--loss"),
    (["finetune", "--student", "{m}", "--loss", "ce+squarehead", "--out", "{d}/o"], "--teacher"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--weight", "kd", "--out", "{d}/o"], "--weight"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--gmp", "1.2", "--out", "{d}/o"], "--gmp"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--data", "{d}/bin.txt", "--out", "{d}/o"], "not UTF-8"),
    (["finetune", "--student", "{m}", "--loss", "ce", "--seqlen", "5000", "--out", "{d}/o"], "positions"),
    (["quantize", "{m}", "--scheme", "w8a8-static", "--nsamples", "0", "--out", "{d}/o"], "--nsamples"),
    (["quantize", "{m}", "--keep-sensitive", "-1", "--out", "{d}/o"], "--keep-sensitive"),
    (["compress", "{m}", "--min-sparsity", "-1", "--out", "{d}/o"], "--min-sparsity"),
    (["compress", "{m}", "--format", "int3", "--out", "{d}/o"], "--format"),
    (["compress", "{m}", "--out", "{d}/o"], "prune it first"),
    (["eval", "{m}", "--data", "{d}/empty.txt"], "holds no text"),
    (["eval", "{m}", "--seqlen", "1"], "--seqlen"),
    (["eval", "{m}", "--seqlen", "5000"], "positions"),
    (["eval", "{m}", "--stride", "0"], "--stride"),
    (["bench", "--batch", "-1", "--shape", "64x64"], "--batch"),
    (["bench", "--batch", "0", "--shape", "64x64"], "--batch"),
    (["bench", "--shape", "big"], "--shape"),
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--model", "{m}", "--tokens", "0"], "--tokens"),
    (["demo", "--tokens", "-1", "--out", "{d}/o"], "tokens"),
    (["demo", "--sparsity", "2", "--out", "{d}/o"], "sparsity"),
    (["run", "{d}/missing.yaml"], "not found"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    build_tiny_model("llama", vocab_size=260, max_position_embeddings=1024).save_pretrained(d / "m")
    byte_tokenizer().save_pretrained(d / "m")
    (d / "bin.txt").write_bytes(b"\xff\xfe\x00\x01binary")
    (d / "empty.txt").write_text("")
    return d


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(c[0][:3]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_clear_error(folder, capsys, argv, words):
    code = main([a.format(m=folder / "m", d=folder) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert words in err and "Traceback" not in err and "rerun with --debug" not in err, err
    assert not (folder / "o").exists()


def test_argparse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as info:
        main(["prune", "--sparsity", "x"])
    assert info.value.code == 2 and "Traceback" not in capsys.readouterr().err
