"""Errors shown to the user of the command line."""


class UserError(Exception):
    """An error the user can fix; printed as one clear line, exit code 2."""
