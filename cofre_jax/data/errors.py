"""Errors about the data a user pointed us at (missing, empty, unknown, too short).

The entry point prints these as one line; they also subclass the built-in types that
callers may already catch.
"""


class DataError(ValueError):
    """The configured data cannot be used as it is."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A configured corpus, dataset or tokenizer file does not exist."""


class DataKeyError(DataError, KeyError):
    """A record lacks the configured field."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
