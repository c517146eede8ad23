import json

import pytest
import torch

from helpers import EXAMPLE_ARCHS, arch_doc, assert_clean_error, run_cli
from mpn_nas import Arch, ArchError, build_model, profile


def test_round_trip_same_params_and_outputs(tmp_path):
    arch = Arch.from_dict(arch_doc())
    model = build_model(arch).eval()
    path = tmp_path / "arch.json"
    arch.to_json(path)
    again = Arch.from_json(path)
    assert again == arch
    rebuilt = build_model(again).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(rebuilt(x), model(x))
    assert Arch.from_json(arch.to_json()) == arch  # JSON text works too


@pytest.mark.parametrize("path", sorted(EXAMPLE_ARCHS.glob("*.json")), ids=lambda p: p.stem)
def test_example_architectures_build_and_run(path):
    arch = Arch.from_json(path)
    logits = build_model(arch)(torch.randn(2, arch.in_channels, arch.input_size, arch.input_size))
    assert logits.shape == (2, arch.num_classes)


# The paper's comparison (DESIGN.md section 2), each baseline as its difference from the single-path
# network: top-level fields changed, and stage fields changed in every stage (per stage where a list).
PAPER_BASELINES = {
    "digits_widened": ({}, {"width": [16, 32]}),  # one path, twice as wide
    "digits_deeper": ({}, {"blocks": [2, 2]}),  # one path, twice as deep
    "digits_multipath": ({}, {"paths": 4}),  # parallel paths, no routing
    "digits_static": ({}, {"paths": 4, "routing": "static"}),  # data-independent cross-connections
    "digits_se": ({}, {"se": True}),  # squeeze-excitation single path
    "digits_ensemble": ({"family": "ensemble", "ensemble_size": 4, "member_family": "resnet"}, {}),
    "digits_routed": ({}, {"paths": 4, "routing": "feature_dependent"}),  # paper algorithm (b)
    "digits_cross_prediction": ({}, {"paths": 4, "routing": "cross_prediction"}),  # paper algorithm (a)
}


def test_single_path_baseline_is_one_plain_path():
    single = json.loads((EXAMPLE_ARCHS / "digits_single.json").read_text())
    assert single["family"] == "resnet" and len(single["stages"]) == 2
    assert [(s["blocks"], s["width"], s["paths"], s["routing"], s["se"]) for s in single["stages"]] == \
        [(1, 8, 1, "none", False), (1, 16, 1, "none", False)]


@pytest.mark.parametrize("name", sorted(PAPER_BASELINES))
def test_every_paper_baseline_differs_from_single_path_as_described(name):
    top_changes, stage_changes = PAPER_BASELINES[name]
    expected = json.loads((EXAMPLE_ARCHS / "digits_single.json").read_text())
    expected.update(top_changes)
    for i, stage in enumerate(expected["stages"]):
        stage.update({key: value[i] if isinstance(value, list) else value for key, value in stage_changes.items()})
    assert json.loads((EXAMPLE_ARCHS / f"{name}.json").read_text()) == expected


def test_ensemble_averages_its_members_logits():
    ensemble = build_model(Arch.from_json(EXAMPLE_ARCHS / "digits_ensemble.json")).eval()
    assert len(ensemble.members) == 4
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(ensemble(x), torch.stack([m(x) for m in ensemble.members]).mean(0))


def _stage(**changes):
    return [dict(arch_doc()["stages"][0], **changes)]


MALFORMED = [
    (dict(format="other"), "format"),
    (dict(version=2), "version"),
    (dict(family="transformer"), "family"),
    (dict(num_classes=1), "num_classes"),
    (dict(in_channels=0), "in_channels"),
    (dict(stem_width="16"), "stem_width"),
    (dict(stages=[]), "stages"),
    (dict(stages=_stage(routing="random")), "stages[0].routing"),
    (dict(stages=_stage(density=0.0)), "stages[0].density"),
    (dict(stages=_stage(density=1.5)), "stages[0].density"),
    (dict(stages=_stage(paths=0)), "stages[0].paths"),
    (dict(stages=_stage(width=-4)), "stages[0].width"),
    (dict(stages=_stage(colour="red")), "stages[0].colour"),
    (dict(stages=[_stage()[0], dict(_stage()[0], paths=2, routing="none")]), "stages[1].routing"),
    (dict(family="mlp", stages=_stage(stride=2)), "stages[0].stride"),
    (dict(family="ensemble", ensemble_size=1), "ensemble_size"),
    (dict(stages=_stage(stride=16)), "stride"),
    (dict(unexpected=True), "unexpected"),
]


@pytest.mark.parametrize("changes,field", MALFORMED, ids=[m[1] + str(i) for i, m in enumerate(MALFORMED)])
def test_malformed_documents_name_the_field(changes, field):
    with pytest.raises(ArchError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Arch.from_dict(arch_doc(**changes))


def test_missing_field_and_bad_json(tmp_path):
    doc = arch_doc()
    del doc["stem_width"]
    with pytest.raises(ArchError, match="stem_width"):
        Arch.from_dict(doc)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "mpn-nas/arch", "version": 1,')
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.from_json(bad)


@pytest.mark.parametrize("text,fragment", [
    ('{"format": "mpn-nas/arch", "vers', "not valid JSON"),
    (json.dumps(arch_doc(version=7)), "version"),
    (json.dumps(arch_doc(stages=_stage(routing="magic"))), "routing"),
    ("[1, 2]", "JSON object"),
])
def test_cli_reports_bad_document_in_one_line(tmp_path, text, fragment):
    path = tmp_path / "arch.json"
    path.write_text(text)
    assert_clean_error(run_cli("profile", str(path)), 2, fragment)


def test_profile_counts_real_flops_including_routing():
    from torch.utils.flop_counter import FlopCounterMode

    routed = Arch.from_dict(arch_doc())
    result = profile(routed, latency=False)
    model = build_model(routed).eval()
    with FlopCounterMode(display=False) as counter:  # same count on real tensors as on the meta device
        model(torch.randn(1, 1, 8, 8))
    assert result.flops == counter.get_total_flops()
    assert result.params == sum(p.numel() for p in model.parameters())
    plain = Arch.from_dict(arch_doc(stages=[dict(s, routing="none", paths=2) for s in arch_doc()["stages"]]))
    static = Arch.from_dict(arch_doc(stages=[dict(s, routing="static", paths=2) for s in arch_doc()["stages"]]))
    assert profile(static, latency=False).flops > profile(plain, latency=False).flops


def test_every_single_network_family_has_a_skeleton_and_a_space():
    from mpn_nas.arch import MEMBER_FAMILIES
    from mpn_nas.models import FAMILY_SKELETONS
    from search_spaces.spaces import SPACES

    assert set(FAMILY_SKELETONS) == set(MEMBER_FAMILIES) == set(SPACES)
