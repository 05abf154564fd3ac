"""`sparseft data`: list the named data sources; build the synthetic speech set (espeak-ng)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  sparseft data list                                   # every named source, its kind and its splits
  sparseft data speech --out data/espeak --train 400   # synthetic English clips: DIR/{train,test}.jsonl + wav/
  sparseft finetune --student runs/whisper-sgpt50 --teacher whisper-tiny.en --data data/espeak --out ...

The named source 'espeak' is the same set at its default size, generated once into the cache on
first use. Train texts come from the text sources' train splits, test texts from their test splits;
Sense and Sensibility (read in the librivox test clips) and Persuasion are never spoken in training."""


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
    speech = actions.add_parser("speech", help="synthesize English speech clips with espeak-ng")
    speech.add_argument("--out", required=True, help="folder to write (atomically): train.jsonl, test.jsonl, wav/")
    speech.add_argument("--train", type=int, default=200, help="training clips (default 200)")
    speech.add_argument("--test", type=int, default=40, help="test clips (default 40)")
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
    from sparseft.data.synth import build_speech_set
    from sparseft.errors import ConfigError

    if args.train < 1 or args.test < 1:
        raise ConfigError(f"--train and --test must be >= 1, got {args.train} and {args.test}")
    folder = build_speech_set(args.out, train=args.train, test=args.test, seed=args.seed,
                              progress=not args.no_progress, overwrite=True if args.overwrite else None)
    print(f"wrote {args.train} training and {args.test} test clips to {folder}")
    return 0
