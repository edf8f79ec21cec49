"""User-facing errors: one clear line that names the file, column or field at fault."""


class MinerError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line and exits 2."""


class InputError(MinerError):
    """A corpus input file is missing, unreadable, of an unknown format, or malformed."""


class ConfigError(MinerError):
    """A job file or option value is invalid."""


class OutputConflictError(MinerError):
    """An output folder already holds a different result; nothing was overwritten."""


class SourceError(MinerError, RuntimeError):
    """A default-corpus source could not be fetched, unpacked or parsed (the message names the package)."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none).

    Example: ValueError("bad header\\nmore") -> "bad header"; KeyError() -> "KeyError"
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
