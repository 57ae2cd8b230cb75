"""User-facing errors. Anything raised as a ``UserError`` is printed by the CLI as one line
and exits with code 2; every other exception is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, a YAML key, a CLI value, an adapter or a model."""

    exit_code = 2


class DataError(UserError):
    """A data file or record is unusable. Names the file, the line and the reason."""

    def __init__(self, path, line: int | None, why: str):
        self.path, self.line, self.why = str(path), line, why
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {why}")


class TaskError(UserError):
    """A task spec (YAML) is unusable."""

    def __init__(self, path, why: str):
        self.path, self.why = str(path), why
        super().__init__(f"{path}: {why}")


class ConfigError(UserError):
    """A --set key/value or a config field is unknown or of the wrong type."""


class ModelError(UserError):
    """A model name, path or file cannot be loaded."""


class ResultsNotWritten(UserError):
    """Every run finished but its results (or report) could not be written, e.g. a full disk. Holds
    the records so that the caller can still print them."""

    def __init__(self, path, why: str, records: list):
        self.records = records
        super().__init__(f"{path}: could not write ({why}); the results are printed above")


class AdapterError(UserError):
    """An adapter folder is missing, unsafe, or does not fit the base model."""


class TrainingDiverged(UserError):
    """A training run's loss became NaN or Inf; the run stops before anything non-finite is saved."""
