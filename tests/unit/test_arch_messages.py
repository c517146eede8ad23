"""Every refusal of an architecture document, compared whole: the one-line message is what a user reads
(``mpn-nas`` prints it and exits 2), so a changed word, a dropped value or a wrong field name is a bug.
Each refused case sits beside the nearest accepted one (the boundary of each rule)."""
import json
from pathlib import Path

import pytest

from helpers import arch_doc
from mpn_nas import Arch, ArchError
from mpn_nas.limits import LIMITS

STAGES = LIMITS["stages (count)"]

FIELDS = ("ensemble_size, extra, family, format, in_channels, input_size, member_family, num_classes, stages, "
          "stem_width, version")


def _stages(index=1, **changes):
    """arch_doc's two stages (3 paths at 8x8, then 2 paths stride 2) with stage ``index`` changed."""
    stages = [dict(stage) for stage in arch_doc()["stages"]]
    stages[index].update(changes)
    return stages


def _mlp(**changes):
    return arch_doc(family="mlp", stages=_stages(se=False, stride=1), **changes)


REFUSED = [
    ([1, 2], "architecture document must be a JSON object, got list"),
    (arch_doc(format="other"), "field 'format' must be 'mpn-nas/arch', got 'other'"),
    (arch_doc(format="f" * 100), "field 'format' must be 'mpn-nas/arch', got '" + "f" * 56 + "..."),
    (arch_doc(version=2), "field 'version' must be 1 (this mpn-nas reads version 1), got 2"),
    (arch_doc(unexpected=True, another=1), f"unknown field 'another'; allowed fields: {FIELDS}"),
    ({k: v for k, v in arch_doc().items() if k != "stem_width"}, "missing field 'stem_width'"),
    ({k: v for k, v in arch_doc().items() if k != "family"}, "missing field 'family'"),
    (arch_doc(stages=[]), "field 'stages' must be a non-empty list of stage objects"),
    (arch_doc(stages={"blocks": 1}), "field 'stages' must be a non-empty list of stage objects"),
    (arch_doc(stages=[arch_doc()["stages"][0]] * (STAGES.high + 1)),
     f"field 'stages' = {STAGES.high + 1} is above the limit of {STAGES.high} ({STAGES.why}); see the limits table "
     "in the README"),
    (arch_doc(extra=[1]), "field 'extra' must be an object (free-form metadata), got [1]"),
    (arch_doc(stages=[3]), "stages[0] must be an object with fields blocks, width, paths, routing, density, stride, se, block"),
    (arch_doc(stages=_stages(colour="red", zz=1)),
     "unknown field 'stages[1].colour'; allowed: block, blocks, density, paths, routing, se, stride, width"),
    (arch_doc(stages=_stages(**{"k" * 100: 1})),
     f"unknown field 'stages[1].{'k' * 36}..'; allowed: block, blocks, density, paths, routing, se, stride, width"),
    (arch_doc(family="vit"), "field 'family' must be one of resnet, mlp, ensemble, got 'vit'"),
    (arch_doc(family="ensemble", ensemble_size=2, member_family="ensemble"),
     "field 'member_family' must be one of resnet, mlp, got 'ensemble'"),
    (arch_doc(num_classes=1), "field 'num_classes' must be an integer >= 2, got 1"),
    (arch_doc(in_channels=0), "field 'in_channels' must be an integer >= 1, got 0"),
    (arch_doc(input_size=True), "field 'input_size' must be an integer >= 1, got True"),
    (arch_doc(stem_width="8"), "field 'stem_width' must be an integer >= 1, got '8'"),
    (arch_doc(ensemble_size=0), "field 'ensemble_size' must be an integer >= 1, got 0"),
    (arch_doc(family="ensemble", ensemble_size=1), "field 'ensemble_size' must be >= 2 for family 'ensemble', got 1"),
    (arch_doc(stages=_stages(blocks=0)), "field 'stages[1].blocks' must be an integer >= 1, got 0"),
    (arch_doc(stages=_stages(width=0)), "field 'stages[1].width' must be an integer >= 1, got 0"),
    (arch_doc(stages=_stages(paths=0)), "field 'stages[1].paths' must be an integer >= 1, got 0"),
    (arch_doc(stages=_stages(stride=2.0)), "field 'stages[1].stride' must be an integer >= 1, got 2.0"),
    (arch_doc(stages=_stages(routing="magic")),
     "field 'stages[1].routing' must be one of none, static, cross_prediction, feature_dependent, got 'magic'"),
    (arch_doc(stages=_stages(density=0)), "field 'stages[1].density' must be a number in (0, 1], got 0"),
    (arch_doc(stages=_stages(density=1.0001)), "field 'stages[1].density' must be a number in (0, 1], got 1.0001"),
    (arch_doc(stages=_stages(density=float("nan"))), "field 'stages[1].density' must be a number in (0, 1], got nan"),
    (arch_doc(stages=_stages(density=True)), "field 'stages[1].density' must be a number in (0, 1], got True"),
    (arch_doc(stages=_stages(density="1")), "field 'stages[1].density' must be a number in (0, 1], got '1'"),
    (arch_doc(stages=_stages(se=1)), "field 'stages[1].se' must be true or false, got 1"),
    (arch_doc(family="mlp", stages=_stages(se=False)),
     "field 'stages[1].stride' applies to the resnet family only; use stride 1, se false and block 'basic' for mlp"),
    (arch_doc(family="mlp", stages=_stages(stride=1)),
     "field 'stages[1].se' applies to the resnet family only; use stride 1, se false and block 'basic' for mlp"),
    (arch_doc(family="ensemble", ensemble_size=2, member_family="mlp", stages=_stages(se=False)),
     "field 'stages[1].stride' applies to the resnet family only; use stride 1, se false and block 'basic' for mlp"),
    (arch_doc(stages=_stages(routing="none")),
     "field 'stages[1].routing' is 'none' but the path count changes from 3 to 2; use static, cross_prediction or "
     "feature_dependent, or equal paths"),
    (arch_doc(stages=_stages(0, stride=8)),
     "field 'stages[*].stride' reduces input_size 8 by 16; the product of strides must be <= input_size"),
    (arch_doc(family=10 ** 5000), "field 'family' must be one of resnet, mlp, ensemble, got <int>"),  # no repr
    (arch_doc(format="f" * 58), "field 'format' must be 'mpn-nas/arch', got '" + "f" * 58 + "'"),  # 60: whole
    (arch_doc(stages=_stages(block="magic")),
     "field 'stages[1].block' must be one of basic, selective_kernel, split_attention, got 'magic'"),
    (arch_doc(stages=_stages(block=["basic"])),
     "field 'stages[1].block' must be one of basic, selective_kernel, split_attention, got ['basic']"),
    (arch_doc(family="mlp", stages=_stages(se=False, stride=1, block="selective_kernel")),
     "field 'stages[1].block' applies to the resnet family only; use stride 1, se false and block 'basic' for mlp"),
    # The second of two blocks takes the stage's own odd width (the first takes stage 0's even 4).
    (arch_doc(stages=_stages(block="split_attention", blocks=2, width=5)),
     "field 'stages[1].block': split_attention needs input channels divisible by 2, got 5 (set by stem_width and "
     "the stage widths)"),
    (arch_doc(stages=_stages(paths=10 ** 6)),
     "field 'stages[1].paths' = 1,000,000 is above the limit of 64 (routers grow with paths squared); see the "
     "limits table in the README"),
]


