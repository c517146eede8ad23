"""`mpn-nas profile` as a command prints what the library counts."""
import json

from helpers import EXAMPLE_ARCHS, run_cli
from mpn_nas import Arch, profile


def test_cli_profile_json_matches_library(tmp_path):
    path = EXAMPLE_ARCHS / "digits_routed.json"
    result = run_cli("profile", str(path), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = profile(Arch.from_json(path), latency=False)
    assert (printed["params"], printed["flops"]) == (expected.params, expected.flops)
    assert printed["latency_ms"] > 0
