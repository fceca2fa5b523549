"""KokoroPipeline on a tiny random Kokoro: results, chunking, seeds, raw phonemes and bad input."""

import re

import mlx.core as mx
import numpy as np
import pytest

from mlx_tts.audio import TakeError
from mlx_tts.errors import MlxTtsError
from mlx_tts.models.kokoro import KokoroPipeline
from mlx_tts.models.kokoro.pipeline import STREAM_GROWTH, split_text

SPEED = 4  # random duration heads give ~25 frames per token; keep the audio short


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return KokoroPipeline(lang_code="a", model=tiny_model)


def test_results_unpack_like_the_spec(pipeline):
    results = list(pipeline("The MLX King lives. Let him cook!", voice="af_test", speed=SPEED))
    assert len(results) == 1
    graphemes, phonemes, audio = results[0]
    assert graphemes == "The MLX King lives. Let him cook!"
    assert phonemes == "ði ˌɛmˌɛlˈɛks kˈɪŋ lˈɪvz. lˈɛt hˌɪm kˈʊk!"
    assert isinstance(audio, mx.array) and audio.ndim == 2 and audio.shape[0] == 1
    durations = np.asarray(results[0].durations)
    assert len(durations) == len(phonemes) + 2 and durations.min() >= 1
    assert audio.shape[1] == durations.sum() * 600  # one frame is 600 samples at 24 kHz
    assert np.isfinite(np.asarray(audio)).all()


def test_same_seed_same_audio(pipeline):
    takes = []
    for seed in (7, 7, 8):
        mx.random.seed(seed)
        takes.append(np.asarray(next(iter(pipeline("Hi there.", voice="am_test", speed=SPEED))).audio))
    assert np.array_equal(takes[0], takes[1])
    assert not np.array_equal(takes[0], takes[2])  # the sine source's noise follows the seed


def test_long_text_is_chunked_under_the_limit_and_nothing_is_dropped(pipeline):
    sentence = "Kokoro reads every word of this sentence, and then, without pausing, it reads the next one"
    text = ". ".join([sentence] * 30) + ".\n\n" + "A last line with no punctuation " * 30
    chunks = pipeline.chunk_text(text)
    assert len(chunks) > 2
    assert pipeline.model.max_phonemes == 510
    assert all(len(phonemes) <= 510 for _, phonemes in chunks)
    words = lambda s: re.findall(r"[A-Za-z]+", s)  # noqa: E731
    assert [w for g, _ in chunks for w in words(g)] == words(text)


def test_split_pattern(pipeline):
    assert len(pipeline.chunk_text("One.\nTwo.", split_pattern=r"\n+")) == 2
    assert len(pipeline.chunk_text("One.\nTwo.", split_pattern=None)) == 1
    assert split_text("One. Two.", r"(?<=\.)\s+") == ["One.", "Two."]  # `re` syntax, lookbehinds included


def test_a_backtracking_split_pattern_is_stopped_with_an_error_naming_it(pipeline):
    # Python's `re` would take hours on this: every way of grouping the a's is tried before failing.
    with pytest.raises(MlxTtsError, match=r"split pattern '\(a\+\)\+b' took over 1 s"):
        pipeline.chunk_text("a" * 5000 + "!", split_pattern="(a+)+b")
    with pytest.raises(MlxTtsError, match=r"'\(unclosed' is not a valid regular expression"):
        list(pipeline("Hello.", voice="af_test", split_pattern="(unclosed"))


def test_raw_phonemes_override_pronunciation(pipeline):
    result = next(iter(pipeline.from_phonemes("kˈʊk", voice="af_test", speed=SPEED)))
    assert result.phonemes == "kˈʊk" and result.audio.shape[1] > 0
    with pytest.raises(ValueError, match="doesn't know: 7"):
        next(iter(pipeline.from_phonemes("kˈʊk7", voice="af_test")))


def test_edited_phoneme_lines_are_one_chunk_each_and_all_checked_before_any_is_spoken(pipeline):
    results = list(pipeline.from_phoneme_lines("kˈʊk\n\n  hˈi  \n", voice="af_test", speed=SPEED))
    assert [r.phonemes for r in results] == ["kˈʊk", "hˈi"]
    with pytest.raises(ValueError, match="doesn't know: 7"):
        pipeline.from_phoneme_lines(["kˈʊk", "hˈi7"], voice="af_test")  # at the call: nothing made yet
    with pytest.raises(ValueError, match="phonemes are empty"):
        pipeline.from_phoneme_lines("\n \n", voice="af_test")


