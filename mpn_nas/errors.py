"""Errors that mean "bad input": the command line prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (file, option, data set); the message says what is wrong and the fix."""
