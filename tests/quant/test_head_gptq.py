"""GPTQ on the int4 group grid (the output projection's quantizer) and the quantize -> compress path of a
GPTQ head: exact codes, untied embedding, and the refusal of a head format it was not quantized to."""

import json

import pytest
import torch

from sparseft.cli import main
from sparseft.errors import CheckpointError, ConfigError
from sparseft.models import load_model
from sparseft.models.saving import save_model_folder
from sparseft.prune import magnitude_prune
from sparseft.quant import load_quantized, read_head_quant
from sparseft.quant.gptq import gptq_quantize_groups, output_error
from sparseft.runtime import SparseLinear
from sparseft.runtime.format import compress
from sparseft.settings import CompressSettings, QuantizeSettings
from sparseft.stages import StageIO, run_compress, run_quantize
from tiny_models import build_tiny_model, byte_tokenizer, tiny_batches


def _problem(seed: int, out: int = 20, cols: int = 300, tokens: int = 900):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, cols, generator=g) @ torch.randn(cols, cols, generator=g)  # correlated inputs
    return torch.randn(out, cols, generator=g), 2 * X.T @ X / tokens, X


def _rtn_int4(W: torch.Tensor) -> torch.Tensor:
    """Round to nearest on max|group| / 7 per row and 128 columns, written out column group by group."""
    out = torch.zeros_like(W)
    for c0 in range(0, W.shape[1], 128):
        block = W[:, c0 : c0 + 128]
        s = block.abs().amax(1, keepdim=True) / 7
        out[:, c0 : c0 + 128] = torch.round(block / s).clamp(-7, 7) * s
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_group_gptq_stays_on_its_grid_and_beats_round_to_nearest(seed):
    W, H, X = _problem(seed)
    res = gptq_quantize_groups(W, H)
    assert res.scale.shape == (20, 3) and int(res.q.abs().max()) <= 7
    torch.testing.assert_close(res.weight, res.q.float() * res.scale.repeat_interleave(128, 1)[:, :300])
    # the first group sees no earlier errors: its scale is round-to-nearest's
    torch.testing.assert_close(res.scale[:, 0], W[:, :128].abs().amax(1) / 7)
    direct = float(((X @ (W - res.weight).T) ** 2).sum(1).mean())  # on the inputs themselves
    assert res.error == pytest.approx(direct, rel=1e-3)
    assert res.error < 0.8 * output_error(W, _rtn_int4(W), H)


def test_a_mask_is_kept_and_the_codes_compress_exactly():
    W, H, _ = _problem(2)
    mask = torch.rand(W.shape, generator=torch.Generator().manual_seed(0)) > 0.3
    res = gptq_quantize_groups(W, H, mask=mask)
    assert bool((res.weight[~mask] == 0).all())
    cw = compress(res.weight, "int4", scales=res.scale)
    assert torch.equal(cw.decompress(), res.weight)
    assert torch.equal(cw.scales, res.scale.reshape(-1))


def test_given_int4_scales_are_checked():
    w = torch.randn(4, 130)
    with pytest.raises(ConfigError, match="4 x 2 int4 group scales"):
        compress(w, "int4", scales=torch.ones(4))
    with pytest.raises(ConfigError, match="positive and finite"):
        compress(w, "int4", scales=torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="formats with scales"):
        compress(w, "bf16", scales=torch.ones(4))


@pytest.fixture()
def quantized_head(tmp_path):
    """A tied tiny Llama (hidden 192: two int4 groups per row), 50% pruned, W8A8 + GPTQ int4 head."""
    model = build_tiny_model("llama", seed=5, hidden_size=192, vocab_size=260, tie_word_embeddings=True)
    embedding = model.get_input_embeddings().weight.detach().clone()
    save_model_folder(model, tmp_path / "in", tokenizer=byte_tokenizer(), masks=magnitude_prune(model, 0.5))
    calib = {"source": ["fortunes"], "nsamples": 8, "seqlen": 32, "batch_size": 4}
    record = run_quantize(QuantizeSettings(scheme="w8a8", head="int4", calib=calib),
                          StageIO(str(tmp_path / "in"), tmp_path / "q"))
    return tmp_path, record, embedding


