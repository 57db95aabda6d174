"""Exceptions that carry a one-line, actionable message for the user, and the one way
every command reports them (:func:`fail`, :func:`cli_main`)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")


class LitDistillError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(LitDistillError):
    """The configuration or its inputs are invalid; raised before any weights load."""


class LaunchError(ConfigError):
    """A launch setup that breaks every job of a sweep (fatal even inside a --multirun)."""


class TrainingError(LitDistillError):
    """Training went wrong in a way the user must act on (a loss or weights went NaN/inf)."""


def fail(err: LitDistillError) -> int:
    """Every command's handling of bad input: ``error: <message>`` on stderr; returns the
    exit code (2) for the caller to return or ``sys.exit`` with."""
    print(f"error: {err}", file=sys.stderr)
    return 2


def cli_main(main: Callable[P, int]) -> Callable[P, int]:
    """Decorate a command's ``main`` (which returns its exit code): a
    :class:`LitDistillError` it raises becomes :func:`fail`'s one line and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except LitDistillError as err:
            return fail(err)

    return wrapper
