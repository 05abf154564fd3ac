"""Whisper tiny.en side by side: dense PyTorch fp32, sparseft compressed models and CTranslate2 int8.

Per-clip transcription time and normalised WER on the real pocketsphinx clips (librivox + cards, 10 clips,
never trained or calibrated on), batch 1, greedy, 1 thread for every engine, in the same run:

- ``dense fp32``: the packaged model in HF transformers (eager PyTorch), the baseline of every ratio;
- ``sparseft LABEL``: each compressed folder given with ``--sparse LABEL=DIR`` (sparse C kernels
  swapped into the same HF model; ``--fuse`` also fuses their projections);
- ``ct2 int8``: CTranslate2 4.8.5 (faster-whisper's engine) running the packaged model's own CTranslate2
  files (``model.bin``, quantized to int8 as it loads), in its own venv (created once under
  ``~/.cache/sparseft/venvs``): CTranslate2 is never a dependency of sparseft. It is driven by
  ``sparseft.peers`` (the same peer `sparseft bench --peer ct2:int8` runs) over a pipe.

Every engine reads the same log-mel features, computed once here by the model's feature extractor (not
timed), and its token ids are decoded by the same tokenizer, so only the encoder + greedy decoding is
timed (for CTranslate2 also a pipe round trip of well under a millisecond; its library-only time is
recorded too). Rounds are interleaved clip by clip, the engine order rotated each round; the best
round of each (engine, clip) is kept. Results: ``benchmarks/results/whisper_ct2.json`` with the
machine, threads, clips, per-engine per-clip seconds, WER (total and per source) and speed ratios
against dense fp32 and against CTranslate2 int8 measured in the same run.

Quick check (two clips, one round; well under a minute once the CTranslate2 venv exists):

    OMP_WAIT_POLICY=passive nice -n 10 .venv/bin/python benchmarks/whisper_ct2_compare.py --rounds 1 --clips 2 \
        --sparse "50% int8=runs/whisper-sgpt50-sh-int8" --out /tmp/whisper_ct2_quick.json

The full measurement, on a quiet machine. First the sparse models (SparseGPT on synthetic espeak speech,
SquareHead + KD fine-tuning from the dense model, int8 bitmask checkpoint), for S in 50 and 70:

    sparseft oneshot whisper-tiny.en --sparsity 0.$S --calib espeak --nsamples 32 --out runs/whisper-sgpt$S
    sparseft finetune --student runs/whisper-sgpt$S --teacher whisper-tiny.en --data espeak --num-texts 200 \
        --seqlen 128 --steps 100 --batch-size 4 --lr 1e-5 --loss ce+kd+squarehead --out runs/whisper-sgpt$S-sh
    sparseft compress runs/whisper-sgpt$S-sh --format int8 --out runs/whisper-sgpt$S-sh-int8

then (10 clips x 4 engines x 5 rounds, ~2 minutes):

    OMP_WAIT_POLICY=passive .venv/bin/python benchmarks/whisper_ct2_compare.py --rounds 5 \
        --sparse "50% int8=runs/whisper-sgpt50-sh-int8" "70% int8=runs/whisper-sgpt70-sh-int8"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from itertools import zip_longest
from pathlib import Path

import torch

from sparseft.data.examples import clip_features, speech_processing
from sparseft.data.speech import SpeechClip, load_clips
from sparseft.evaluate.generation import decode_generated, transcribe_options
from sparseft.evaluate.metrics import corpus_word_error_rate
from sparseft.models import load_model, load_tokenizer
from sparseft.stages.bench import Timing, generate_runs, native_runs, set_threads, timed_rounds
from sparseft.stages.tasks import BenchItem

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("librivox", "cards")
DENSE, CT2 = "dense fp32", "ct2"  # CTranslate2 engines are named "ct2:<compute type>"


# ----- clips, engines, results -----------------------------------------------------------------------
def pocketsphinx_clips(n: int | None) -> list[tuple[str, SpeechClip]]:
    """(source, clip) of the librivox and cards test clips, alternating sources, the first `n`."""
    groups = [[(source, clip) for clip in load_clips(source, "test")] for source in SOURCES]
    return [pair for row in zip_longest(*groups) for pair in row if pair is not None][:n]


def parse_sparse(specs: list[str]) -> dict[str, str]:
    """'LABEL=DIR' (or DIR: labelled by its folder name) -> {"sparseft LABEL": DIR}."""
    models = {}
    for spec in specs:
        label, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        if not Path(path).is_dir():
            raise SystemExit(f"--sparse {spec!r}: {path} is not a model folder")
        models[f"sparseft {label}"] = path
    return models


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())  # fmt: skip
    from sparseft.runtime import best_isa

    return {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(), "sparseft_isa": best_isa(),
            "load_average_at_start": os.getloadavg()}


def engine_result(seconds: list[float], transcripts: list[str], clips: list[tuple[str, SpeechClip]]) -> dict:
    """Seconds per clip and in total, WER over all clips and per source, transcripts."""
    refs = [clip.text for _, clip in clips]
    errors = corpus_word_error_rate(refs, transcripts)
    by_source = {}
    for source in dict.fromkeys(s for s, _ in clips):
        idx = [i for i, (s, _) in enumerate(clips) if s == source]
        by_source[source] = corpus_word_error_rate([refs[i] for i in idx], [transcripts[i] for i in idx]).wer
    return {"seconds_per_clip": seconds, "total_seconds": sum(seconds), "mean_seconds": sum(seconds) / len(seconds),
            "wer": errors.wer, "errors": errors.errors, "words": errors.words, "wer_by_source": by_source,
            "transcripts": transcripts}  # fmt: skip


def add_ratios(engines: dict[str, dict], anchor: str) -> None:
    """Speed ratios (> 1: faster) of every engine against dense fp32 and against `anchor` (CTranslate2)."""
    for result in engines.values():
        for name, key in ((DENSE, "dense_fp32"), (anchor, "ct2")):
            other = engines[name]
            result[f"speed_vs_{key}"] = other["total_seconds"] / result["total_seconds"]
            result[f"per_clip_vs_{key}"] = [o / s for o, s in zip(other["seconds_per_clip"], result["seconds_per_clip"],
                                                                   strict=True)]


def print_table(engines: dict[str, dict]) -> None:
    print("\n| engine | s per clip | vs dense fp32 | vs ct2 int8 | WER |\n|---|---|---|---|---|")
    for name, r in engines.items():
        print(f"| {name} | {r['mean_seconds']:.3f} | {r['speed_vs_dense_fp32']:.2f}x | {r['speed_vs_ct2']:.2f}x | "
              f"{100 * r['wer']:.2f}% ({r['errors']}/{r['words']}) |")


def write_json(path: Path, data: dict) -> None:
    from sparseft.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1))
    print(f"wrote {path}", flush=True)


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", default="whisper-tiny.en", help="the dense model (packaged name or folder)")
    ap.add_argument("--sparse", nargs="*", default=[], metavar="LABEL=DIR", help="sparseft models to time")
    ap.add_argument("--ct2-model", type=Path, help="CTranslate2 model folder (default: the packaged model's files)")
    ap.add_argument("--ct2-compute", nargs="+", default=["int8"], help="CTranslate2 compute types (first: the anchor)")
    ap.add_argument("--clips", type=int, default=None, help="the first N clips (librivox and cards alternating)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best per clip is kept")
    ap.add_argument("--threads", type=int, default=1, help="threads of every engine (default 1)")
    ap.add_argument("--fuse", action="store_true", help="fuse the sparse models' q/k/v (and cross k/v) projections")
    ap.add_argument("--compile", action="store_true", help="compile the sparse models' decoder step (static cache)")
    ap.add_argument("--prepared", action="store_true",
                    help="also time the dense and each sparse model prepared: fused, compiled decoder step, encoder "
                         "attention in bf16 where the CPU has AMX or AVX512-BF16 (label + ' prepared')")
    ap.add_argument("--native", action="store_true",
                    help="with --prepared: also decode each prepared model natively, one C call per decoder token "
                         "(runtime/native_whisper.py; label + ' native')")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "whisper_ct2.json")
    return ap.parse_args()


def torch_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """Dense fp32 (as loaded: the baseline of every ratio) and each sparse model (--fuse / --compile applied);
    with --prepared also the dense model and each sparse one fused, with the decoder step compiled and the
    encoder attention in bf16 (label + ' prepared')."""
    from sparseft.runtime.fast_decode import prepare_for_decode

    max_len = 4 + transcribe_options(load_model(args.dense))["max_new_tokens"]
    models = {DENSE: load_model(args.dense)}
    specs = [(DENSE, args.dense, None)] if args.prepared else []
    for name, path in parse_sparse(args.sparse).items():
        specs.append((name, path, (args.fuse, args.compile)))
    for name, path, flags in specs:
        if flags is not None:  # a sparse model as asked
            models[name] = load_model(path)
            if any(flags):
                prepare_for_decode(models[name], compile=flags[1], fuse=flags[0], max_cache_len=max_len)
        if args.prepared:
            label = f"{name} prepared"
            models[label] = load_model(path)
            prepare_for_decode(models[label], compile=True, fuse=True, max_cache_len=max_len, long_attention=True)
    return models


def ct2_peers(args, tokenizer, dense, items: list[BenchItem]):
    """CTranslate2 workers (one per compute type) on the dense model's CTranslate2 files."""
    from sparseft.peers import start_peers

    specs = [f"{CT2}:{compute}" for compute in args.ct2_compute]
    return start_peers(specs, "speech", items, source=args.dense,
                       peer_model=str(args.ct2_model) if args.ct2_model else None, threads=args.threads,
                       tokenizer=tokenizer, model=dense)


