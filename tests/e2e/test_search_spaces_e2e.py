"""`mpn-nas export-space` as a command: NNI's search-space format, validated by NNI."""
import json

from nni.common.hpo_utils.validation import validate_search_space

from helpers import assert_clean_error, run_cli


def test_export_space_cli(tmp_path):
    out = tmp_path / "search_space.json"
    narrow = tmp_path / "narrow.json"
    narrow.write_text(json.dumps({"path_counts": [2, 4], "routings": ["feature_dependent"], "shared": True}))
    result = run_cli("export-space", "--space", "resnet", "--space-config", str(narrow), "-o", str(out))
    assert result.returncode == 0, result.stderr
    exported = json.loads(out.read_text())
    assert exported["paths"] == {"_type": "choice", "_value": [2, 4]}
    assert exported["routing"]["_value"] == ["feature_dependent"]
    assert validate_search_space(exported, raise_exception=True)
    narrow.write_text(json.dumps({"path_counts": [0, 2]}))
    assert_clean_error(run_cli("export-space", "--space-config", str(narrow), "-o", str(out)), 2, "path_counts")
    narrow.write_text('{"path_counts": [2,')
    assert_clean_error(run_cli("export-space", "--space-config", str(narrow), "-o", str(out)), 2, "not valid JSON")
    assert_clean_error(run_cli("export-space", "--space", "vit", "-o", str(out)), 2, "invalid choice", "vit")
