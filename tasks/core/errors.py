"""Errors that mean "the input is wrong": deterministic, so never retried."""


class DataError(ValueError):
    """The data or its config breaks the contract."""


class SpecError(DataError):
    """The dataset config is invalid or does not match the data."""


class QuarantineToleranceExceeded(DataError):
    """More rows failed validation than the dataset config tolerates."""


class SettingsError(DataError):
    """A saved setting is wrong, e.g. a registry rejected the block's credentials."""


class ModelIntegrityError(DataError):
    """A model's files differ from the content hash recorded when it was logged: refused, never retried."""


class TableTooLarge(DataError):
    """A table over a row or (decompressed) byte limit: a request body gets 413."""
