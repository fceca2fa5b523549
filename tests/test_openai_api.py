"""The OpenAI-compatible speech API and the MCP tools, against `python app.py --api-key ...` through the real
`openai` client and MCP client: formats decoded back, streaming, captions, lexicon, error statuses."""

import asyncio
import base64
import io

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from studio_server import running_studio

pytestmark = pytest.mark.e2e

API_KEY = "test-key"
TEXT = "こんにちは。今日はいい天気ですね。"
ENGLISH = "The quick brown fox jumps over the lazy dog. Then it went home, and slept until noon."
VOICE = "jf_alpha"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("openai_api"), "--api-key", API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "v1", api_key=API_KEY, max_retries=0, timeout=300)


def speech(client, **kwargs) -> bytes:
    settings = {"model": "tts-1", "input": TEXT, "voice": VOICE, **kwargs}
    return client.audio.speech.create(**settings).content


def decode(data: bytes):
    """(samples, rate) through PyAV (any container), int16 scaled to [-1, 1]."""
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].rate
        audio = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    return (audio / 32768 if audio.dtype == np.int16 else audio).astype(np.float32), rate


@pytest.fixture(scope="module")
def wav_take(client):
    audio, rate = sf.read(io.BytesIO(speech(client, response_format="wav")), dtype="float32")
    return audio, rate


def test_wav_is_speech_at_24k(wav_take):
    audio, rate = wav_take
    assert rate == 24000
    assert 1.0 < len(audio) / rate < 8
    assert np.sqrt(np.mean(audio**2)) > 0.01, "the take is silent"


def test_mp3_decodes_back_to_the_same_duration(client, wav_take):
    wav, _ = wav_take
    data = speech(client, response_format="mp3")
    assert data[:3] == b"ID3" or data[0] == 0xFF, "not an MP3 stream"
    audio, rate = decode(data)
    assert abs(len(audio) / rate - len(wav) / 24000) < 0.1  # the same seed: the same take, plus codec padding


def test_pcm_is_raw_16_bit_samples_of_the_same_take(client, wav_take):
    wav, _ = wav_take
    pcm = np.frombuffer(speech(client, response_format="pcm"), "<i2").astype(np.float32) / 32768
    assert len(pcm) == len(wav)
    np.testing.assert_allclose(pcm, wav, atol=2e-4)


def test_streaming_sends_chunks_that_make_one_file(client):
    with client.audio.speech.with_streaming_response.create(
        model="kokoro", input=ENGLISH, voice=VOICE, response_format="mp3", extra_body={"stream": True},
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        assert response.headers["content-type"] == "audio/mpeg"
        pieces = [piece for piece in response.iter_bytes() if piece]
    assert len(pieces) > 1, "the audio came in one piece"
    audio, rate = decode(b"".join(pieces))
    assert 2.0 < len(audio) / rate < 15


def test_openai_voice_names_blends_and_speed(client, wav_take):
    wav, _ = wav_take
    nova = decode(speech(client, voice="nova", response_format="flac"))[0]
    assert len(nova) > 0.5 * 24000
    blend = decode(speech(client, voice="jf_alpha(2)+jf_nezumi(1)", response_format="opus"))[0]
    assert len(blend) > 0.5 * 24000
    fast, _ = sf.read(io.BytesIO(speech(client, response_format="wav", speed=2.0)), dtype="float32")
    assert len(fast) < 0.75 * len(wav)


def test_captioned_speech_gives_word_timestamps_over_the_audio(server):
    lexicon = {"fox": "fˈɑks"}
    response = httpx.post(server + "v1/audio/speech/captioned", timeout=300,
                          headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"model": "kokoro", "input": ENGLISH, "voice": VOICE, "lang_code": "a",
                                "response_format": "wav", "lexicon": lexicon})
    assert response.status_code == 200, response.text
    body = response.json()
    audio, rate = sf.read(io.BytesIO(base64.b64decode(body["audio"])), dtype="float32")
    assert abs(len(audio) / rate - body["duration"]) < 1e-3
    words = body["timestamps"]
    assert [w["word"] for w in words] == ENGLISH.split()
    assert all(w["start_time"] <= w["end_time"] for w in words)
    assert all(a["end_time"] <= b["start_time"] for a, b in zip(words, words[1:]))
    assert words[0]["start_time"] < 0.5 and body["duration"] - 0.6 < words[-1]["end_time"] <= body["duration"]
    assert body["lexicon_replaced"] == ["fox"]


def test_models_and_voices_are_listed(client, server):
    # What can be served now: a lab studio answers to `csm`, but offline it has no CSM weights to load.
    assert [m.id for m in client.models.list()] == ["kokoro", "tts-1", "tts-1-hd"]
    voices = httpx.get(server + "v1/audio/voices", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert VOICE in voices["voices"] and voices["csm_voices"] == []
    assert set(voices["openai_voices"].values()) <= set(voices["voices"])  # offline: stand-ins that exist


@pytest.mark.parametrize("kwargs, error, status, param", [
    ({"input": ""}, openai.BadRequestError, 400, "input"),
    ({"voice": "af_nobody"}, openai.NotFoundError, 404, "voice"),
    ({"voice": "../../etc/passwd"}, openai.NotFoundError, 404, "voice"),
    ({"model": "tts-2"}, openai.NotFoundError, 404, "model"),
    ({"model": "csm"}, openai.NotFoundError, 404, "model"),  # no CSM weights offline: says what to download
    ({"input": "あ" * 5001}, openai.APIStatusError, 413, "input"),
    ({"speed": 9.0}, openai.BadRequestError, 400, "speed"),
    ({"extra_body": {"seed": -1}}, openai.BadRequestError, 400, "seed"),  # outside MLX's 0..2^32-1
    ({"extra_body": {"seed": 2**64}}, openai.BadRequestError, 400, "seed"),
    ({"extra_body": {"split_pattern": "(a+)+$"}}, openai.BadRequestError, 400, "split_pattern"),
    ({"extra_body": {"lexicon": {"fox": "\u2603"}}}, openai.BadRequestError, 400, "lexicon"),
])
def test_bad_requests_get_openai_errors(client, kwargs, error, status, param):
    with pytest.raises(error) as caught:
        speech(client, **kwargs)
    assert caught.value.status_code == status
    body = caught.value.response.json()["error"]
    assert body["param"] == param and body["message"] and body["type"]


def test_a_missing_or_wrong_key_gets_401(server):
    for key in ("wrong", None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(server + "v1/audio/speech", headers=headers,
                              json={"model": "tts-1", "input": TEXT, "voice": VOICE})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "v1", api_key="wrong", max_retries=0).models.list()


def test_the_studio_keeps_serving_after_errors(client):
    assert len(speech(client, response_format="pcm")) > 24000


def test_mcp_lists_the_synthesis_phoneme_and_quantization_tools(server):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def list_tools():
        async with streamable_http_client(server + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in asyncio.run(list_tools())}
    for name in ("kokoro_generate", "kokoro_phonemes", "quant_compare"):
        assert name in tools, f"no MCP tool {name}: {sorted(tools)}"
        assert len(tools[name].description) > 40
        properties = tools[name].inputSchema["properties"]
        assert "voice" in properties and "seed" in properties
        assert all(spec.get("description") for spec in properties.values()), properties
