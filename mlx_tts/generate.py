"""Command line speech generation: `python -m mlx_tts.generate --text "Hello" --voice jf_alpha`.

Kokoro models speak with a preset voice; CSM clones the voice of `--ref_audio` (with its transcript
`--ref_text`). Text comes from stdin when `--text` is absent. Prints the audio duration, the real-time factor
and the peak memory.
"""

if __name__ == "__main__":  # the command line: set up the process before the imports below load mlx.core
    import mlx_tts

    mlx_tts.accelerate()

import argparse
import logging
import sys
import time

import mlx.core as mx
import numpy as np

from .audio import SAMPLE_RATE, write_audio
from .memory import peak_rss_mb
from .utils import DEFAULT_MODEL, ModelLoadError, load_model


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mlx_tts.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face repo id or local folder")
    p.add_argument("--text", help="text to speak (default: read stdin)")
    p.add_argument("--phonemes", help="Kokoro: speak these phonemes instead of text (pronunciation override)")
    p.add_argument("--voice", default=None, help="Kokoro voice: name, file, blend `a(2)+b(1)` or list `a,b`")
    p.add_argument("--speed", type=float, default=1.0, help="speaking rate, 0.25 to 4")
    p.add_argument("--lang_code", default="a", help="Kokoro language: a, b, j, z, ...")
    p.add_argument("--split_pattern", default=r"\n+", help="Kokoro: regex that splits text into parts")
    p.add_argument("--file_prefix", default="audio",
                   help="output path prefix: PREFIX.wav for one take, PREFIX_000.wav, PREFIX_001.wav, ... for several")
    p.add_argument("--audio_format", default="wav", choices=["wav", "flac"])
    p.add_argument("--join_audio", action="store_true", help="write one file instead of one per chunk")
    p.add_argument("--play", action="store_true", help="play the audio as well")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same audio)")
    p.add_argument("--ref_audio", help="CSM: reference clip of the voice to clone")
    p.add_argument("--ref_text", help="CSM: transcript of the reference clip")
    p.add_argument("--temperature", type=float, default=0.9, help="CSM sampling temperature")
    p.add_argument("--top_k", type=int, default=50, help="CSM top-k")
    p.add_argument("--top_p", type=float, default=None, help="CSM nucleus sampling")
    p.add_argument("--min_p", type=float, default=None, help="CSM min-p sampling")
    p.add_argument("--max_audio_length_ms", type=float, default=10000, help="CSM: longest audio per segment")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def kokoro_chunks(model, args, text):
    from .models.kokoro import KokoroPipeline

    pipeline = KokoroPipeline(lang_code=args.lang_code, model=model)
    voice = args.voice or pipeline.voices.names()[0]
    results = (
        pipeline.from_phonemes(args.phonemes, voice, args.speed)
        if args.phonemes
        else pipeline(text, voice=voice, speed=args.speed, split_pattern=args.split_pattern)
    )
    for result in results:
        print(f"[{result.graphemes[:60]}] {result.phonemes[:60]}", file=sys.stderr)
        yield np.asarray(result.audio[0])


def csm_chunks(model, args, text):
    from .models.csm import CSMPipeline

    # One take per call: CSM's own chunks are 320 ms stream pieces, not files a user wants.
    yield CSMPipeline(model=model).generate(
        text,
        ref_audio=args.ref_audio,
        ref_text=args.ref_text,
        speed=args.speed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        seed=args.seed,
        max_audio_length_ms=args.max_audio_length_ms,
    )


def play(audio: np.ndarray):
    try:
        import sounddevice

        sounddevice.play(audio, SAMPLE_RATE)
        sounddevice.wait()
    except Exception as e:  # no package, no PortAudio, no output device
        print(f"Can't play audio here ({type(e).__name__}: {e}); the file was written.", file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    text = args.text
    if text is None and args.phonemes is None:
        if sys.stdin is None or sys.stdin.isatty():
            sys.exit("error: give --text, --phonemes, or text on stdin")
        text = sys.stdin.read()
    if args.seed is not None:
        mx.random.seed(args.seed)
    written, pieces = [], []

    def write_numbered():
        """One file per chunk, `prefix_000.wav` on: written as soon as there are two, since one take is
        `prefix.wav`."""
        for i in range(len(written), len(pieces)):
            written.append(f"{args.file_prefix}_{i:03d}.{args.audio_format}")
            write_audio(written[-1], pieces[i], SAMPLE_RATE, args.audio_format)

    try:
        model = load_model(args.model)
        chunks = {"csm": csm_chunks, "kokoro": kokoro_chunks}.get(model.model_type)
        if chunks is None:  # Mimi, the audio codec, loads too
            raise ModelLoadError(f"{args.model} is a {model.model_type} model, not a text-to-speech model")
        start = time.perf_counter()
        for audio in chunks(model, args, text):
            pieces.append(audio)
            if not args.join_audio and len(pieces) > 1:
                write_numbered()
        elapsed = time.perf_counter() - start
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if len(pieces) == 1 and not args.join_audio:
            write_numbered()  # keep the chunk already made
        sys.exit(f"error: {e}" + (f" (wrote {', '.join(written)} first)" if written else ""))
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if args.join_audio or len(pieces) == 1:
        written = [f"{args.file_prefix}.{args.audio_format}"]
        write_audio(written[0], audio, SAMPLE_RATE, args.audio_format)
    seconds = len(audio) / SAMPLE_RATE
    print(f"Wrote {', '.join(written)}")
    print(
        f"Audio: {seconds:.2f} s in {elapsed:.2f} s, real-time factor {elapsed / max(seconds, 1e-9):.3f}; "
        f"peak memory {mx.get_peak_memory() / 2**20:.0f} MB (MLX), {peak_rss_mb():.0f} MB (RSS)"
    )
    if args.play:
        play(audio)


if __name__ == "__main__":
    main()
