"""Errors a user can fix: each message names the problem and the fix, and is printed without a traceback."""


class GenlabError(Exception):
    """A problem with the user's input (config, data, checkpoint, environment), not a bug in genlab."""


class ConfigError(GenlabError, ValueError):
    """A config value is invalid; the message names the key and the fix."""


class DatasetNotFoundError(GenlabError, FileNotFoundError):
    """A dataset is missing or not in the expected layout; the message says where and what."""


class CheckpointError(GenlabError, ValueError):
    """A checkpoint cannot be used; the message names the file, the problem and the fix."""


class DataError(GenlabError, ValueError):
    """Data exists but cannot be used as given (encoding, alignment, too short); the message says how to fix it."""