def test_bad_input_to_the_pipeline_raises_at_the_call(pipeline):
    with pytest.raises(MlxTtsError, match="not a valid regular expression"):
        pipeline("Hello.", voice="af_test", split_pattern="(unclosed")  # no chunk asked for yet
    with pytest.raises(ValueError, match="speed must be between"):
        pipeline("Hello.", voice="af_test", speed=9)


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("", {}, "text is empty"),
        ("   \n ", {}, "text is empty"),
        ("... !!! ???", {}, "nothing pronounceable"),
        ("Hello.", {"speed": 0.1}, "speed must be between 0.25 and 4"),
        ("Hello.", {"speed": 5}, "speed must be between 0.25 and 4"),
        ("Hello.", {"voice": "af_heart"}, "af_test"),  # an unknown voice lists the voices there are
    ],
)
def test_bad_input_gets_a_clear_error_and_the_pipeline_keeps_working(pipeline, text, kwargs, message):
    kwargs = {"voice": "af_test", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        list(pipeline(text, **kwargs))
    assert pipeline.chunk_text("Still working.")[0][1] == "stˈɪl wˈɜɹkɪŋ."


def test_text_in_another_script_than_the_language_is_warned(pipeline, caplog):
    with caplog.at_level("WARNING", logger="mlx_tts"):
        results = list(pipeline("こんにちは。", voice="af_test", speed=SPEED))
    assert results and "Japanese script, which does not match the language American English ('a')" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mlx_tts"):
        list(pipeline("Hello.", voice="af_test", speed=SPEED))
    assert "does not match" not in caplog.text


def test_unknown_lang_code_lists_the_codes(tiny_model):
    with pytest.raises(ValueError) as error:
        KokoroPipeline(lang_code="x", model=tiny_model)
    assert "'a'" in str(error.value) and "'j'" in str(error.value) and "'z'" in str(error.value)


def test_weighted_voice_blend(pipeline):
    a, b = pipeline.voices.resolve("af_test"), pipeline.voices.resolve("am_test")
    blend = pipeline.voices.resolve("af_test(3)+am_test(1)")
    assert mx.allclose(blend, 0.75 * a + 0.25 * b, atol=1e-6)


def test_first_chunk_max_cuts_the_head_at_a_clause_then_packs_the_rest(pipeline):
    text = "When the rain stopped, the children ran outside, and the dog followed them across the wet field."
    whole = pipeline.chunk_text(text)
    assert len(whole) == 1
    cut = pipeline._cut_head(*whole[0], 40, pipeline.phonemize)
    assert [g for g, _ in cut] == [
        "When the rain stopped,", "the children ran outside, and the dog followed them across the wet field."
    ]
    assert len(cut[0][1]) <= 40
    phonemes = "ðə dˈɔɡ fˈɑlOd ðɛm, əkɹˈɔs ðə wˈɛt fˈild."
    results = list(pipeline.from_phonemes(phonemes, "af_test", SPEED, first_chunk_max=12))
    # then caps of 18 and 27: the second chunk ends at the comma
    assert [r.phonemes for r in results] == ["ðə dˈɔɡ", "fˈɑlOd ðɛm,", "əkɹˈɔs ðə wˈɛt fˈild."]


def test_stream_schedule_grows_chunks_and_keeps_every_word(pipeline):
    """Streamed chunks start at about `first_chunk_max` phonemes and grow by STREAM_GROWTH, so each is made while
    the ones before it play; together they are the text, in order."""
    text = " ".join(["Every morning the baker opens the shop, sweeps the floor and lights the ovens."] * 6)
    chunks = pipeline.chunk_text(text)
    streamed = list(pipeline._stream_schedule(chunks, 16, pipeline.phonemize, lambda t: [m.start() for m in
                                                                                         re.finditer(r"\s+", t)]))
    assert " ".join(g for g, _, _ in streamed).split() == text.split()
    assert [cut for _, _, cut in streamed][-1] is False and any(cut for _, _, cut in streamed)
    lengths = [len(p) for _, p, _ in streamed]
    assert lengths[0] <= 16 and len(streamed) >= 4
    cap = 16
    for length in lengths[:-1]:
        assert length <= cap  # every cut found a word boundary under its cap
        cap = round(cap * STREAM_GROWTH)
    assert max(lengths) > 3 * lengths[0]  # they grow


def test_japanese_streaming_starts_with_a_phrase():
    """Japanese has no spaces: the first streamed chunk ends at a phrase (after a particle), from the tagger."""
    from mlx_tts.g2p import get_g2p

    g2p = get_g2p("j")
    text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"
    assert [text[:end] for end in g2p.phrase_ends(text)][:2] == ["吾輩は", "吾輩は猫である。名前は"]

    def phonemize(part):
        return g2p(part)[0]

    chunks = [(text, phonemize(text))]
    head, second, *_ = KokoroPipeline._stream_schedule(chunks, 16, phonemize, g2p.phrase_ends)
    assert head == ("吾輩は", phonemize("吾輩は"), True)  # cut inside the sentence
    assert second[:1] == ("猫である。",) and second[2] is False


def test_first_chunk_max_in_text_without_spaces_cuts_at_the_first_clause():
    """Japanese has no spaces: a cap smaller than the first clause cuts after that clause (it used to give up
    and stream the whole text as its first chunk)."""
    text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"

    def phonemize(part):
        return "a" * (3 * len(part))

    for cap in (6, 12, 24):
        head, tail = KokoroPipeline._cut_head(text, phonemize(text), cap, phonemize)
        assert head[0] == "吾輩は猫である。" and tail[0] == text[len(head[0]):]
    # a cap beyond the first clause still cuts at the clause end inside its span
    head, _ = KokoroPipeline._cut_head(text, phonemize(text), 48, phonemize)
    assert head[0] == "吾輩は猫である。名前はまだ無い。"


@pytest.fixture
def damaged_pipeline(tiny_checkpoint):
    """A pipeline on its own copy of the tiny model, whose weights a test may damage in memory."""
    from mlx_tts.utils import load_model

    return KokoroPipeline(lang_code="a", model=load_model(tiny_checkpoint))


def test_short_texts_are_speech(pipeline):
    for text in ("a", "I", "Oh."):
        (result,) = pipeline(text, voice="am_test", speed=SPEED)
        assert result.audio.shape[1] > 0


@pytest.mark.parametrize(
    "damage, problem",
    [
        ({"weight": 0.0, "bias": -100.0}, r"made [0-9.]+ s of silence \(RMS -1[0-9][0-9] dBFS\)"),
        ({"weight": float("nan")}, r"made NaN or infinite samples \([0-9]+ of [0-9]+\)"),
    ],
    ids=["silent", "nan"],
)
def test_a_damaged_model_names_itself_and_the_voice(damaged_pipeline, damage, problem):
    conv = damaged_pipeline.model.decoder.generator.conv_post
    for name, value in damage.items():
        conv[name] = mx.full(conv[name].shape, value)
    path = re.escape(str(damaged_pipeline.model.path))
    with pytest.raises(TakeError, match=rf"Kokoro {path} with voice 'af_test\(1\)\+am_test' {problem} for 'Hello\.'"):
        list(damaged_pipeline("Hello.", voice="af_test(1)+am_test", speed=SPEED))


def test_streamed_joins_inside_a_sentence_keep_a_short_gap(pipeline):
    """Kokoro's ~0.3 s lead and ~0.6 s trail of silence are trimmed where a streamed chunk was cut mid-sentence,
    and only there; the trimmed lead is recorded so that word timings stay on the audio."""
    from mlx_tts.models.kokoro.pipeline import JOIN_LEAD_S, JOIN_TRAIL_S, Result

    rate = pipeline.sample_rate
    tone = np.sin(np.arange(rate) * 2 * np.pi * 220 / rate).astype(np.float32)
    audio = mx.array(np.concatenate([np.zeros(int(0.3 * rate)), tone, np.zeros(int(0.6 * rate))])[None], mx.float32)
    result = Result("a b", "ə b", audio)
    assert pipeline._trim_joins(result, False, False) is result
    both = pipeline._trim_joins(result, True, True)
    assert abs(both.duration_s - (1 + JOIN_LEAD_S + JOIN_TRAIL_S)) < 0.01
    assert abs(both.trimmed_s - (0.3 - JOIN_LEAD_S)) < 0.01
    end_only = pipeline._trim_joins(result, False, True)
    assert end_only.trimmed_s == 0 and abs(end_only.duration_s - (1.3 + JOIN_TRAIL_S)) < 0.01


def test_streamed_take_word_timings_stay_ordered_and_on_the_audio(pipeline):
    from mlx_tts.take import kokoro_takes, last

    text = "Every morning the baker opens the shop and sweeps the floor before anyone wakes up"
    take = last(kokoro_takes(pipeline, text, "af_test", SPEED, first_chunk_max=12))
    assert len(take.chunks) >= 3
    starts = [w.start_s for w in take.words]
    assert [w.word for w in take.words] == text.split()
    assert starts == sorted(starts) and all(w.end_s >= w.start_s for w in take.words)
    assert take.words[-1].end_s <= take.seconds + 0.01
