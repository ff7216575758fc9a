"""Exceptions of the harness (clear messages, never tracebacks for user mistakes)."""


class ConfigError(ValueError):
    """A bad preset name, TOML key or value; the message lists what is allowed."""


class ResultsFileError(RuntimeError):
    """A results file that cannot be read back (names the file and line)."""


class OutputError(ValueError):
    """An output folder that cannot be used (a file, not writable) or is held by another run."""
