"""The bench stage on a speech model: a tiny random Whisper, pruned and compressed through the stages, is
timed clip by clip against its dense source in interleaved rounds, and both models' WER is reported.
Timings are never asserted (any machine, any load): only the record's structure and the order of the calls."""

from pathlib import Path

import pytest

from seq2seq_helpers import SPEECH_TEXTS, tiny_whisper, write_clips
from sparseft.cli import main
from sparseft.settings import BenchSettings, CompressSettings, PruneSettings
from sparseft.stages import StageIO, run_bench, run_compress, run_prune
from sparseft.stages.common import made_from


@pytest.fixture
def compressed_whisper(tmp_path: Path) -> tuple[Path, Path, str]:
    """(dense folder, int8 compressed folder, clips folder) of a tiny Whisper pruned to 60%."""
    tiny_whisper(tmp_path / "dense")
    run_prune(PruneSettings(sparsity=0.6), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    run_compress(CompressSettings(values="int8"), StageIO(str(tmp_path / "pruned"), tmp_path / "int8"))
    clips = write_clips(tmp_path / "clips", SPEECH_TEXTS[:3], split="test")
    return tmp_path / "dense", tmp_path / "int8", str(clips)


def test_speech_bench_times_both_models_clip_by_clip_in_alternating_rounds(compressed_whisper):
    dense, compressed, clips = compressed_whisper
    settings = BenchSettings(data=[clips], max_clips=2, rounds=3, baseline=str(dense), threads=1)
    record = run_bench(settings, StageIO(str(compressed), compressed.parent / "bench"))
    assert record["model_kind"] == "speech" and record["threads"] == 1 and record["baseline_model"] == str(dense)
    assert [item["reference"] for item in record["items"]] == SPEECH_TEXTS[:2]
    for name in ("model", "baseline"):
        assert len(record["seconds"][name]) == 2 and all(s > 0 for s in record["seconds"][name])
        assert record["total_seconds"][name] == pytest.approx(sum(record["seconds"][name]))
        assert 0 <= record["wer"][name] and record["words"][name] == sum(len(t.split()) for t in SPEECH_TEXTS[:2])
        assert len(record["transcripts"][name]) == 2 and len(record["output_tokens"][name]) == 2
    assert record["speedup"] == pytest.approx(record["total_seconds"]["baseline"] / record["total_seconds"]["model"])
    assert "tokens_per_s" not in record  # a transcript stops at its end: no fixed token count
    # Every (round, clip) is timed for both models one right after the other; who goes first alternates.
    timeline = record["timeline"]
    assert len(timeline) == 3 * 2 * 2
    pairs = [timeline[i : i + 2] for i in range(0, len(timeline), 2)]
    for number, (first, second) in enumerate(pairs):
        assert first[:2] == second[:2] == [number // 2, number % 2]
        assert first[2] == ("model" if first[0] % 2 == 0 else "baseline") and {first[2], second[2]} == {"model", "baseline"}
    assert (compressed.parent / "bench" / "stage.json").is_file()


def test_cli_speech_bench_defaults_to_the_dense_model_it_was_made_from(compressed_whisper, capsys):
    dense, compressed, clips = compressed_whisper
    assert made_from(str(compressed)) == str(dense)  # int8 <- pruned <- dense
    assert made_from(str(dense)) is None
    assert main(["bench", "--model", str(compressed), "--data", clips, "--clips", "1", "--rounds", "1",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "s per clip" in out and "WER" in out and f"x {dense}" in out
    assert main(["bench", "--model", str(compressed), "--data", clips, "--clips", "0"]) == 1  # a clear error
    assert "--clips" in capsys.readouterr().err
