"""The one exception type for bad input data, so the CLI can print it without a traceback."""


class DataError(ValueError):
    """Input data is unusable; the message says which file, column and rows, and how to fix it."""
