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

import numpy as np

from .audio import SAMPLE_RATE, write_audio
from .memory import peak_rss_mb
from .take import csm_takes, kokoro_takes
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
    if args.phonemes is None:
        _ = pipeline.g2p  # built before the take: its time is not the model's
    takes = kokoro_takes(pipeline, text, voice, args.speed, args.split_pattern, args.seed, phonemes=args.phonemes,
                         words=False)
    for take in takes:
        graphemes, phonemes, _ = take.chunks[-1]
        print(f"[{graphemes[:60]}] {phonemes[:60]}", file=sys.stderr)
        yield take


def csm_chunks(model, args, text):
    from .models.csm import CSMPipeline

    return csm_takes(
        CSMPipeline(model=model),
        text,
        seed=args.seed,
        ref_audio=args.ref_audio,
        ref_text=args.ref_text,
        speed=args.speed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
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
    written, pieces, take = [], [], None

    def write_numbered():
        """One file per chunk, `prefix_000.wav` on: written as soon as there are two, since one take is
        `prefix.wav`."""
        for i in range(len(written), len(pieces)):
            written.append(f"{args.file_prefix}_{i:03d}.{args.audio_format}")
            write_audio(written[-1], pieces[i], SAMPLE_RATE, args.audio_format)

    per_chunk = not args.join_audio
    try:
        model = load_model(args.model)
        # One file per Kokoro chunk; CSM's chunks are 320 ms stream pieces, not files a user wants: one take.
        per_chunk = per_chunk and model.model_type != "csm"
        if model.model_type not in ("csm", "kokoro"):  # Mimi, the audio codec, loads too
            raise ModelLoadError(f"{args.model} is a {model.model_type} model, not a text-to-speech model")
        for take in (csm_chunks if model.model_type == "csm" else kokoro_chunks)(model, args, text):
            if per_chunk:
                pieces = take.pieces
                if len(pieces) > 1:
                    write_numbered()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if len(pieces) == 1 and per_chunk:
            write_numbered()  # keep the chunk already made
        sys.exit(f"error: {e}" + (f" (wrote {', '.join(written)} first)" if written else ""))
    audio = take.audio
    if not per_chunk or len(pieces) == 1:
        written = [f"{args.file_prefix}.{args.audio_format}"]
        write_audio(written[0], audio, SAMPLE_RATE, args.audio_format)
    print(f"Wrote {', '.join(written)}")
    print(
        f"Audio: {take.seconds:.2f} s in {take.elapsed_s:.2f} s, real-time factor {take.real_time_factor:.3f}; "
        f"peak memory {take.peak_mlx_mb:.0f} MB (MLX), {peak_rss_mb():.0f} MB (RSS)"
    )
    if args.play:
        play(audio)


if __name__ == "__main__":
    main()
