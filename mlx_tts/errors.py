"""The base of every error the engine raises on purpose: its message says what went wrong and what to do.

Callers (the studio, the CLIs, a server) show these messages as they are; anything else is a bug and is
reported with a traceback. Each concrete error also keeps the builtin base it had (ValueError for bad input,
RuntimeError for a failing environment), so `except ValueError` callers keep working."""


class MlxTtsError(Exception):
    """An expected failure with a message for the user: bad input, a missing file, a model that can't be had."""


class ModelLoadError(MlxTtsError, ValueError):
    """A model can't be found, converted or loaded; the message names the repo, file or key."""
