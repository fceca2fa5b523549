"""CSM: sampler, frames, configs, converters, pipeline, and parity with transformers'
`CsmForConditionalGeneration` (tiny config, identical weights on both sides)."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_tts.audio import TakeError
from mlx_tts.models import csm
from mlx_tts.models.csm.frames import audio_frames, prompt_frames, segment_frames
from mlx_tts.models.csm.llama import LlamaArgs, rope_periods
from mlx_tts.models.csm.model import FLAVORS
from mlx_tts.utils import load_model

from tiny_csm import (
    SUPPRESS,
    csm_config_dict,
    kyutai_state_dict,
    make_tokenizer,
    original_csm_state_dict,
    original_flavors,
    speech_like,
    tiny_mlx_csm_folder,
)

GREEDY_FRAMES = 20


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(str(tiny_mlx_csm_folder(tmp_path_factory.mktemp("csm") / "tiny")))


@pytest.fixture(scope="module")
def pipeline(model):
    return csm.CSMPipeline(model)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny transformers CSM (random weights, random codec codebooks) and ours, converted from its folder."""
    import torch
    from transformers import CsmConfig, CsmForConditionalGeneration

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny ops: threads only contend on the shared cores
    config = csm_config_dict()
    config.pop("model_type")
    torch_model = CsmForConditionalGeneration(CsmConfig(**config)).eval()
    with torch.no_grad():
        for name, p in torch_model.codec_model.named_parameters():
            if name.endswith("scale"):
                p.copy_(torch.rand_like(p) * 0.5 + 0.25)
        for name, b in torch_model.codec_model.named_buffers():
            if name.endswith("embed_sum"):
                b.copy_(torch.randn_like(b))
            elif name.endswith("cluster_usage"):
                b.copy_(torch.rand_like(b) + 0.5)
    root = tmp_path_factory.mktemp("csm-reference")
    torch_model.save_pretrained(root / "transformers")
    make_tokenizer(root / "transformers" / "tokenizer.json")
    csm.convert(root / "transformers", root / "mlx")
    return torch_model, load_model(str(root / "mlx")), root


def reference_prompt(model):
    """The same conversation for both sides: a text turn with its audio, then the text to speak."""
    audio = speech_like(1.0)
    codes = np.array(model.codec.encode(audio)[0])
    first, second = [96, 5, 6, 7, 97], [96, 8, 9, 97]
    input_ids = [first + [98] * codes.shape[1] + [99] + second]  # 98: audio placeholder, 99: end of audio
    tokens, mask = prompt_frames([segment_frames(first, codes, 32), segment_frames(second, None, 32)])
    return audio, input_ids, mx.array(tokens)[None], mx.array(mask)[None]


def torch_inputs(audio, input_ids):
    import torch

    ids = torch.tensor(input_ids)
    return dict(
        input_ids=ids, attention_mask=torch.ones_like(ids),  # audio placeholders share the pad id
        input_values=torch.from_numpy(audio)[None, None], input_values_cutoffs=torch.tensor([[len(audio)]]),
    )


# ---- parity with transformers ----

@pytest.mark.reference
def test_backbone_logits_match(reference):
    import torch

    torch_model, model, _ = reference
    audio, input_ids, tokens, mask = reference_prompt(model)
    with torch.no_grad():
        expected = torch_model(**torch_inputs(audio, input_ids)).logits.numpy()
    hidden = model.backbone(model.embed_frames(tokens, mask), model.backbone.make_cache())
    got = np.array(model.codebook0_head(hidden))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.reference
