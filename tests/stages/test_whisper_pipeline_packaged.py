"""The packaged Whisper tiny.en through every stage a user runs, down to the sparse runtime: SparseGPT 50%
calibrated on a few synthetic espeak clips -> SquareHead + KD fine-tuning for a few steps -> compress
(fp32 and int8 values) -> reload -> transcribe a real librivox clip (never calibrated or trained on).

With fp32 values the compressed model computes what the fine-tuned masked model computes (only the order
of float additions differs), so its greedy transcript must be the same words; int8 values are allowed
INT8_WER_BOUND more word errors on that clip. About a minute and a half on two busy cores."""

import pytest

from sparseft.runtime import SparseLinear
from sparseft.settings import CompressSettings, EvalSettings, FinetuneSettings, OneShotSettings
from sparseft.stages import StageIO, run_compress, run_eval, run_finetune, run_oneshot

#: int8 values (per-channel scales, zeros kept) may cost this much WER on the clip vs the fp32 masked model.
INT8_WER_BOUND = 0.10
CLIP = EvalSettings(data=["librivox"], max_texts=1)


@pytest.mark.packaged
@pytest.mark.slow
def test_whisper_tiny_en_oneshot_finetune_compress_reload_transcribe(tmp_path):
    from sparseft.data.synth import build_speech_set
    from sparseft.models import load_model

    clips = str(build_speech_set(tmp_path / "espeak", train=6, test=1, progress=False))
    run_oneshot(OneShotSettings(sparsity=0.5, calib={"source": clips, "nsamples": 4, "batch_size": 2}, progress=False),
                StageIO("whisper-tiny.en", tmp_path / "sgpt50"))
    tuned = run_finetune(FinetuneSettings(data=[clips], nsamples=6, seqlen=64, steps=3, batch_size=2, save_steps=3,
                                          learning_rate=1e-5, loss={"task": 1.0, "kd": 1.0, "squarehead": 1.0}),
                         StageIO(str(tmp_path / "sgpt50"), tmp_path / "tuned", source="whisper-tiny.en"))
    assert tuned["log_history"][0]["loss_squarehead"] > 0
    masked = run_eval(CLIP, StageIO(str(tmp_path / "tuned")))
    assert masked["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert masked["wer"]["librivox"] < 0.3, masked["outputs"]  # the fine-tuned sparse model still transcribes

    for values in ("fp32", "int8"):
        out = tmp_path / f"tuned-{values}"
        run_compress(CompressSettings(values=values), StageIO(str(tmp_path / "tuned"), out))
        assert sum(isinstance(m, SparseLinear) for m in load_model(out).modules()) == 4 * 6 + 4 * 10  # every block Linear
        sparse = run_eval(CLIP, StageIO(str(out)))
        if values == "fp32":
            assert sparse["outputs"] == masked["outputs"]
        else:
            assert sparse["wer"]["librivox"] <= masked["wer"]["librivox"] + INT8_WER_BOUND, sparse["outputs"]
