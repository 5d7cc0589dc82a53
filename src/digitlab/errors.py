"""The one exception type digitlab raises for bad input; the CLI prints it on one line."""


class DigitlabError(Exception):
    """Bad input or state: the message names the file or field and what was expected."""


class DataError(DigitlabError):
    """A data file or source is missing, malformed or fails verification."""


class RunError(DigitlabError):
    """A run directory is missing, incomplete or would be overwritten."""
