"""A shallow exception tree; driver errors are translated at the boundary."""

from __future__ import annotations


class PgRetentionError(Exception):
    """Base class: a user-facing error with a one-line message."""

    exit_code = 1


class ConnectionFailed(PgRetentionError):
    """The server could not be reached or refused the login."""

    exit_code = 2


class PermissionDenied(PgRetentionError):
    """The connected role lacks a privilege pgretention needs."""

    exit_code = 3


class NotInstalled(PgRetentionError):
    """pgretention is not installed in the target database."""

    exit_code = 4


class MissingExtension(PgRetentionError):
    """A required extension is not available on the server."""

    exit_code = 5


class InvalidInput(PgRetentionError):
    """Bad arguments or a rejected policy; nothing was changed."""

    exit_code = 6
