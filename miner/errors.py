"""User-facing errors: one clear line that names the file, column or field at fault."""


class MinerError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line and exits 2."""


class InputError(MinerError):
    """A corpus input file is missing, unreadable, of an unknown format, or malformed."""


class ConfigError(MinerError):
    """A job file or option value is invalid."""


class OutputConflictError(MinerError):
    """An output folder already holds a different result; nothing was overwritten."""
