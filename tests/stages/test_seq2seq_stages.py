"""T5 (text pairs) and Whisper (speech clips) through the same stages as causal LMs: oneshot with their own
calibration data -> finetune (SquareHead over encoder and decoder blocks, KD) -> compress -> reload ->
generate, and eval with the kind's metric (BLEU, WER). Tiny random models; a few seconds each."""

from pathlib import Path

import pytest
import torch

from seq2seq_helpers import PAIRS, SPEECH_TEXTS, tiny_t5, tiny_whisper, write_clips, write_pairs
from sparseft.cli import main
from sparseft.errors import ConfigError
from sparseft.models import find_prunable, load_model, load_tokenizer
from sparseft.prune import load_masks
from sparseft.runtime import SparseLinear
from sparseft.settings import (
    CompressSettings,
    EvalSettings,
    FinetuneSettings,
    OneShotSettings,
    QuantizeSettings,
)
from sparseft.stages import StageIO, run_compress, run_eval, run_finetune, run_oneshot, run_quantize


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread while these tests run (the token comparisons below are exact), restored after, so
    no other test module inherits it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(family: str, tmp_path: Path) -> str:
    if family == "t5":
        return str(write_pairs(tmp_path / "pairs.tsv", PAIRS))
    folder = write_clips(tmp_path / "clips", SPEECH_TEXTS, split="train")
    write_clips(folder, SPEECH_TEXTS[:3], split="test")
    write_clips(folder, SPEECH_TEXTS[:4], rate=22050, split="calibration")  # resampled to 16 kHz on reading
    return str(folder)


def _build(family: str, folder: Path):
    return tiny_t5(folder) if family == "t5" else tiny_whisper(folder)


def _generate(model, family: str, data: str) -> torch.Tensor:
    from sparseft.data.examples import clip_features, feature_extractor_for
    from sparseft.data.speech import load_clips

    if family == "t5":
        ids = torch.tensor([[78, 77, 68, 220, 66, 64, 83]])
        return model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    features = clip_features(feature_extractor_for(model.config), load_clips(data, "test")[:2])
    return model.generate(input_features=features, max_new_tokens=6, do_sample=False)


@pytest.mark.parametrize("family", ["t5", "whisper"])
def test_oneshot_finetune_compress_reload_generate(family, tmp_path):
    dense, data = tmp_path / "dense", _data(family, tmp_path)
    _build(family, dense)
    calib = {"source": [data], "nsamples": 4, "batch_size": 2, "seqlen": 24}
    oneshot = run_oneshot(OneShotSettings(sparsity=0.5, calib=calib, progress=False),
                          StageIO(str(dense), tmp_path / "pruned"))
    assert oneshot["calibration"]["nsamples"] == 4 and 0.45 < oneshot["total_sparsity"] < 0.55
    masks = load_masks(tmp_path / "pruned" / "masks.safetensors")
    assert any("encoder." in n for n in masks) and any("decoder." in n for n in masks)

    settings = FinetuneSettings(data=[data], nsamples=6, seqlen=24, steps=2, batch_size=2, save_steps=2,
                                learning_rate=1e-3, loss={"task": 1.0, "kd": 1.0, "squarehead": 1.0})
    record = run_finetune(settings, StageIO(str(tmp_path / "pruned"), tmp_path / "finetuned", source=str(dense)))
    assert record["data"] == [data] and record["teacher_model"] == str(dense)
    assert record["log_history"][0]["loss_squarehead"] > 0 and record["log_history"][0]["loss_kd"] >= 0
    tuned = load_model(tmp_path / "finetuned")
    for name, module in find_prunable(tuned).items():
        assert not module.weight[~masks[name]].any(), name  # pruned weights stayed zero through training

    run_compress(CompressSettings(values="fp32"), StageIO(str(tmp_path / "finetuned"), tmp_path / "compressed"))
    sparse = load_model(tmp_path / "compressed")
    assert {n for n, m in sparse.named_modules() if isinstance(m, SparseLinear)} == set(masks)
    assert (tmp_path / "compressed" / "generation_config.json").is_file()
    assert load_tokenizer(tmp_path / "compressed") is not None  # the processor / tokenizer travels along
    with torch.no_grad():
        assert torch.equal(_generate(sparse, family, data), _generate(tuned, family, data))

    scores = run_eval(EvalSettings(data=[data], max_new_tokens=4), StageIO(str(tmp_path / "compressed")))
    metric = {"t5": "bleu", "whisper": "wer"}[family]
    assert scores["metric"] == metric and data in scores[metric] and len(scores["outputs"][data]) > 0