def main() -> None:
    args = arguments()
    threads = set_threads(args.threads)
    clips = pocketsphinx_clips(args.clips)
    models = torch_models(args)
    dense = models[DENSE]
    extractor, tokenizer = speech_processing(dense.config, load_tokenizer(args.dense))
    features = torch.cat([clip_features(extractor, [clip]) for _, clip in clips])
    items = [BenchItem(clip.audio.name, {"input_features": features[i : i + 1]}, transcribe_options(dense), clip.text)
             for i, (_, clip) in enumerate(clips)]  # fmt: skip
    machine = machine_info()
    peers = ct2_peers(args, load_tokenizer(args.dense), dense, items)
    try:
        versions = next(iter(peers.info.values()))
        runs = generate_runs(models, items)
        if args.native:
            prepared = {name.replace(" prepared", " native"): m for name, m in models.items() if name.endswith(" prepared")}
            runs.update(native_runs(prepared, items)[0])
        timing: Timing = timed_rounds({**runs, **peers.runs}, len(items), args.rounds)
    finally:
        peers.close()
    library = peers.library_seconds
    engines = {}
    for name, outputs in timing.outputs.items():
        ids = [o if isinstance(o, list) else o[0].tolist() for o in outputs]
        engines[name] = engine_result(timing.seconds[name], [decode_generated(tokenizer, [i])[0] for i in ids], clips)
        # a model that stops early (or rambles) is timed on a shorter (longer) transcript: keep the lengths
        special = set(tokenizer.all_special_ids)
        engines[name]["text_tokens"] = [sum(t not in special for t in i) for i in ids]
        if name in library:
            engines[name]["library_seconds_per_clip"] = library[name]
    add_ratios(engines, f"{CT2}:{args.ct2_compute[0]}")
    machine["load_average_at_end"] = os.getloadavg()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "threads": threads, "rounds": args.rounds,
            "batch": 1, "decoding": "greedy, no timestamps, features precomputed (not timed)",
            "timing": f"best of {args.rounds} interleaved rounds per clip, engine order rotated each round",
            "dense": args.dense, "sparse": parse_sparse(args.sparse), "fuse": args.fuse, "compile": args.compile,
            "prepared": args.prepared, "native": args.native,
            "versions": {"torch": torch.__version__, **versions}}  # fmt: skip
    clip_info = [{"source": s, "audio": str(c.audio), "reference": c.text, "words": len(c.text.split())} for s, c in clips]
    write_json(args.out, {"meta": meta, "clips": clip_info, "engines": engines,
                          "timeline": [list(t) for t in timing.timeline]})
    print_table(engines)


if __name__ == "__main__":
    main()
