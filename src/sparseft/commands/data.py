"""`sparseft data`: list the named data sources; build the synthetic speech set (espeak-ng)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  sparseft data list                                   # every named source, its kind and its splits
  sparseft data speech --out data/espeak --train 400   # synthetic English clips: DIR/{train,test}.jsonl + wav/
  sparseft finetune --student runs/whisper-sgpt50 --teacher whisper-tiny.en --data data/espeak --out ...
  sparseft data speech --engine flite --out data/flite  # the same texts spoken by flite's 4 voices
  sparseft data speech --language hi --out data/espeak-hi   # Hindi GSM problems, all test templates

The named sources 'espeak' and 'flite' are the same sets at their default size, generated once into
the cache on first use (fine-tune on both: --data espeak flite). espeak-ng's formant voices are robotic
and vary in accent, pitch and speed; flite's CMU voices (awb, rms, slt, kal16) sound closer to a person.
Train texts come from the text sources' train splits, test texts from their test splits;
Sense and Sensibility (read in the librivox test clips) and Persuasion are never spoken in training.
Other languages (--language hi, de, fr; named sources espeak-hi, espeak-de, espeak-fr) speak GSM
problems in that language: variants of the train templates, and the originals of the test templates."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="list data sources; build the synthetic speech set",
        description="Named data sources (texts, text pairs, speech) and the synthetic speech set.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every named source with its kind").set_defaults(func=run_list)
    speech = actions.add_parser("speech", help="synthesize speech clips with espeak-ng (English, Hindi, German, French) or flite (English)")
    speech.add_argument("--out", required=True, help="folder to write (atomically): train.jsonl, test.jsonl, wav/")
    speech.add_argument("--train", type=int, default=200, help="training clips (default 200)")
    speech.add_argument("--test", type=int, default=None,
                        help="test clips (default 40 in English; every test template's original in another language)")
    speech.add_argument("--language", default="en", help="en (default), hi, de or fr")
    speech.add_argument("--engine", default="espeak", help="espeak (default: espeak-ng, every language) or flite "
                        "(English only)")
    speech.add_argument("--seed", type=int, default=0, help="seed for texts, voices, speeds and pitches")
    speech.add_argument("--overwrite", action="store_true", help="replace --out even if sparseft did not write it")
    speech.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    speech.set_defaults(func=run_speech)


def run_list(args: argparse.Namespace) -> int:
    from sparseft.data.pairs import PAIR_SOURCES
    from sparseft.data.sources import SOURCES
    from sparseft.data.speech import SPEECH_SOURCES

    for kind, sources in (("texts", SOURCES), ("text pairs", PAIR_SOURCES), ("speech", SPEECH_SOURCES)):
        for source in sources.values():
            print(f"{source.name:<10} {kind:<11} {source.description}")
    return 0


def run_speech(args: argparse.Namespace) -> int:
    from sparseft.data.synth import LANGUAGES, build_speech_set
    from sparseft.errors import ConfigError

    if args.language not in LANGUAGES:
        raise ConfigError(f"--language {args.language!r} is not synthesized; choose one of {', '.join(LANGUAGES)}")
    test = args.test if args.test is not None else (40 if args.language == "en" else None)
    if args.train < 1 or (test is not None and test < 1):
        raise ConfigError(f"--train and --test must be >= 1, got {args.train} and {args.test}")
    folder = build_speech_set(args.out, train=args.train, test=test, seed=args.seed, progress=not args.no_progress,
                              overwrite=True if args.overwrite else None, language=args.language,
                              engine=args.engine)
    import json

    written = json.loads((folder / "stage.json").read_text())
    print(f"wrote {args.train} training and {written['test']} test clips ({args.language}, {args.engine}) to {folder}")
    return 0
