"""Exceptions that carry a one-line, actionable message for the user."""


class LitDistillError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(LitDistillError):
    """The configuration or its inputs are invalid; raised before any weights load."""


class LaunchError(ConfigError):
    """A launch setup that breaks every job of a sweep (fatal even inside a --multirun)."""


class TrainingError(LitDistillError):
    """Training went wrong in a way the user must act on (a loss or weights went NaN/inf)."""
