"""User-facing errors.

A `UserError` means the user gave us something we cannot use (a config with a typo, a checkpoint
that does not fit, a missing weight file). Its message is one line that names the offending file or
key and says what to do; entry points print it to stderr and exit with status 2 instead of showing a
traceback. Anything else that is raised is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Base class of every error caused by user input (one-line message, exit status 2)."""


class ConfigError(UserError):
    """A YAML config is unreadable, has unknown or misspelled keys, or has values of the wrong type."""


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, unsafe to load, or does not fit the model."""


class InputError(UserError):
    """An input file (image, video, weight file, dataset folder) is missing or unusable."""


class TrainingError(UserError):
    """Training cannot go on: a loss became NaN/inf, or the data cannot fill one batch."""
