"""The real peer engines, each in its own venv (created on first use; llama-cpp-python builds from source,
minutes), timed by `run_bench` in the same rounds as the model, and checked against sparseft's own output:

- llama.cpp runs the packaged SmolLM2 GGUF (Q4_1): sparseft's dense model is that GGUF dequantized to fp32,
  so the two engines must agree on the first greedy tokens (llama.cpp also quantizes the activations, so
  a late token may differ); a Q8_0 copy requantized by llama.cpp is timed beside it.
- CTranslate2 transcribes the real librivox clips from the packaged Whisper's own CT2 files, at the WER of
  the same model in PyTorch (within a word).
"""

import pytest

from sparseft.settings import BenchSettings
from sparseft.stages import StageIO, run_bench


@pytest.mark.packaged
@pytest.mark.slow
def test_llama_cpp_peer_decodes_what_sparseft_decodes(tmp_path):
    settings = BenchSettings(tokens=8, rounds=1, baseline=None, peers=["llama.cpp", "llama.cpp:Q8_0"], threads=1)
    record = run_bench(settings, StageIO("smollm2-135m", tmp_path / "bench"))
    assert set(record["peers"]) == {"llama.cpp", "llama.cpp:Q8_0"}
    assert record["peers"]["llama.cpp:Q8_0"]["model_file"].endswith(".Q8_0.gguf")
    lengths = record["output_tokens"]
    assert lengths["llama.cpp"] == lengths["llama.cpp:Q8_0"] == lengths["model"]  # prompt + exactly 8 tokens
    for name in ("llama.cpp", "llama.cpp:Q8_0"):
        assert record["tokens_per_s"][name] > 0 and record["speedup_vs"][name] > 0
        assert 0 < record["peer_library_seconds"][name][0] <= record["seconds"][name][0]
    assert (tmp_path / "bench" / "stage.json").is_file()


@pytest.mark.packaged
@pytest.mark.slow
def test_llama_cpp_tokens_match_the_dense_model(tmp_path):
    import torch

    from sparseft.models import load_model, load_tokenizer
    from sparseft.peers import start_peers
    from sparseft.stages.tasks import BenchItem

    tokenizer = load_tokenizer("smollm2-135m")
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    item = BenchItem("prompt", {"input_ids": ids}, {}, new_tokens=6)
    peers = start_peers(["llama.cpp"], "causal", [item], source="smollm2-135m", threads=1)
    try:
        theirs = peers.runs["llama.cpp"](0)[0, ids.shape[1]:].tolist()
    finally:
        peers.close()
    with torch.no_grad():
        ours = load_model("smollm2-135m").generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:].tolist()
    assert theirs[:3] == ours[:3], (tokenizer.decode(theirs), tokenizer.decode(ours))


@pytest.mark.packaged
@pytest.mark.slow
def test_ct2_peer_transcribes_at_the_model_wer(tmp_path):
    settings = BenchSettings(data=["librivox"], max_clips=2, rounds=1, baseline=None, peers=["ct2:int8"], threads=1)
    record = run_bench(settings, StageIO("whisper-tiny.en"))
    assert record["peers"]["ct2:int8"]["compute_type"] == "int8"
    wer, words = record["wer"], record["words"]["model"]
    assert words > 10 and wer["ct2:int8"] <= wer["model"] + 1.5 / words, record["transcripts"]
    assert record["transcripts"]["ct2:int8"][0].strip()
