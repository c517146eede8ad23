"""Errors that mean "bad input": the command line prints them as one line and exits with status 2."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad input from the user (file, option, data set); the message says what is wrong and the fix."""


def run_script(main: Callable[[], int], prog: str) -> NoReturn:
    """A script's entry point: configure the process (:func:`mpn_nas.process.configure_process`), exit
    with ``main()``'s status; a :class:`UserError` becomes one ``prog: error: ...`` line and status 2."""
    from .process import configure_process

    configure_process(show_warnings=True)
    try:
        sys.exit(main())
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
