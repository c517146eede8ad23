"""What ``mpn-nas search`` shows on the terminal, and NNI's full log in the output directory.

Three levels: ``quiet`` (errors and the final summary), ``normal`` (one line per trial plus NNI's
warnings that matter), ``verbose`` (NNI's own log as well). Whatever the level, NNI's log at INFO
goes to ``OUT/nni.log``.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

VERBOSITIES = ("quiet", "normal", "verbose")
NNI_LOG_FILE = "nni.log"

# NNI warnings nobody can act on: NNI logs this one for every copy it makes of a sequential
# experiment's config (17 times in a 30-trial search). They still go to nni.log.
# "Sampling failed": a strategy with no new sample left; the search says so itself in one line.
HARMLESS_NNI_WARNINGS = ("`training_service` will be ignored for sequential execution engine",
                         "Sampling failed after")

# The console level of NNI's messages at each verbosity.
NNI_CONSOLE_LEVEL = {"quiet": logging.ERROR, "normal": logging.WARNING, "verbose": logging.INFO}


class DropHarmless(logging.Filter):
    """Drops the warnings of :data:`HARMLESS_NNI_WARNINGS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in HARMLESS_NNI_WARNINGS)


def verbosity_of(quiet: bool, verbose: bool) -> str:
    return "quiet" if quiet else "verbose" if verbose else "normal"


def say(verbosity: str, text: str) -> None:
    """Print a progress line unless ``--quiet``."""
    if verbosity != "quiet":
        print(text, flush=True)


@contextmanager
def nni_log_routing(out_dir: Path, verbosity: str) -> Iterator[Path]:
    """While the search runs: NNI's console output at the level ``verbosity`` allows (harmless
    warnings dropped unless ``verbose``), and all of NNI's log appended to ``out_dir/nni.log``."""
    logger = logging.getLogger("nni")
    # NNI's own console handler (a plain StreamHandler registered when nni is imported).
    consoles = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    saved = [(h, h.level) for h in consoles]
    drop = DropHarmless()
    for handler in consoles:
        handler.setLevel(NNI_CONSOLE_LEVEL[verbosity])
        if verbosity != "verbose":
            handler.addFilter(drop)
    log_path = Path(out_dir) / NNI_LOG_FILE
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s (%(name)s) %(message)s",
                                                "%Y-%m-%d %H:%M:%S"))
    file_handler.setLevel(logging.INFO)
    logger.addHandler(file_handler)
    try:
        yield log_path
    finally:
        logger.removeHandler(file_handler)
        file_handler.close()
        for handler, level in saved:
            handler.setLevel(level)
            handler.removeFilter(drop)
        sys.stdout.flush()
