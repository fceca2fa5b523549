"""Word timings from Kokoro's durations (monotonic, covering the audio, one per word), captions, and the
pronunciation lexicon applied before G2P."""

import re

import pytest

from mlx_tts.captions import WordTiming, align_words, cues, phoneme_word_spans, to_srt, to_vtt
from mlx_tts.lexicon import Lexicon, LexiconError, load_lexicon, parse_lexicon
from mlx_tts.models.kokoro import KokoroPipeline

SPEED = 4  # a random tiny model: keep the audio short
TEXT = "I paid $5.50 at 3pm, didn't I? The quick brown fox jumps over the lazy dog. Let him cook!"


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return KokoroPipeline(lang_code="a", model=tiny_model)


def timed_take(pipeline, text, **kwargs):
    words, seconds = [], 0.0
    for result in pipeline(text, voice="af_test", speed=SPEED, **kwargs):
        words += pipeline.word_timings(result, seconds)
        seconds += result.duration_s
    return words, seconds


def test_word_timings_are_monotonic_cover_the_audio_and_match_the_words(pipeline):
    words, seconds = timed_take(pipeline, TEXT + "\n" + "A second part, after a split.", split_pattern=r"\n+")
    assert [w.word for w in words] == (TEXT + " A second part, after a split.").split()
    for w in words:
        assert 0 <= w.start_s <= w.end_s <= seconds
    for a, b in zip(words, words[1:]):
        assert a.end_s <= b.start_s
    frame_s = pipeline.model.frame_size / pipeline.sample_rate
    # only the pads and pauses around the speech are left out: at most the pads' frames at each end
    assert words[0].start_s < 0.2 * seconds and words[-1].end_s > 0.8 * seconds
    assert all(w.end_s - w.start_s >= frame_s for w in words if re.search(r"\w", w.word))


def test_spans_follow_the_durations():
    vocab = {c: i for i, c in enumerate(" abc,")}
    # pad, a, b, ' ', c, ',', pad: frames 2, 1, 3, 1, 2, 4, 5 -> "ab" in frames 2-6, "c," sounds in frames 7-9
    spans = phoneme_word_spans("ab c,", [2, 1, 3, 1, 2, 4, 5], vocab, 0.5)
    assert spans == [(1.0, 3.0), (3.5, 4.5)]
    with pytest.raises(ValueError, match="durations"):
        phoneme_word_spans("ab c,", [1, 2], vocab, 0.5)


def test_words_spoken_as_several_phoneme_words_are_grouped():
    spans = [(0, 1), (1, 2), (2, 3), (3, 4)]
    phonemes = {"I": "ˌI", "paid": "pˈAd", "$5": "fˈIv dˈɑləɹz"}
    timings = align_words("I paid $5", spans, phonemes.get)
    assert timings == [WordTiming("I", 0, 1), WordTiming("paid", 1, 2), WordTiming("$5", 2, 4)]


def test_japanese_text_is_cut_into_clauses():
    spans = [(0, 1), (1, 2), (2, 3)]
    phonemes = {"こんにちは、": "koɲɲiʨiβa,", "今日はいい天気。": "kʲoː βa"}
    timings = align_words("こんにちは、今日はいい天気。", spans, phonemes.get)
    assert timings == [WordTiming("こんにちは、", 0, 1), WordTiming("今日はいい天気。", 1, 3)]


def test_srt_and_vtt_cues():
    words = [WordTiming("Hello", 0.25, 0.5), WordTiming("world.", 0.55, 1.0), WordTiming("Again", 62.0, 63.5)]
    assert cues(words) == [(0.25, 1.0, "Hello world."), (62.0, 63.5, "Again")]
    assert to_srt(words) == ("1\n00:00:00,250 --> 00:00:01,000\nHello world.\n\n"
                             "2\n00:01:02,000 --> 00:01:03,500\nAgain\n\n")
    assert to_vtt(words).startswith("WEBVTT\n\n00:00:00.250 --> 00:00:01.000\nHello world.\n\n")


def test_lexicon_replaces_whole_words_before_g2p():
    lexicon = Lexicon({"Kokoro": "kˈOkəɹO", "New York": "nu jɔɹk", "世界": "sekai"})
    assert lexicon.matches("kokoro and Kokoros, New York; KOKORO") == ["kokoro", "New York", "KOKORO"]
    calls = []

    def g2p(text):
        calls.append(text)
        return text.upper()

    assert lexicon.phonemize("Say Kokoro, please.", g2p) == "SAY kˈOkəɹO, PLEASE."
    assert calls == ["Say", ", please."]
    assert lexicon.phonemize("こんにちは、世界。", g2p) == "こんにちは、 sekai。"


def test_lexicon_files_and_bad_entries(tmp_path):
    (tmp_path / "lex.csv").write_text("word,phonemes\nKokoro,kˈOkəɹO\nMLX, ˈɛm ˈɛl ˈɛks\n", encoding="utf-8")
    assert load_lexicon(tmp_path / "lex.csv") == {"Kokoro": "kˈOkəɹO", "MLX": "ˈɛm ˈɛl ˈɛks"}
    (tmp_path / "lex.json").write_text('{"Kokoro": "kˈOkəɹO"}', encoding="utf-8")
    assert load_lexicon(tmp_path / "lex.json") == {"Kokoro": "kˈOkəɹO"}
    with pytest.raises(LexiconError, match="not valid JSON"):
        parse_lexicon('{"a": ')
    with pytest.raises(LexiconError, match="row 1 must have two columns"):
        parse_lexicon("a,b,c")
    with pytest.raises(LexiconError, match="non-empty"):
        parse_lexicon({"word": " "})
    with pytest.raises(LexiconError, match="no such lexicon file"):
        load_lexicon(tmp_path / "missing.json")


def test_pipeline_speaks_lexicon_phonemes_and_refuses_unknown_symbols(pipeline):
    with_lexicon = pipeline.with_lexicon({"fox": "kˈOkəɹO"})
    assert with_lexicon.phonemize("The fox.") == pipeline.phonemize("The") + " kˈOkəɹO."
    assert pipeline.phonemize("fox") != "kˈOkəɹO", "the lexicon leaked into the shared pipeline"
    (result,) = with_lexicon("The fox.", voice="af_test", speed=SPEED)
    assert "kˈOkəɹO" in result.phonemes
    with pytest.raises(LexiconError, match="'fox'.*doesn't know the symbols"):
        pipeline.with_lexicon({"fox": "\u2603"})
