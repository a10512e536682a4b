"""Errors meant for the person at the keyboard.

Anything raised as a `CnnlabError` is printed by the CLI as one clear message, without a traceback:
it names the file, flag or field at fault and says what would be right.
"""


class CnnlabError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class DataError(CnnlabError):
    """The data could not be found, read or understood."""


class UnreadableImageError(DataError):
    """One file is not an image we can decode."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # travels back from DataLoader worker processes
        return (type(self), (self.path, self.reason))


class ConfigError(CnnlabError):
    """A flag, config field or model definition has a value that cannot work."""
