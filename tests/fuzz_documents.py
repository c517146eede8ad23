"""Fuzz worker: seeded mutations of the shipped architecture documents, each one read, profiled and
built under a memory limit (``resource.setrlimit``) and a per-document time limit.

Run by ``tests/test_fuzz.py`` in a subprocess: ``python tests/fuzz_documents.py --seed S --count N``.
Prints one JSON line per document: ``{"case", "outcome", "detail"}`` where outcome is ``accepted``
(built and run), ``refused`` (one-line answer, status 2 from the command line) or a failure:
``crash`` (any other exception), ``multi-line`` (a refusal of more than one line), ``hang`` (over the
time limit) or ``out-of-memory``. A kill by the kernel or a hang of the whole worker shows as its exit status.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402  (after the path: the worktree's mpn_nas, not an installed one)

from mpn_nas import Arch, build_model, profile  # noqa: E402
from mpn_nas.cli import main  # noqa: E402
from mpn_nas.errors import UserError  # noqa: E402
from mpn_nas.limits import MAX_MEMORY_ENV  # noqa: E402

EXAMPLES = sorted((REPO / "examples" / "archs").glob("*.json"))
MEMORY_HEADROOM = 1536 * 2 ** 20  # address space the worker may add to what it holds after imports
NETWORK_MEMORY = "96M"  # --max-memory for the documents: well inside the headroom
SECONDS_PER_DOCUMENT = 20


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


# ----------------------------------------------------------------------------------------------- mutations

def _paths(node, prefix=()):
    """Every (path, value) inside a JSON document (dict keys and list indices)."""
    yield prefix, node
    if len(prefix) > 6:  # do not walk into the deep nesting an earlier mutation made
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


def _set(doc, path, value):
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def _nested(depth: int, leaf) -> object:
    for _ in range(depth):
        leaf = [leaf] if depth % 2 else {"x": leaf}
    return leaf


def _text(value) -> str:
    try:
        return repr(value)[:50]
    except (ValueError, RecursionError):  # an int of more digits than Python prints, deep nesting
        return "unprintable"


def mutate(doc: dict, rng: random.Random) -> tuple[str, str]:
    """One mutated document as JSON text, and a short name of what was done."""
    done = []
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(doc))
        path, value = rng.choice(paths)
        kind = rng.choice(["scale", "scale", "scale", "type", "drop", "duplicate", "null", "string", "nest",
                           "unknown", "stages", "bignum", "negative"])
        if kind == "scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
            factor = 10 ** rng.choice([1, 1, 2, 2, 3, 4, 6, 9, 12])
            doc = _set(doc, path, value * factor if rng.random() < 0.8 else value / factor)
        elif kind == "negative" and isinstance(value, (int, float)) and not isinstance(value, bool):
            doc = _set(doc, path, -value)
        elif kind == "type":
            doc = _set(doc, path, rng.choice([[value], {"v": value}, _text(value), True, 1.5, 0, [], {}]))
        elif kind == "drop" and path and isinstance(value, (int, float, str, bool, list, dict)):
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        elif kind == "duplicate" and path and isinstance(path[-1], int):
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            parent.extend([value] * rng.choice([1, 3, 40]))
        elif kind == "null":
            doc = _set(doc, path, None)
        elif kind == "string":
            doc = _set(doc, path, rng.choice(["", "x" * 10_000, "none\nwith a newline", "\u00e9\u2603", "1e9"]))
        elif kind == "nest":
            doc = _set(doc, path, _nested(rng.choice([5, 50, 500, 5000, 100_000]), value))
        elif kind == "unknown" and isinstance(value, dict):
            value[rng.choice(["colour", "stages2", "\n"])] = 1
        elif kind == "stages" and isinstance(doc, dict) and isinstance(doc.get("stages"), list) and doc["stages"]:
            doc["stages"] = doc["stages"] * rng.choice([2, 10, 100])
        elif kind == "bignum":
            doc = _set(doc, path, rng.choice([10 ** 5000, 2 ** 63, float("inf"), float("nan"), 1e308]))
        else:
            continue
        done.append(kind)
    try:
        text = json.dumps(doc)
    except (RecursionError, ValueError):  # too deep for json.dumps, or an int too long to print
        return '{"format": "mpn-nas/arch", "stages": ' + "[" * 100_000, "nest-text"
    roll = rng.random()
    if roll < 0.05:
        text, done = text[:rng.randrange(max(1, len(text)))], done + ["truncate"]
    elif roll < 0.10 and '"width": ' in text:  # a duplicated key: the JSON parser keeps the last
        text, done = text.replace('"width": ', '"width": 99999999, "width": ', 1), done + ["duplicate-key"]
    return text, "+".join(done) or "unchanged"


# ----------------------------------------------------------------------------------------------- checks

def check_document(text: str, scratch: Path) -> tuple[str, str]:
    try:
        arch = Arch.from_json(text)
    except UserError as err:
        message = str(err)
        if "\n" in message:
            return "multi-line", message[:300]
        # The command line gives the same answer: status 2, one line on stderr.
        path = scratch / "doc.json"
        path.write_text(text)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = main(["profile", str(path)])
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        if status != 2 or len(lines) != 1:
            return "multi-line", f"status {status}: {stderr.getvalue()[:300]}"
        return "refused", message[:160]
    profile(arch, repeats=1)  # meta-device counts, then one timed forward pass
    model = build_model(arch).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, arch.in_channels, arch.input_size, arch.input_size))
    assert logits.shape == (2, arch.num_classes)
    return "accepted", ""


def run(seed: int, count: int, scratch: Path) -> None:
    rng = random.Random(seed)
    sources = [json.loads(path.read_text()) for path in EXAMPLES]
    for case in range(count):
        text, what = mutate(json.loads(json.dumps(rng.choice(sources))), rng)
        signal.alarm(SECONDS_PER_DOCUMENT)
        started = time.perf_counter()
        try:
            outcome, detail = check_document(text, scratch)
        except Timeout:
            outcome, detail = "hang", ""
        except MemoryError:
            outcome, detail = "out-of-memory", ""
        except BaseException:  # noqa: BLE001  a crash is what this worker reports
            outcome, detail = "crash", traceback.format_exc()[-1500:]
        finally:
            signal.alarm(0)
        print(json.dumps({"case": case, "mutation": what, "outcome": outcome, "detail": detail,
                          "seconds": round(time.perf_counter() - started, 3), "held_mb": _held() >> 20}), flush=True)


def _held() -> int:
    """Bytes of address space this process holds."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def limit_memory() -> None:
    """Cap the address space at what the worker holds now plus :data:`MEMORY_HEADROOM`."""
    held = _held()
    resource.setrlimit(resource.RLIMIT_AS, (held + MEMORY_HEADROOM, held + MEMORY_HEADROOM))


if __name__ == "__main__":
    import os
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=300)
    options = parser.parse_args()
    os.environ[MAX_MEMORY_ENV] = NETWORK_MEMORY
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as scratch:
        limit_memory()
        run(options.seed, options.count, Path(scratch))