def test_depth_decoder_logits_match(reference):
    import torch

    torch_model, model, _ = reference
    hidden = mx.random.normal((1, 64), key=mx.random.key(3))
    codes = np.random.default_rng(3).integers(0, 64, 31)
    with torch.no_grad():
        expected = torch_model.depth_decoder(
            input_ids=torch.tensor([[0, *codes]]), backbone_last_hidden_state=torch.from_numpy(np.array(hidden))
        ).logits.numpy()[0]
    code_embeddings = model.audio_embeddings(mx.array(codes) + model._codebook_offsets[:31])
    steps = mx.concatenate([hidden[:, None], code_embeddings[None]], 1)
    out = model.decoder(model.projection(steps), model.decoder.make_cache())[0]
    got = np.stack([np.array(out[i + 1] @ model.audio_head[i]) for i in range(31)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.reference
def test_greedy_generation_gives_identical_codes(reference):
    import torch

    torch_model, model, _ = reference
    audio, input_ids, tokens, mask = reference_prompt(model)
    with torch.no_grad():
        expected = torch_model.generate(
            **torch_inputs(audio, input_ids), do_sample=False, depth_decoder_do_sample=False,
            max_new_tokens=GREEDY_FRAMES, suppress_tokens=SUPPRESS, depth_decoder_suppress_tokens=SUPPRESS,
        )[0].numpy()
    frames = list(model.generate(tokens, mask, GREEDY_FRAMES, csm.make_sampler(temperature=0)))
    assert len(frames) == GREEDY_FRAMES
    np.testing.assert_array_equal(np.concatenate([np.array(f) for f in frames]), expected)


@pytest.mark.reference
@pytest.mark.parametrize("variant", ["sesame", "sesame-ckpt.pt", "mlx-audio"])
def test_original_layouts_convert_like_transformers(reference, variant, tmp_path, monkeypatch):
    """torchtune names with interleaved RoPE (as safetensors or sesame's first `ckpt.pt`, and MLX-Audio's
    renaming of them), with the codec in kyutai's layout: converted, they equal the transformers conversion."""
    import torch

    torch_model, model, _ = reference
    monkeypatch.setitem(FLAVORS, "tiny-backbone", original_flavors()["tiny-backbone"])
    monkeypatch.setitem(FLAVORS, "tiny-decoder", original_flavors()["tiny-decoder"])
    src = tmp_path / variant
    (src / "codec").mkdir(parents=True)
    config = dict(backbone_flavor="tiny-backbone", decoder_flavor="tiny-decoder", text_vocab_size=100,
                  audio_vocab_size=67, audio_num_codebooks=32)
    (src / "config.json").write_text(json.dumps({**config, "model_type": "csm"} if variant == "mlx-audio" else config))
    weights = original_csm_state_dict(torch_model, "mlx-audio" if variant == "mlx-audio" else "sesame")
    if variant == "sesame-ckpt.pt":
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, src / "ckpt.pt")
    else:
        mx.save_safetensors(str(src / "model.safetensors"), weights)
    codec_file = src / "codec" / "tokenizer-e351c8d8-checkpoint125.safetensors"
    mx.save_safetensors(str(codec_file), kyutai_state_dict(torch_model.codec_model))
    (src / "codec" / "config.json").write_text(json.dumps(torch_model.codec_model.config.to_dict()))
    make_tokenizer(src / "tokenizer.json")
    assert csm.is_config(json.loads((src / "config.json").read_text()))

    converted = load_model(str(csm.convert(src, tmp_path / "mlx")))
    expected = dict(tree_flatten(model.parameters()))
    got = dict(tree_flatten(converted.parameters()))
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.array(got[key]), np.array(value), err_msg=key)
    _, _, tokens, mask = reference_prompt(model)
    logits = [np.array(m.codebook0_head(m.backbone(m.embed_frames(tokens, mask), m.backbone.make_cache())))
              for m in (model, converted)]
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)  # torchtune's RoPE scaling restated


# ---- configs and conversion ----

def test_configs_are_recognized():
    transformers_config = csm_config_dict()
    original = dict(backbone_flavor="llama-1B", decoder_flavor="llama-100M", text_vocab_size=128256,
                    audio_vocab_size=2051, audio_num_codebooks=32)
    assert csm.is_config(transformers_config) and csm.is_config(original)
    assert csm.is_config({**original, "model_type": "csm", "layout": "mlx"})
    assert not csm.is_config({"model_type": "mimi"}) and not csm.is_config({"istftnet": {}, "n_token": 178})
    args = csm.ModelArgs.from_dict(original)
    assert (args.backbone.hidden_size, args.backbone.head_dim, args.decoder.num_key_value_heads) == (2048, 64, 2)
    assert args.codec.num_quantizers == 32 and args.max_seq_len == 2048
    with pytest.raises(ValueError, match="unknown backbone_flavor"):
        csm.ModelArgs.from_dict({**original, "backbone_flavor": "llama-7B"})
    with pytest.raises(ValueError, match="not a CSM config"):
        csm.ModelArgs.from_dict({"model_type": "csm"})


def test_rope_scaling_forms_agree():
    """torchtune's Llama-3.1 scaling, transformers 5's rope_parameters and 4.x's rope_theta + rope_scaling."""
    torchtune = rope_periods(FLAVORS["llama-1B"])
    v5 = csm.ModelArgs.from_dict({"depth_decoder_config": {}, "head_dim": 64, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 0.125,
        "high_freq_factor": 0.5, "original_max_position_embeddings": 1024}})
    v4 = csm.ModelArgs.from_dict({"depth_decoder_config": {}, "head_dim": 64, "rope_theta": 500000, "rope_scaling": {
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 0.125, "high_freq_factor": 0.5,
        "original_max_position_embeddings": 1024}})
    plain = rope_periods(LlamaArgs(hidden_size=2048, num_hidden_layers=1, num_attention_heads=32,
                                   num_key_value_heads=8, intermediate_size=8))
    for args in (v5, v4):
        np.testing.assert_allclose(np.array(rope_periods(args.backbone)), np.array(torchtune), rtol=1e-6)
    assert not np.allclose(np.array(plain), np.array(torchtune))  # the scaling changes the long wavelengths