@pytest.mark.parametrize("doc, message", REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_each_refusal_names_the_field_and_what_is_allowed(doc, message):
    with pytest.raises(ArchError) as refused:
        Arch.from_dict(doc)
    assert str(refused.value) == message


ACCEPTED = [
    arch_doc(num_classes=2, in_channels=1, stem_width=1, input_size=1, stages=_stages(0, stride=1, width=1,
                                                                                     blocks=1)[:1]),
    arch_doc(stages=_stages(0, stride=4)),  # strides 4 * 2 == input_size 8: the smallest map is 1x1
    arch_doc(stages=_stages(density=1), ),  # an integer density of exactly 1
    arch_doc(stages=_stages(density=1e-9)),
    arch_doc(stages=_stages(0, routing="none", paths=2)),  # unrouted: the path count does not change
    arch_doc(family="ensemble", ensemble_size=2),
    _mlp(),
    arch_doc(extra={"note": "kept"}),
    arch_doc(stages=_stages(block="split_attention", width=5)),  # one block: it only takes stage 0's even 4
]


@pytest.mark.parametrize("doc", ACCEPTED, ids=[str(i) for i in range(len(ACCEPTED))])
def test_the_nearest_valid_documents_are_accepted_and_round_trip(doc):
    arch = Arch.from_dict(doc)
    again = Arch.from_json(arch.to_json())
    assert again == arch and again.extra == arch.extra
    expected = dict(doc, ensemble_size=doc.get("ensemble_size", 1), member_family=doc.get("member_family", "resnet"))
    if expected["family"] != "ensemble":
        del expected["ensemble_size"], expected["member_family"]
    assert arch.to_dict() == expected


def test_an_ensemble_member_is_the_same_network_in_its_member_family():
    ensemble = Arch.from_dict(arch_doc(family="ensemble", ensemble_size=3, member_family="mlp",
                                       stages=_stages(se=False, stride=1)))
    assert ensemble.member == Arch.from_dict(_mlp())
    single = Arch.from_dict(arch_doc())
    assert single.member is single


def test_to_json_writes_the_text_it_returns(tmp_path):
    arch = Arch.from_dict(arch_doc(extra={"why": "test"}))
    text = arch.to_json(tmp_path / "arch.json")
    assert (tmp_path / "arch.json").read_text() == text == json.dumps(arch.to_dict(), indent=2) + "\n"


def test_files_and_text_that_are_not_documents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short relative names: the message cuts long ones short
    bad = Path("bad.json")
    bad.write_text('{"format": "mpn-nas/arch",\n "version": 1,')
    binary = Path("binary.json")
    binary.write_bytes(b"\xff\xfe\x00{")
    Path("folder").mkdir()
    huge = Path("huge.json")
    huge.write_text(" " * (1024 * 1024 + 1))
    cases = [
        ("missing.json", "architecture file 'missing.json' not found"),
        (Path("folder"), "architecture file 'folder' not found"),
        (bad, f"'{bad}' is not valid JSON (Expecting property name enclosed in double quotes at line 2 column 15)"),
        (binary, f"cannot read architecture file '{binary}' (UnicodeDecodeError); pass a JSON file"),
        (huge, f"the size of '{huge}' in bytes = 1,048,577 is above the limit of 1,048,576 (bytes of JSON; real "
               "documents are a few KiB); see the limits table in the README"),
        ("x" * 300, f"cannot read architecture file '{'x' * 56}... (OSError); pass a JSON file"),
        ('{"a": ', "architecture JSON is not valid JSON (Expecting value at line 1 column 7)"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
         "architecture JSON is nested too deeply to be an architecture document"),
        ("  " + json.dumps(arch_doc(version=3)), "field 'version' must be 1 (this mpn-nas reads version 1), got 3"),
    ]
    for source, message in cases:
        with pytest.raises(ArchError) as refused:
            Arch.from_json(source)
        assert str(refused.value) == message, source
    try:
        int("9" * 5000)
    except ValueError as err:  # Python's own words, cut to the message's 120 characters
        too_many_digits = str(err).splitlines()[0]
    assert len(too_many_digits) > 120
    with pytest.raises(ArchError) as refused:
        Arch.from_json('{"v": ' + "9" * 5000 + "}")
    assert str(refused.value) == f"architecture JSON is not a valid document ({too_many_digits[:120]})"
    with pytest.raises(ArchError) as refused:
        Arch.from_json("{" + " " * 2 ** 20 + "}")  # JSON text over the limit, as the file above
    assert str(refused.value) == ("the size of architecture JSON in bytes = 1,048,578 is above the limit of 1,048,576 "
                                  "(bytes of JSON; real documents are a few KiB); see the limits table in the README")
    assert Arch.from_json(json.dumps(arch_doc())) == Arch.from_json(arch_doc()) == Arch.from_dict(arch_doc())