def test_the_quantized_head_is_untied_on_its_grid_and_recorded(quantized_head):
    tmp_path, record, embedding = quantized_head
    assert record["head"]["name"] == "lm_head" and record["head"]["format"] == "int4"
    folder = tmp_path / "q"
    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is False
    model = load_model(str(folder))
    assert torch.equal(model.get_input_embeddings().weight, embedding)  # the lookup keeps full precision
    hq = read_head_quant(folder)
    assert hq.fmt == "int4" and hq.scales.shape == (260, 2)
    W = model.lm_head.weight.detach()
    steps = W / hq.scales.repeat_interleave(128, 1)[:, :192]
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)
    assert int(steps.round().abs().max()) <= 7 and not torch.equal(W, embedding)


def test_compress_stores_the_gptq_codes_and_evaluates_like_the_folder(quantized_head):
    tmp_path, _, _ = quantized_head
    record = run_compress(CompressSettings(), StageIO(str(tmp_path / "q"), tmp_path / "c"))  # no --head
    assert record["head"] == "lm_head"
    compressed = load_model(str(tmp_path / "c"))
    folder_model, _ = load_quantized(tmp_path / "q")
    assert isinstance(compressed.lm_head, SparseLinear) and compressed.lm_head.fmt == "int4"
    # GPTQ rounds many weights to 0; the head still stores every column (the kernels that read no mask)
    assert float((folder_model.lm_head.weight == 0).float().mean()) > 0.05
    assert compressed.lm_head.kernel_handle().all_stored
    assert torch.equal(compressed.lm_head.compressed().decompress(), folder_model.lm_head.weight.detach())
    batch = tiny_batches(compressed, n_batches=1)[0]
    with torch.no_grad():
        want, got = folder_model(**batch).logits, compressed(**batch).logits
    assert float((got - want).abs().max() / want.abs().max()) < 0.02  # int4 kernel's 16-bit x rounding


def test_another_head_format_than_the_quantized_one_is_refused(quantized_head, capsys):
    tmp_path, _, _ = quantized_head
    assert main(["compress", str(tmp_path / "q"), "--head", "int8", "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "int4" in err and "--head int4" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_the_cli_quantizes_the_head(tmp_path):
    model = build_tiny_model("llama", seed=1, vocab_size=260)
    save_model_folder(model, tmp_path / "in", tokenizer=byte_tokenizer(), masks=magnitude_prune(model, 0.5))
    args = ["quantize", str(tmp_path / "in"), "--scheme", "w8a16", "--head", "int8", "--calib", "fortunes",
            "--nsamples", "4", "--seqlen", "32", "--out", str(tmp_path / "q")]
    assert main(args) == 0
    hq = read_head_quant(tmp_path / "q")
    assert hq.fmt == "int8" and hq.scales.shape == (260,)
    W = load_model(str(tmp_path / "q")).lm_head.weight.detach()
    steps = W / hq.scales[:, None]
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("record", [{"format": "int4"}, {"name": "lm_head", "format": "int3"}, ["lm_head"]])
def test_a_crafted_head_record_is_refused_in_one_line(quantized_head, record, capsys):
    tmp_path, _, _ = quantized_head
    stage = tmp_path / "q" / "stage.json"
    data = json.loads(stage.read_text())
    data["quant_head"] = record
    stage.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="quant_head"):
        read_head_quant(tmp_path / "q")
    assert main(["compress", str(tmp_path / "q"), "--out", str(tmp_path / "c")]) == 1
    assert "quant_head" in capsys.readouterr().err and not (tmp_path / "c").exists()