def test_convert_refuses_unknown_layouts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(csm_config_dict()))
    mx.save_safetensors(str(tmp_path / "model.safetensors"), {"foo.weight": mx.zeros(2)})
    with pytest.raises(ValueError, match="not a CSM checkpoint"):
        csm.convert(tmp_path, tmp_path / "out")


# ---- sampling ----

def test_sampler_filters():
    logits = mx.log(mx.array([[0.5, 0.3, 0.15, 0.05]] * 400))

    def drawn(**kwargs):
        return set(np.array(csm.make_sampler(**kwargs, seed=0)(logits)).tolist())

    assert drawn(temperature=1.0) == {0, 1, 2, 3}
    assert drawn(temperature=1.0, top_k=2) == {0, 1}
    assert drawn(temperature=1.0, top_p=0.7) == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 covers it
    assert drawn(temperature=1.0, min_p=0.5) == {0, 1}  # p >= 0.25
    assert drawn(temperature=0) == {0}
    assert drawn(temperature=1.0, top_k=1) == {0}
    low = np.array(csm.make_sampler(temperature=0.05, seed=0)(logits))
    assert (low == 0).mean() > 0.99  # a low temperature sharpens the distribution


def test_sampler_seed_and_arguments():
    logits = mx.random.normal((4, 50), key=mx.random.key(0))

    def draw(seed):
        return np.array(csm.make_sampler(0.9, 50, seed=seed)(logits))

    np.testing.assert_array_equal(draw(1), draw(1))
    assert any((draw(s) != draw(1)).any() for s in (2, 3, 4))
    for kwargs, name in (({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                         ({"min_p": 1.5}, "min_p"), ({"top_k": 0}, "top_k")):
        with pytest.raises(ValueError, match=name):
            csm.make_sampler(**kwargs)


# ---- frames ----

def test_frames():
    codes = np.arange(32 * 3).reshape(32, 3) % 64
    tokens, mask = segment_frames([1, 7, 2], codes, 32)
    assert tokens.shape == mask.shape == (3 + 3 + 1, 33)
    assert (tokens[:3, 32] == [1, 7, 2]).all() and mask[:3, 32].all() and not mask[:3, :32].any()
    np.testing.assert_array_equal(tokens[3:6, :32], codes.T)
    assert (tokens[6] == 0).all() and mask[6, :32].all() and not mask[6, 32]  # end-of-audio frame
    eos_tokens, _ = audio_frames(np.zeros((32, 0), int))
    assert eos_tokens.shape == (1, 33)


# ---- model and pipeline on a random tiny model ----

def test_cached_context_gives_the_same_frames(model, pipeline):
    """A context run through the backbone once (`cache_prompt`) and reused, unchanged, by several calls."""
    codes = np.array(model.codec.encode(speech_like(1.2))[0])
    context = segment_frames(pipeline.tokenizer.encode("hello world", 0), codes, 32)
    text = segment_frames(pipeline.tokenizer.encode("how are you", 0), None, 32)
    whole = [mx.array(a)[None] for a in prompt_frames([context, text])]
    greedy = csm.make_sampler(temperature=0)
    expected = np.array(list(model.generate(*whole, 8, greedy)))
    cache = model.cache_prompt(*[mx.array(a)[None] for a in context])
    for _ in range(2):
        got = np.array(list(model.generate(*[mx.array(a)[None] for a in text], 8, greedy, context=cache)))
        np.testing.assert_array_equal(got, expected)
    assert cache[0].offset == len(context[0])

def test_overflowing_prompt_is_refused_before_any_work(model, pipeline, monkeypatch):
    def no_work(*args):
        raise AssertionError("the codec or the backbone ran")

    tokens = mx.zeros((1, 2000, 33), mx.int32)
    monkeypatch.setattr(model.backbone, "__call__", no_work)
    with pytest.raises(ValueError, match="prompt too long"):
        model.generate(tokens, tokens > 0, 100, csm.make_sampler())
    monkeypatch.setattr(model.codec, "encode", no_work)
    with pytest.raises(ValueError, match="exceed the model's 2048 positions"):
        pipeline.generate("hello world", ref_audio=speech_like(1.5), ref_text="hello", max_audio_length_ms=2048 * 80)


def test_reference_checks(pipeline):
    clip = speech_like(1.5)
    with pytest.raises(ValueError, match="ref_text is required"):
        pipeline.generate("hello", ref_audio=clip)
    with pytest.raises(ValueError, match="without ref_audio"):
        pipeline.generate("hello", ref_text="hello")
    with pytest.raises(ValueError, match="silent"):
        pipeline.generate("hello", ref_audio=np.zeros(48000, np.float32), ref_text="hello")
    with pytest.raises(ValueError, match="at least 1 s"):
        pipeline.generate("hello", ref_audio=clip[:12000], ref_text="hello")
    with pytest.raises(ValueError, match="empty"):
        pipeline.generate("hello", ref_audio=np.zeros(0, np.float32), ref_text="hello")
    with pytest.raises(ValueError, match="text is empty"):
        pipeline.generate("  ", ref_audio=clip, ref_text="hello")
    with pytest.raises(ValueError, match="unknown fields"):
        pipeline.generate("hello", context=[{"text": "hi", "voice": clip}])


def test_long_reference_is_trimmed_with_a_warning(pipeline):
    with pytest.warns(UserWarning, match="using its first 30 s"):
        audio = pipeline.generate("hello", ref_audio=(speech_like(31.0, sample_rate=16000), 16000),
                                  ref_text="hello", max_audio_length_ms=80, seed=0)
    assert audio.shape == (1920,)


def test_generation_stream_progress_and_speed(pipeline):
    clip = speech_like(1.5)
    common = dict(ref_audio=clip, ref_text="hello world", seed=7, max_audio_length_ms=480)
    calls = []
    audio = pipeline.generate("hello world. how are you?", progress=lambda d, t: calls.append((d, t)), **common)
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert len(audio) % 1920 == 0 and 0 < len(audio) <= 2 * 6 * 1920  # two sentences, 6 frames each at most
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[0] == (1, 12) and calls[-1][0] == calls[-1][1] == len(audio) // 1920
    chunks = list(pipeline.stream("hello world. how are you?", chunk_frames=2, **common))
    assert all(len(c) <= 2 * 1920 for c in chunks)
    np.testing.assert_allclose(np.concatenate(chunks), audio, atol=1e-5)  # same codes, other decode chunking
    faster = pipeline.generate("hello world. how are you?", speed=2.0, **common)
    assert abs(len(faster) - len(audio) / 2) <= 2


@pytest.mark.parametrize("damage, problem", [(0.0, r"made 0.48 s of silence"), (float("nan"), "made NaN")],
                         ids=["silent", "nan"])
def test_a_damaged_codec_names_the_model(tmp_path, damage, problem):
    model = load_model(str(tiny_mlx_csm_folder(tmp_path / "damaged")))  # its own copy, damaged in memory
    final = model.codec.decoder.final_conv
    for name in ("weight", "bias"):
        final[name] = mx.full(final[name].shape, damage)
    chunks = []
    message = rf"CSM {tmp_path / 'damaged'} cloning the reference clip {problem}.* for 'hello\.'"
    with pytest.raises(TakeError, match=message):
        for chunk in csm.CSMPipeline(model).stream("hello. world", ref_audio=speech_like(1.5), ref_text="hi",
                                                   seed=0, max_audio_length_ms=480, chunk_frames=2):
            chunks.append(chunk)
    assert all(np.isfinite(c).all() for c in chunks)  # nothing non-finite was handed out before the error


def test_sampling_arguments_reach_the_sampler(pipeline):
    clip = speech_like(1.5)
    def run(**kwargs):
        kwargs = {"seed": 3, **kwargs}
        return pipeline.generate("hello world", ref_audio=clip, ref_text="hello", max_audio_length_ms=320, **kwargs)

    greedy = run(temperature=0)
    for kwargs in ({"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}):
        np.testing.assert_array_equal(run(**kwargs), greedy, err_msg=str(kwargs))
    sampled = run()
    np.testing.assert_array_equal(run(), sampled)  # the seed reproduces
    assert not np.array_equal(sampled, greedy)
    assert not np.array_equal(run(seed=4), sampled)
    assert not np.array_equal(run(temperature=1.5, top_k=None), sampled)


def test_context_segments(pipeline):
    clip = speech_like(1.5)
    context = [csm.Segment("how are you", speaker=1, audio=clip), {"text": "fine thanks", "speaker": 0, "audio": clip}]
    audio = pipeline.generate("hello", context=context, seed=0, max_audio_length_ms=160)
    assert 0 < len(audio) <= 2 * 1920
    with pytest.raises(ValueError, match="no audio"):
        pipeline.generate("hello", context=[csm.Segment("hi")])
