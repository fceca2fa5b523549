"""Kokoro-82M weights from a kokoro-onnx export (float32, fp16, or onnxruntime dynamic int8).

The export keeps no state dict: weights are initializers named after whatever produced
them (`/decoder/decoder/decode.0/Mul_output_0`, `onnx::LSTM_6930`, ...). Each one is
followed to the node that consumes it; the node's scope (`/encoder/F0.1/conv1/Conv`)
names the module, the node's type says which parameter it is and how it is laid out.
The result is hexgrad's `KModel` state dict ("torch layout", float32).
"""

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import MlxTtsError
from .embedded import KOKORO_82M_CONFIG

# The int8 export's quantized ops; `float_onnx_graph` replaces each with its float op.
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM", "DequantizeLinear")


class OnnxImportError(MlxTtsError, ValueError):
    pass


# ---------------------------------------------------------------------------
# The parameters hexgrad's KModel holds, by name and shape.


def parameter_shapes(config: dict = KOKORO_82M_CONFIG) -> dict[str, tuple]:
    """Every parameter of hexgrad's `KModel` for `config`, torch layout.

    Left out: the ALBERT pooler (Kokoro never uses it) and the instance norms' affine
    weights (always 1 and 0; the original checkpoint does not hold them).
    """
    shapes = {}
    d, sty, nt = config["hidden_dim"], config["style_dim"], config["n_token"]
    bert = config["plbert"]
    hid, ffn, emb = bert["hidden_size"], bert["intermediate_size"], bert.get("embedding_size", 128)

    def linear(name, n_in, n_out, bias=True):
        shapes[f"{name}.weight"] = (n_out, n_in)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    def norm(name, n, weight="weight", bias="bias"):
        shapes[f"{name}.{weight}"] = (n,)
        shapes[f"{name}.{bias}"] = (n,)

    def conv(name, n_in, n_out, k, bias=True, weight_norm=True):
        if weight_norm:
            shapes[f"{name}.weight_g"] = (n_out, 1, 1)
            shapes[f"{name}.weight_v"] = (n_out, n_in, k)
        else:
            shapes[f"{name}.weight"] = (n_out, n_in, k)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    def conv_transpose(name, n_in, n_out, k, groups=1):
        # torch's weight_norm normalizes dim 0, the input channels of a transposed conv.
        shapes[f"{name}.weight_g"] = (n_in, 1, 1)
        shapes[f"{name}.weight_v"] = (n_in, n_out // groups, k)
        shapes[f"{name}.bias"] = (n_out,)

    def lstm(name, n_in, n_hidden):
        for suffix in ("_l0", "_l0_reverse"):
            shapes[f"{name}.weight_ih{suffix}"] = (4 * n_hidden, n_in)
            shapes[f"{name}.weight_hh{suffix}"] = (4 * n_hidden, n_hidden)
            shapes[f"{name}.bias_ih{suffix}"] = (4 * n_hidden,)
            shapes[f"{name}.bias_hh{suffix}"] = (4 * n_hidden,)

    def adain_res_block(name, n_in, n_out, upsample=False):
        conv(f"{name}.conv1", n_in, n_out, 3)
        conv(f"{name}.conv2", n_out, n_out, 3)
        linear(f"{name}.norm1.fc", sty, 2 * n_in)
        linear(f"{name}.norm2.fc", sty, 2 * n_out)
        if n_in != n_out:
            conv(f"{name}.conv1x1", n_in, n_out, 1, bias=False)
        if upsample:
            conv_transpose(f"{name}.pool", n_in, n_in, 3, groups=n_in)

    def snake_res_block(name, channels, k):
        for i in range(3):
            for j in (1, 2):
                conv(f"{name}.convs{j}.{i}", channels, channels, k)
                linear(f"{name}.adain{j}.{i}.fc", sty, 2 * channels)
                shapes[f"{name}.alpha{j}.{i}"] = (1, channels, 1)

    # bert: ALBERT, one shared layer.
    shapes["bert.embeddings.word_embeddings.weight"] = (nt, emb)
    shapes["bert.embeddings.position_embeddings.weight"] = (bert["max_position_embeddings"], emb)
    shapes["bert.embeddings.token_type_embeddings.weight"] = (bert.get("type_vocab_size", 2), emb)
    norm("bert.embeddings.LayerNorm", emb)
    linear("bert.encoder.embedding_hidden_mapping_in", emb, hid)
    layer = "bert.encoder.albert_layer_groups.0.albert_layers.0"
    norm(f"{layer}.full_layer_layer_norm", hid)
    for proj in ("query", "key", "value", "dense"):
        linear(f"{layer}.attention.{proj}", hid, hid)
    norm(f"{layer}.attention.LayerNorm", hid)
    linear(f"{layer}.ffn", hid, ffn)
    linear(f"{layer}.ffn_output", ffn, hid)
    linear("bert_encoder", hid, d)

    # predictor: durations, F0 and N.
    for i in range(config["n_layer"]):
        lstm(f"predictor.text_encoder.lstms.{2 * i}", d + sty, d // 2)
        linear(f"predictor.text_encoder.lstms.{2 * i + 1}.fc", sty, 2 * d)
    lstm("predictor.lstm", d + sty, d // 2)
    linear("predictor.duration_proj.linear_layer", d, config["max_dur"])
    lstm("predictor.shared", d + sty, d // 2)
    for branch in ("F0", "N"):
        adain_res_block(f"predictor.{branch}.0", d, d)
        adain_res_block(f"predictor.{branch}.1", d, d // 2, upsample=True)
        adain_res_block(f"predictor.{branch}.2", d // 2, d // 2)
        conv(f"predictor.{branch}_proj", d // 2, 1, 1, weight_norm=False)

    # text_encoder
    shapes["text_encoder.embedding.weight"] = (nt, d)
    for i in range(config["n_layer"]):
        conv(f"text_encoder.cnn.{i}.0", d, d, config["text_encoder_kernel_size"])
        norm(f"text_encoder.cnn.{i}.1", d, "gamma", "beta")
    lstm("text_encoder.lstm", d, d // 2)

    # decoder: the fixed 1024/64/2-channel layout of Kokoro's iSTFTNet decoder.
    adain_res_block("decoder.encode", d + 2, 1024)
    for i in range(4):
        adain_res_block(f"decoder.decode.{i}", 1024 + 2 + 64, 512 if i == 3 else 1024, upsample=i == 3)
    conv("decoder.F0_conv", 1, 1, 3)
    conv("decoder.N_conv", 1, 1, 3)
    conv("decoder.asr_res.0", 512, 64, 1)
    gen = config["istftnet"]
    rates, n_fft = gen["upsample_rates"], gen["gen_istft_n_fft"]
    linear("decoder.generator.m_source.l_linear", 9, 1)  # 8 harmonics + fundamental
    channels = gen["upsample_initial_channel"]
    for i, (_, k) in enumerate(zip(rates, gen["upsample_kernel_sizes"])):
        conv_transpose(f"decoder.generator.ups.{i}", channels >> i, channels >> (i + 1), k)
        out = channels >> (i + 1)
        for j, kernel in enumerate(gen["resblock_kernel_sizes"]):
            snake_res_block(f"decoder.generator.resblocks.{i * len(gen['resblock_kernel_sizes']) + j}", out, kernel)
        last = i + 1 == len(rates)
        noise_k = 1 if last else 2 * math.prod(rates[i + 1 :])
        conv(f"decoder.generator.noise_convs.{i}", n_fft + 2, out, noise_k, weight_norm=False)
        snake_res_block(f"decoder.generator.noise_res.{i}", out, 11 if last else 7)
    conv("decoder.generator.conv_post", channels >> len(rates), n_fft + 2, 7)
    return shapes


# ---------------------------------------------------------------------------
# Reading the graph.


def load_onnx(source) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises its own DecodeError
        raise OnnxImportError(f"{path} is not a readable ONNX model: {e}") from e


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.tensors = {t.name: t for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute[0].name == "value":
                self.tensors[node.output[0]] = node.attribute[0].t
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def const(self, name: str):
        """The constant value of a tensor (looking through Casts, as fp16 exports have), or None."""
        if name in self.tensors:
            return numpy_helper.to_array(self.tensors[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Cast":
            return self.const(node.input[0])
        return None

    def const_name(self, name: str) -> str:
        """The initializer behind `name` (through Casts), for messages and for reusing it."""
        node = self.producer.get(name)
        if name not in self.tensors and node is not None and node.op_type == "Cast":
            return self.const_name(node.input[0])
        return name

    def only_consumer(self, name: str, op_type: str):
        nodes = self.consumers[name]
        if len(nodes) != 1 or nodes[0].op_type != op_type:
            found = [n.op_type for n in nodes]
            raise OnnxImportError(f"expected '{name}' to feed one {op_type} node, found {found}")
        return nodes[0]

    def input_of(self, node, index: int):
        return node.input[index] if len(node.input) > index and node.input[index] else None

    def optional_const(self, node, index: int):
        name = self.input_of(node, index)
        return None if name is None else self.const(name)


# ---------------------------------------------------------------------------
# int8 -> float graph.


def _dequantize(q, scale, zero_point, axis):
    shape = [1] * q.ndim
    if np.size(scale) > 1:
        shape[axis] = -1
    zero = 0 if zero_point is None else np.asarray(zero_point).astype(np.int32).reshape(shape)
    return ((q.astype(np.int32) - zero) * np.asarray(scale, np.float32).reshape(shape)).astype(np.float32)


def _dynamic_input(g: _Graph, name: str) -> str:
    """The float tensor that a DynamicQuantizeLinear turned into `name`."""
    node = g.producer.get(name)
    if node is None or node.op_type != "DynamicQuantizeLinear":
        raise OnnxImportError(f"'{name}' is not the output of a DynamicQuantizeLinear node")
    return node.input[0]


def _weight_scale(g: _Graph, scale_name: str):
    """Per-tensor or per-channel weight scale from `Mul(input_scale, weight_scale)`."""
    node = g.producer.get(scale_name)
    if node is None or node.op_type != "Mul":
        raise OnnxImportError(f"'{scale_name}' is not a product of input and weight scales")
    scales = [g.const(x) for x in node.input]
    weight = [s for s in scales if s is not None]
    if len(weight) != 1:
        raise OnnxImportError(f"cannot tell the weight scale in node '{node.name}'")
    return weight[0]


def _quantized_bias(g: _Graph, name: str) -> str:
    """The float bias behind `Reshape(Cast(Floor(bias / scale)))`, by name."""
    node = g.producer.get(name)
    for op in ("Reshape", "Cast", "Floor", "Div"):
        if node is None or node.op_type != op:
            raise OnnxImportError(f"unexpected quantized-bias pattern at '{name}'")
        if op == "Div":
            return g.const_name(node.input[0])
        node = g.producer.get(node.input[0])


class _FloatWeights:
    """Dequantized weights added to the float graph, once per quantized initializer."""

    def __init__(self, g: _Graph):
        self.g = g
        self.made = {}

    def add(self, quantized_name: str, make) -> str:
        if quantized_name not in self.made:
            name = quantized_name.removesuffix("_quantized")
            if name in self.g.tensors:
                name += "_dequantized"
            self.made[quantized_name] = numpy_helper.from_array(make(), name)
        return self.made[quantized_name].name


def _float_conv(g: _Graph, weights: _FloatWeights, node):
    """ConvInteger [-> Add(quantized bias)] -> Cast -> Mul(scale)  =>  Conv."""
    chain = [node]
    nxt = g.consumers[node.output[0]]
    bias = None
    if len(nxt) == 1 and nxt[0].op_type == "Add":
        add = nxt[0]
        bias = _quantized_bias(g, next(x for x in add.input if x != node.output[0]))
        chain.append(add)
    cast = g.only_consumer(chain[-1].output[0], "Cast")
    mul = g.only_consumer(cast.output[0], "Mul")
    chain += [cast, mul]
    scale = _weight_scale(g, next(x for x in mul.input if x != cast.output[0]))
    w_name = node.input[1]
    w = weights.add(w_name, lambda: _dequantize(g.const(w_name), scale, g.optional_const(node, 3), 0))
    inputs = [_dynamic_input(g, node.input[0]), w] + ([bias] if bias else [])
    conv = helper.make_node("Conv", inputs, [mul.output[0]], name=node.name.removesuffix("_quant"))
    conv.attribute.extend(node.attribute)
    return conv, chain


def _float_matmul(g: _Graph, weights: _FloatWeights, node):
    """MatMulInteger -> Cast -> Mul(scale)  =>  MatMul."""
    cast = g.only_consumer(node.output[0], "Cast")
    mul = g.only_consumer(cast.output[0], "Mul")
    scale = _weight_scale(g, next(x for x in mul.input if x != cast.output[0]))
    w_name = node.input[1]
    w = weights.add(w_name, lambda: _dequantize(g.const(w_name), scale, g.optional_const(node, 3), 1))
    matmul = helper.make_node(
        "MatMul", [_dynamic_input(g, node.input[0]), w], [mul.output[0]], name=node.name.removesuffix("_quant")
    )
    return matmul, [node, cast, mul]


def _float_lstm(g: _Graph, weights: _FloatWeights, node):
    """DynamicQuantizeLSTM (W [dir, in, 4H]) => LSTM (W [dir, 4H, in])."""

    def dequantized(index, scale_index):
        name = node.input[index]
        scale, zero = g.const(node.input[scale_index]), g.const(node.input[scale_index + 1])

        def make():
            q = g.const(name)
            shape = (q.shape[0], 1, -1)  # per direction, or per direction and gate column
            w = (q.astype(np.int32) - zero.astype(np.int32).reshape(shape)) * scale.reshape(shape)
            return np.ascontiguousarray(w.transpose(0, 2, 1), dtype=np.float32)

        return weights.add(name, make)

    inputs = [node.input[0], dequantized(1, 8), dequantized(2, 10)] + list(node.input[3:8])
    while inputs and not inputs[-1]:
        inputs.pop()
    lstm = helper.make_node("LSTM", inputs, list(node.output), name=node.name.removesuffix("_quant"))
    lstm.attribute.extend(node.attribute)
    return lstm, [node]


def _float_gather(g: _Graph, weights: _FloatWeights, node):
    """Gather(int8 table) -> DequantizeLinear  =>  Gather(float table)."""
    gather = g.producer.get(node.input[0])
    table = gather.input[0] if gather is not None and gather.op_type == "Gather" else None
    if table is None or g.const(table) is None:
        raise OnnxImportError(f"DequantizeLinear '{node.name}' does not dequantize a gathered table")
    scale, zero = g.const(node.input[1]), g.optional_const(node, 2)
    w = weights.add(table, lambda: _dequantize(g.const(table), scale, zero, 0))
    new = helper.make_node("Gather", [w, gather.input[1]], [node.output[0]], name=gather.name.removesuffix("_quant"))
    new.attribute.extend(gather.attribute)
    return new, [gather, node]


_FLOAT_REWRITES = {
    "ConvInteger": _float_conv,
    "MatMulInteger": _float_matmul,
    "DynamicQuantizeLSTM": _float_lstm,
    "DequantizeLinear": _float_gather,
}


def _prune(graph):
    """Drop nodes and initializers nothing uses any more."""
    needed = {out.name for out in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(x for x in node.input if x)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for field in (graph.initializer, graph.value_info):
        keep = [x for x in field if x.name in needed]
        del field[:]
        field.extend(keep)


def float_onnx_graph(source) -> onnx.ModelProto:
    """The int8 export with every integer op replaced by its float op on the dequantized weights.

    Conv biases are the exact float biases (the int8 graph floors them onto its int32 grid).
    """
    model = onnx.ModelProto()
    model.CopyFrom(load_onnx(source))
    g = _Graph(model)
    weights = _FloatWeights(g)
    folded = set()  # first outputs of the nodes each float op replaces
    nodes = []
    for node in list(g.graph.node):
        rewrite = _FLOAT_REWRITES.get(node.op_type)
        if rewrite is None:
            nodes.append((node, False))
            continue
        new, chain = rewrite(g, weights, node)
        folded.update(n.output[0] for n in chain)
        nodes.append((new, True))
    del g.graph.node[:]
    g.graph.node.extend(n for n, is_new in nodes if is_new or n.output[0] not in folded)
    g.graph.initializer.extend(weights.made.values())
    _prune(g.graph)
    left = sorted({n.op_type for n in g.graph.node if n.op_type in INTEGER_OPS})
    if left:
        raise OnnxImportError(f"integer ops left in the float graph: {left}")
    return model


# ---------------------------------------------------------------------------
# Graph -> torch-layout state dict.

_LSTM_GATES = [0, 2, 3, 1]  # ONNX gates i, o, f, c  ->  torch i, f, g(c), o
_STFT = re.compile(r"(^|\.)i?stft(\.|$)")  # the export's own STFT bases: fixed transforms, not parameters


def _scope_path(node_name: str) -> str | None:
    """`/encoder/text_encoder/cnn.0/cnn.0.0/Conv` -> `encoder.text_encoder.cnn.0.0`."""
    if not node_name.startswith("/"):
        return None
    segments = []
    for part in node_name.strip("/").split("/")[:-1]:
        part = re.sub(r"_\d+$", "", part)  # repeated calls of one module (ALBERT's shared layer)
        if segments and part.startswith(segments[-1] + "."):
            segments[-1] = part  # a child scope spelled out with its parent's name
        else:
            segments.append(part)
    return ".".join(segments)


class _Names:
    """Resolves exporter paths (`encoder.F0.1.conv1`) to KModel names (`predictor.F0.1.conv1`): the longest
    tail of the path that is a KModel name, or the end of exactly one KModel name."""

    def __init__(self, expected):
        self.params = set(expected)
        self.modules = {name.rsplit(".", 1)[0] for name in expected}
        self._endings = defaultdict(set)
        for name in self.params | self.modules:
            parts = name.split(".")
            for start in range(1, len(parts)):
                self._endings[".".join(parts[start:])].add(name)

    def _resolve(self, path: str, known: set) -> str | None:
        parts = path.split(".")
        for start in range(len(parts)):
            tail = ".".join(parts[start:])
            if tail in known:
                return tail
            matches = self._endings.get(tail, set()) & known
            if len(matches) == 1:
                return matches.pop()
        return None

    def module(self, path: str) -> str | None:
        return self._resolve(path, self.modules)

    def param(self, name: str) -> str | None:
        return self._resolve(name, self.params)

    def accepts(self, name: str) -> bool:
        """A KModel parameter, or a plain conv weight that KModel keeps weight-normed."""
        return name in self.params or (name.endswith(".weight") and name[: -len("weight")] + "weight_g" in self.params)


def _is_identity(values: np.ndarray) -> bool:
    return bool(np.all(values == 1) or np.all(values == 0))


def _collect(g: _Graph, names: _Names):
    """(found, unplaced): arrays keyed by KModel name, and the weights that have no place in KModel."""
    found, sources, unplaced = {}, {}, []

    def put(module, role, value, source, node):
        if _STFT.search(module):
            return
        value = np.ascontiguousarray(value, dtype=np.float32)
        resolved = names.module(module)
        name = f"{resolved}.{role}" if resolved else None
        if name is None or not names.accepts(name):
            # Constant ones and zeros stand in for the affine of non-affine norms; anything else is a weight lost.
            if not _is_identity(value):
                unplaced.append(f"{source} (used by {node.op_type} '{node.name}')")
            return
        if name in found and sources[name] != source and not np.array_equal(found[name], value):
            raise OnnxImportError(f"two different weights map to '{name}': '{sources[name]}' and '{source}'")
        found[name], sources[name] = value, source

    for node in g.graph.node:
        module = _scope_path(node.name)
        if module is None:
            continue
        op = node.op_type
        if op in ("Conv", "ConvTranspose"):
            w = g.const(node.input[1])
            if w is not None and w.dtype.kind == "f":
                put(module, "weight", w, g.const_name(node.input[1]), node)
                bias = g.input_of(node, 2)
                if bias:
                    put(module, "bias", g.const(bias), g.const_name(bias), node)
        elif op in ("MatMul", "Gemm"):
            w = g.const(node.input[1])
            if w is None or w.ndim != 2 or w.dtype.kind != "f":
                continue
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            put(module, "weight", w if trans_b else w.T, g.const_name(node.input[1]), node)
            bias = g.input_of(node, 2) if op == "Gemm" else _matmul_bias(g, node, w.shape[1])
            if bias:
                put(module, "bias", g.const(bias), g.const_name(bias), node)
        elif op == "LSTM":
            _collect_lstm(g, node, module, put)
        elif op == "Gather":
            w = g.const(node.input[0])
            if w is not None and w.dtype.kind == "f":
                put(module, "weight", w, g.const_name(node.input[0]), node)
        elif op == "LayerNormalization":
            resolved = names.module(module)
            gamma_beta = resolved is not None and f"{resolved}.gamma" in names.params
            for index, role in ((1, "gamma" if gamma_beta else "weight"), (2, "beta" if gamma_beta else "bias")):
                x = g.input_of(node, index)
                if x and g.const(x) is not None:
                    put(module, role, g.const(x), g.const_name(x), node)
    return found, unplaced


def _matmul_bias(g: _Graph, node, n_out: int) -> str | None:
    """The bias added right after a MatMul (`Add`, or the bias input of a fused FastGelu)."""
    for user in g.consumers[node.output[0]]:
        if user.op_type == "Add":
            candidates = [x for x in user.input if x != node.output[0]]
        elif user.op_type in ("FastGelu", "BiasGelu"):
            candidates = user.input[1:2]
        else:
            continue
        for x in candidates:
            b = g.const(x)
            if b is not None and b.shape == (n_out,):
                return x
    return None


def _collect_lstm(g: _Graph, node, module, put):
    w, r = g.const(node.input[1]), g.const(node.input[2])
    if w is None or r is None:
        raise OnnxImportError(f"LSTM '{node.name}' has non-constant weights")
    n_dir, four_h = w.shape[0], w.shape[1]
    b_name = g.input_of(node, 3)
    b = g.const(b_name) if b_name else np.zeros((n_dir, 2 * four_h), np.float32)

    def torch_gates(x):
        return np.concatenate([np.split(x, 4, axis=0)[i] for i in _LSTM_GATES], axis=0)

    source = g.const_name(node.input[1])
    for direction in range(n_dir):
        suffix = "_l0" + ("_reverse" if direction == 1 else "")
        put(module, f"weight_ih{suffix}", torch_gates(w[direction]), source, node)
        put(module, f"weight_hh{suffix}", torch_gates(r[direction]), source, node)
        put(module, f"bias_ih{suffix}", torch_gates(b[direction, :four_h]), source, node)
        put(module, f"bias_hh{suffix}", torch_gates(b[direction, four_h:]), source, node)


def _split_weight_norm(weight: np.ndarray):
    """A weight-normed conv's effective weight -> (weight_g, weight_v), as the checkpoints store it:
    weight_g = per-channel norm (dim 0), weight_v = weight; an all-zero channel gets v = 1 so that
    g * v / |v| stays 0 instead of 0 / 0."""
    g = np.sqrt(np.sum(weight.astype(np.float64) ** 2, axis=tuple(range(1, weight.ndim)), keepdims=True))
    v = np.where(g == 0, np.float32(1), weight).astype(np.float32)
    return g.astype(np.float32), v


def state_dict_from_onnx(source, config: dict = KOKORO_82M_CONFIG) -> dict[str, np.ndarray]:
    """hexgrad `KModel` weights (torch layout, float32) from a kokoro-onnx export."""
    model = load_onnx(source)
    if any(node.op_type in INTEGER_OPS for node in model.graph.node):
        model = float_onnx_graph(model)
    expected = parameter_shapes(config)
    names = _Names(expected)
    g = _Graph(model)
    found, unplaced = _collect(g, names)

    state = {}
    for name, value in found.items():
        if name in expected:
            state[name] = value
        else:  # a weight-normed conv's effective weight
            module = name.removesuffix(".weight")
            state[f"{module}.weight_g"], state[f"{module}.weight_v"] = _split_weight_norm(value)
    # Parameters the graph uses directly keep their own names (Snake alphas, fused-op inputs).
    for tensor_name, tensor in g.tensors.items():
        name = names.param(tensor_name)
        if name is not None and name not in state and tuple(tensor.dims) == expected[name]:
            state[name] = numpy_helper.to_array(tensor).astype(np.float32)

    if unplaced:
        raise OnnxImportError("weights in the ONNX graph with no place in Kokoro: " + "; ".join(sorted(unplaced)))
    missing = sorted(set(expected) - set(state))
    if missing:
        raise OnnxImportError(f"{len(missing)} Kokoro weights not found in the ONNX graph: {', '.join(missing)}")
    wrong = [f"{k}: {state[k].shape} != {expected[k]}" for k in expected if state[k].shape != expected[k]]
    if wrong:
        raise OnnxImportError("ONNX weights with unexpected shapes: " + "; ".join(wrong))
    return {k: state[k] for k in expected}