def test_whisper_folder_with_a_bare_tokenizer_gets_a_feature_extractor_and_quantizes(tmp_path):
    tiny_whisper(tmp_path / "dense", processor=False)  # byte tokenizer only, no preprocessor config
    data = _data("whisper", tmp_path)
    record = run_oneshot(OneShotSettings(sparsity=0.5, calib={"source": data, "nsamples": 2, "batch_size": 2},
                                         progress=False), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    assert record["total_sparsity"] > 0.45
    # quantize's static activation scales come from the same clips, through the same calibration path
    quant = run_quantize(QuantizeSettings(scheme="w8a8-static", calib={"source": data, "nsamples": 2, "batch_size": 2}),
                         StageIO(str(tmp_path / "pruned"), tmp_path / "quantized"))
    assert quant["quantized_layers"] == len(load_masks(tmp_path / "pruned" / "masks.safetensors"))


def test_data_of_the_wrong_kind_is_refused_before_any_work(tmp_path):
    tiny_whisper(tmp_path / "w")
    with pytest.raises(ConfigError, match="holds texts, but a speech model reads speech clips"):
        run_oneshot(OneShotSettings(calib={"source": "fortunes"}), StageIO(str(tmp_path / "w"), tmp_path / "o"))
    tiny_t5(tmp_path / "t5")
    with pytest.raises(ConfigError, match="holds speech clips with transcripts, but a seq2seq model"):
        run_eval(EvalSettings(data=["librivox"]), StageIO(str(tmp_path / "t5")))
    with pytest.raises(ConfigError, match="librivox is a test set"):
        run_finetune(FinetuneSettings(data=["librivox"], teacher=None, loss={"squarehead": 0}),
                     StageIO(str(tmp_path / "w"), tmp_path / "ft"))


def test_t5_through_the_cli(tmp_path, capsys):
    dense, pairs = tmp_path / "dense", _data("t5", tmp_path)
    tiny_t5(dense)
    assert main(["oneshot", str(dense), "--calib", pairs, "--nsamples", "4", "--batch-size", "2", "--seqlen", "16",
                 "--no-progress", "--out", str(tmp_path / "pruned")]) == 0
    assert main(["finetune", "--student", str(tmp_path / "pruned"), "--teacher", str(dense), "--data", pairs,
                 "--num-texts", "6", "--seqlen", "16", "--steps", "2", "--batch-size", "2", "--save-steps", "2",
                 "--loss", "ce+kd+squarehead", "--gmp", "0.6", "--gmp-initial", "0.5", "--gmp-end", "1",
                 "--gmp-frequency", "1", "--out", str(tmp_path / "tuned")]) == 0
    assert main(["compress", str(tmp_path / "tuned"), "--format", "int8", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "c"), "--data", pairs, "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert f"bleu: {pairs} " in out and "sparsity 6" in out  # GMP took it from 50% to 60%


def test_whisper_proj_out_quantizes_to_int4_by_gptq_and_compresses_to_those_codes(tmp_path):
    """`quantize --head int4` on a speech model: the same head path as causal LMs (proj_out, tied to the
    decoder's embedding, untied; the embedding kept), and the compressed model transcribes like the folder."""
    from sparseft.quant import load_quantized, read_head_quant

    tiny_whisper(tmp_path / "dense")
    embedding = load_model(tmp_path / "dense").get_decoder().embed_tokens.weight.detach().clone()
    data = _data("whisper", tmp_path)
    calib = {"source": data, "nsamples": 4, "batch_size": 2}
    run_oneshot(OneShotSettings(sparsity=0.5, calib=calib, progress=False), StageIO(str(tmp_path / "dense"), tmp_path / "p"))
    record = run_quantize(QuantizeSettings(scheme="w8a16", head="int4", calib=calib), StageIO(str(tmp_path / "p"), tmp_path / "q"))
    assert record["head"]["name"] == "proj_out" and read_head_quant(tmp_path / "q").fmt == "int4"
    quantized, _ = load_quantized(tmp_path / "q")
    assert torch.equal(quantized.get_decoder().embed_tokens.weight, embedding)
    assert not torch.equal(quantized.proj_out.weight, embedding)
    run_compress(CompressSettings(), StageIO(str(tmp_path / "q"), tmp_path / "c"))
    compressed = load_model(tmp_path / "c")
    assert isinstance(compressed.proj_out, SparseLinear) and compressed.proj_out.fmt == "int4"
    assert torch.equal(compressed.proj_out.compressed().decompress(), quantized.proj_out.weight.detach())
    assert torch.equal(_generate(compressed, "whisper", data), _generate(quantized, "whisper", data))


def test_a_frozen_whisper_encoder_stays_the_inputs_while_the_decoder_trains(tmp_path):
    from safetensors.torch import load_file

    dense, data = tmp_path / "dense", _data("whisper", tmp_path)
    tiny_whisper(dense)
    settings = FinetuneSettings(data=[data], nsamples=6, seqlen=24, steps=2, batch_size=2, save_steps=2,
                                learning_rate=1e-2, loss={"task": 1.0, "kd": 1.0, "squarehead": 1.0},
                                freeze=[r"^model\.encoder\."])
    run_finetune(settings, StageIO(str(dense), tmp_path / "tuned", source=str(dense)))
    before, after = load_file(dense / "model.safetensors"), load_file(tmp_path / "tuned" / "model.safetensors")
    encoder = [n for n in before if n.startswith("model.encoder.")]
    decoder = [n for n in before if n.startswith("model.decoder.layers.")]
    assert encoder and decoder
    assert all(torch.equal(before[n], after[n]) for n in encoder)
    assert sum(not torch.equal(before[n], after[n]) for n in decoder) > len(decoder) // 2


def test_a_freeze_pattern_that_names_no_parameter_is_refused(tmp_path):
    dense, data = tmp_path / "dense", _data("whisper", tmp_path)
    tiny_whisper(dense)
    settings = FinetuneSettings(data=[data], nsamples=2, seqlen=24, steps=1, batch_size=2, teacher=None,
                                loss={"task": 1.0, "squarehead": 0.0}, freeze=[r"^encoder\.blocks"])
    with pytest.raises(ConfigError, match=r"freeze \['\^encoder\\\\.blocks'\] matches no parameter"):
        run_finetune(settings, StageIO(str(dense), tmp_path / "tuned"))


def test_quantize_calibration_without_sources_reads_the_model_kinds():
    """`sparseft quantize WHISPER --method gptq --nsamples 32` (no --calib): the speech model's clips at the
    sizes given, not the text default the settings class holds for causal LMs."""
    from sparseft.stages.quantize import _calibration
    from tiny_models import build_tiny_model

    whisper, llama = build_tiny_model("whisper"), build_tiny_model("llama")
    sized = QuantizeSettings(method="gptq", calib={"nsamples": 3, "batch_size": 1})
    calib = _calibration(sized, whisper)
    assert calib.source == ["espeak"] and (calib.nsamples, calib.batch_size) == (3, 1)
    assert _calibration(sized, llama).source == ["gsm"]
    given = QuantizeSettings(method="gptq", calib={"source": ["flite"], "nsamples": 3})
    assert _calibration(given, whisper).source == ["flite"]
    assert _calibration(QuantizeSettings(method="gptq"), whisper).source == ["espeak"]
