"""The `sparseft` CLI: help texts, a prune run on a tiny model, and clear errors for bad input."""

import json
import subprocess
import sys

import pytest

from sparseft.cli import main
from sparseft.models import load_model
from sparseft.prune import load_masks, sparsity_report
from tiny_models import build_tiny_model


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "sparseft.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("prune", "eval", "demo", "models"):
        assert command in out.stdout


def test_prune_command_writes_model_masks_and_report(tmp_path, capsys):
    build_tiny_model("gpt2").save_pretrained(tmp_path / "dense")
    code = main(["prune", str(tmp_path / "dense"), "--sparsity", "0.6", "--override", r"c_proj=0.25",
                 "--out", str(tmp_path / "pruned")])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["total_sparsity"] > 0.4
    model = load_model(tmp_path / "pruned")
    masks = load_masks(tmp_path / "pruned" / "masks.safetensors")
    by_name = {layer.name: layer.sparsity for layer in sparsity_report(model, masks).layers}
    assert by_name["transformer.h.0.attn.c_attn"] == pytest.approx(0.6, abs=1e-3)
    assert by_name["transformer.h.1.mlp.c_proj"] == pytest.approx(0.25, abs=1e-3)
    record = json.loads((tmp_path / "pruned" / "stage.json").read_text())
    assert record["layers"] == pytest.approx(by_name)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sparsity", "1.2"], "[0, 1)"),
        (["--nm", "3:3"], "0 < N < M"),
        (["--override", "nonsense"], "REGEX=SPARSITY"),
        (["--target", "no_layer_is_called_this"], "no prunable layer"),
    ],
)
def test_bad_input_gives_one_clear_error_and_no_output(tmp_path, capsys, args, message):
    build_tiny_model("llama").save_pretrained(tmp_path / "dense")
    code = main(["prune", str(tmp_path / "dense"), *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_model_name(capsys, tmp_path):
    assert main(["prune", "./nowhere/model", "--out", str(tmp_path / "o")]) == 1
    assert "cannot load" in capsys.readouterr().err
