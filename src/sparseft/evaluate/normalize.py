"""English text normalisation for word error rates, after the rules of Whisper's English normaliser.

Both the reference and the transcript go through it, so a WER counts words, not spelling conventions:
lower case; bracketed and parenthesised asides and fillers (uh, um, hmm) removed; titles spelled out
(Mr. -> mister); contractions expanded (won't -> will not, 're -> are, 's -> is, as Whisper does);
British spellings made American (colour -> color); currency and percent spelled ($68 -> sixty eight
dollars); numbers written as words (1,250 -> one thousand two hundred fifty; 3.5 -> three point five;
21st -> twenty first); accents and every other symbol dropped; hyphens separate words.

Unlike Whisper's normaliser (which writes spelled numbers as digits), numbers become words: the
pocketsphinx references ("ten of clubs") and speech itself are words.

    >>> normalize_english("Mr. Dashwood won't pay $1,250 (he said).")
    'mister dashwood will not pay one thousand two hundred fifty dollars'
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
             "nine": "ninth", "twelve": "twelfth"}
_CURRENCIES = {"$": "dollars", "£": "pounds", "€": "euros", "¢": "cents"}

_REPLACEMENTS = [(re.compile(p), r) for p, r in [
    # whole words first (Whisper's list, shortened)
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\blet's\b", "let us"), (r"\bain't\b", "aint"),
    (r"\by'all\b", "you all"), (r"\bwanna\b", "want to"), (r"\bgotta\b", "got to"), (r"\bgonna\b", "going to"),
    (r"\bma'am\b", "madam"), (r"\bmr\b\.?", "mister"), (r"\bmrs\b\.?", "missus"), (r"\bms\b\.?", "miss"),
    (r"\bdr\b\.?", "doctor"), (r"\bst\b\.?", "saint"), (r"\bprof\b\.?", "professor"), (r"\bcapt\b\.?", "captain"),
    (r"\bgen\b\.?", "general"), (r"\bsen\b\.?", "senator"), (r"\brev\b\.?", "reverend"), (r"\blt\b\.?", "lieutenant"),
    (r"\bcol\b\.?", "colonel"), (r"\bjr\b\.?", "junior"), (r"\bsr\b\.?", "senior"), (r"\besq\b\.?", "esquire"),
    # perfect tenses, then the general contractions
    (r"'d been\b", " had been"), (r"'s been\b", " has been"), (r"'d gone\b", " had gone"),
    (r"'s gone\b", " has gone"), (r"'d done\b", " had done"), (r"'s got\b", " has got"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'s\b", " is"), (r"'d\b", " would"), (r"'ll\b", " will"),
    (r"'t\b", " not"), (r"'ve\b", " have"), (r"'m\b", " am"),
]]  # fmt: skip

#: British -> American spellings (the common ones of Whisper's much longer table).
_SPELLINGS = {
    "colour": "color", "colours": "colors", "favour": "favor", "favourite": "favorite", "honour": "honor",
    "honours": "honors", "humour": "humor", "labour": "labor", "neighbour": "neighbor", "neighbours": "neighbors",
    "neighbourhood": "neighborhood", "behaviour": "behavior", "harbour": "harbor", "rumour": "rumor",
    "centre": "center", "centres": "centers", "theatre": "theater", "metre": "meter", "metres": "meters",
    "litre": "liter", "litres": "liters", "realise": "realize", "realised": "realized", "organise": "organize",
    "organised": "organized", "recognise": "recognize", "recognised": "recognized", "apologise": "apologize",
    "grey": "gray", "travelled": "traveled", "travelling": "traveling", "cancelled": "canceled",
    "jewellery": "jewelry", "cheque": "check", "programme": "program", "defence": "defense", "offence": "offense",
    "licence": "license", "analyse": "analyze", "catalogue": "catalog", "dialogue": "dialog", "mould": "mold",
    "plough": "plow", "tyre": "tire", "aluminium": "aluminum", "storey": "story", "practise": "practice",
}  # fmt: skip

_BRACKETS = re.compile(r"[<\[][^>\]]*[>\]]|\([^)]*\)")
_FILLERS = re.compile(r"\b(?:hmm+|mm+|mhm|uh|um+)\b")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_MONEY = re.compile(r"([$£€¢])\s*(\d+(?:\.\d+)?)")
_PERCENT = re.compile(r"(\d)\s*%")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NON_WORD = re.compile(r"[^a-z ]+")


def number_to_words(n: int) -> str:
    """A non-negative integer in English words, without 'and': 1250 -> 'one thousand two hundred fifty'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """21 -> 'twenty first', 12 -> 'twelfth', 40 -> 'fortieth'."""
    *head, last = number_to_words(n).split()
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _number_words(match: re.Match) -> str:
    whole, _, fraction = match.group(0).partition(".")
    words = number_to_words(int(whole))
    return f" {words} point {' '.join(_ONES[int(d)] for d in fraction)} " if fraction else f" {words} "


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalize_english(text: str) -> str:
    """`text` normalised for WER (see the module docstring); words separated by single spaces."""
    text = _strip_accents(text.lower()).replace("’", "'")
    text = _FILLERS.sub(" ", _BRACKETS.sub(" ", text))
    text = re.sub(r"\s+'", "'", text)
    for pattern, replacement in _REPLACEMENTS:
        text = pattern.sub(replacement, text)
    text = _DIGIT_COMMA.sub("", text)
    text = _MONEY.sub(lambda m: f"{m[2]} {_CURRENCIES[m[1]]}", text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _ORDINAL.sub(lambda m: f" {ordinal_words(int(m[1]))} ", text)
    text = _NUMBER.sub(_number_words, text)
    words = _NON_WORD.sub(" ", text).split()
    return " ".join(_SPELLINGS.get(w, w) for w in words)


def normalize_basic(text: str) -> str:
    """`text` normalised for WER in a language other than English, as Whisper's basic normaliser does,
    except that combining marks stay (they are letters' vowel signs in Devanagari and other Indic scripts,
    which Whisper's version turns into spaces): NFKC, case folded, bracketed asides dropped, punctuation
    and symbols replaced by spaces, digits of any script written as ASCII digits."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _BRACKETS.sub(" ", text)
    chars = []
    for c in text:
        category = unicodedata.category(c)
        if category == "Nd":
            chars.append(str(unicodedata.digit(c)))
        elif category[0] in "PS":
            chars.append(" ")
        else:
            chars.append(c)
    return " ".join("".join(chars).split())


def normalize_text(text: str, language: str = "en") -> str:
    """The WER normalisation of `language` (ISO 639-1): English rules for "en", else `normalize_basic`."""
    return normalize_english(text) if language == "en" else normalize_basic(text)
