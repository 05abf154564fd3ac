"""Splits are disjoint by construction: no evaluated text shares a GSM template, an Austen paragraph or a
fortune with any training or calibration text; files parse the same for every stage."""

import struct

import pytest

from sparseft.data import load_texts
from sparseft.data.austen import _XDR, NOVELS, austen_novels, paragraphs
from sparseft.data.texts import gsm_problems, gsm_template_split, gsm_variants
from sparseft.errors import ConfigError


@pytest.mark.packaged
def test_gsm_test_problems_share_no_template_with_training_variants():
    test_ids = {p.id_orig for p in gsm_problems() if gsm_template_split(p.id_orig) == "test"}
    train = gsm_variants(60, seed=0, split="train")
    assert len(test_ids) == 26 and len(train) == 60
    assert not test_ids & {p.id_orig for p in train}
    heldout = load_texts("gsm", "test")
    assert len(heldout) == 26 and not set(heldout) & set(load_texts("gsm", "calibration", n=60))
    assert all(t.startswith("Question: ") and "####" in t for t in heldout)


@pytest.mark.packaged
def test_austen_novels_read_without_r_and_split_by_novel():
    novels = austen_novels()
    assert sorted(novels) == sorted(NOVELS)
    words = {name: sum(len(p.split()) for p in paragraphs(lines)) for name, lines in novels.items()}
    assert 80_000 < words["persuasion"] < 90_000 and 150_000 < words["emma"] < 165_000  # the published lengths
    assert novels["prideprejudice"][:1] == ["PRIDE AND PREJUDICE"]
    test, train = load_texts("austen", "test"), load_texts("austen", "train")
    assert len(test) > 900 and len(train) > 8000
    assert not set(test) & set(train)
    assert any("Anne Elliot" in p for p in test) and not any("Anne Elliot" in p for p in train)
    assert load_texts("austen", "train", n=50, seed=1) == load_texts("austen", "train", n=50, seed=1)


@pytest.mark.packaged
def test_fortunes_split_is_disjoint_and_covers_everything():
    test, train = load_texts("fortunes", "test"), load_texts("fortunes", "train")
    assert not set(test) & set(train)
    assert 0.15 < len(test) / (len(test) + len(train)) < 0.25


def _serialized_strings(values: list[str | None], names: list[str] | None = None) -> bytes:
    """An R XDR serialization of a character vector, written independently of the reader under test."""
    def char(text):
        if text is None:
            return struct.pack(">ii", 9, -1)
        raw = text.encode()
        return struct.pack(">ii", 9 | (1 << 15), len(raw)) + raw  # UTF-8 flag set, as R writes it

    flags = 16 | ((1 << 9) if names else 0)
    body = struct.pack(">ii", flags, len(values)) + b"".join(char(v) for v in values)
    if names:  # attribute pairlist: tag 'names' (a symbol), value a STRSXP
        tag = struct.pack(">i", 1) + char("names")
        body += struct.pack(">i", 2 | (1 << 10)) + tag + struct.pack(">ii", 16, len(names))
        body += b"".join(char(n) for n in names) + struct.pack(">i", 254)
    return b"X\n" + struct.pack(">iii", 2, 0x040202, 0x020300) + body


def test_xdr_reader_against_hand_built_serializations():
    assert _XDR(_serialized_strings(["Émilie", None, ""])).object() == ["Émilie", None, ""]
    assert _XDR(_serialized_strings(["a", "b"], names=["x", "y"])).object() == {"x": "a", "y": "b"}
    with pytest.raises(Exception, match="ends early"):
        _XDR(_serialized_strings(["abc"])[:-1]).object()


def test_files_parse_the_same_for_every_split(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("first text\nstill first\n\nsecond\n\n\n")
    assert {s: tuple(load_texts(str(txt), s)) for s in ("train", "calibration", "test")} == dict.fromkeys(
        ("train", "calibration", "test"), ("first text\nstill first", "second"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_texts(str(tmp_path / "bin.txt"), "train")
    with pytest.raises(ConfigError, match="neither 'gsm', 'austen', 'fortunes'"):
        load_texts(str(tmp_path / "missing.txt"), "test")
    with pytest.raises(ConfigError, match="unknown split"):
        load_texts("gsm", "validation")
