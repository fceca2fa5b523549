"""CSM's text tokenizer: Llama-3's `tokenizer.json`, read with `tokenizers` (no transformers at run time)."""

from pathlib import Path

from tokenizers import Tokenizer

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"


class TextTokenizer:
    """Token ids of a text segment, `<|begin_of_text|>[speaker]text<|end_of_text|>`, as sesame builds them."""

    def __init__(self, path):
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"CSM text tokenizer not found: {path} (the Llama-3 tokenizer.json)")
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a readable tokenizer.json ({e})") from None
        self.bos_id = self._tokenizer.token_to_id(BEGIN_OF_TEXT)
        self.eos_id = self._tokenizer.token_to_id(END_OF_TEXT)
        missing = [t for t, i in ((BEGIN_OF_TEXT, self.bos_id), (END_OF_TEXT, self.eos_id)) if i is None]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(missing)} token; CSM needs the Llama-3 tokenizer")

    def encode(self, text: str, speaker: int) -> list:
        ids = self._tokenizer.encode(f"[{speaker}]{text}", add_special_tokens=False).ids
        return [self.bos_id, *ids, self.eos_id]
