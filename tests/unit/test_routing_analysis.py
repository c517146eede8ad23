"""Path-specialisation scores of the routing (mpn_nas.routing_analysis)."""
import pytest
import torch

from helpers import EXAMPLE_ARCHS
from mpn_nas import Arch, build_model
from mpn_nas.data import make_data
from mpn_nas.routing_analysis import analyse_routing, routing_points, specialisation_score


def _digits_arch(routing: str) -> Arch:
    doc = Arch.from_json(EXAMPLE_ARCHS / "digits_routed.json").to_dict()
    for stage in doc["stages"]:
        stage["routing"] = routing
    return Arch.from_dict(doc)


def _scores(model, dataset):
    return [layer.class_score for layer in analyse_routing(model, dataset, 10).layers]


def test_score_is_mutual_information_in_bits():
    # two equally likely classes routed to two different connections: exactly 1 bit
    routing = torch.zeros(4, 2, 2)
    routing[:2, 0, 0] = 1.0
    routing[2:, 1, 1] = 1.0
    assert specialisation_score(routing, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)
    assert specialisation_score(routing, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)

def test_score_is_zero_for_routing_none_and_a_uniform_router():
    data = make_data("digits", seed=0)
    plain = build_model(_digits_arch("none"))
    assert [name for name, _ in routing_points(plain)] == ["blocks.0.conv1.mix", "blocks.1.conv1.mix"]
    assert _scores(plain, data.test_set) == pytest.approx([0.0, 0.0], abs=1e-9)
    uniform = build_model(_digits_arch("feature_dependent"))
    for _, mix in routing_points(uniform):
        with torch.no_grad():  # logits 0 for every input: A = 1/p everywhere
            mix.router.gate[2].weight.zero_()
            mix.router.gate[2].bias.zero_()
    report = analyse_routing(uniform, data.test_set, 10)
    assert torch.allclose(report.layers[1].by_class, torch.full((10, 4, 4), 0.25))
    assert [layer.class_score for layer in report.layers] == pytest.approx([0.0, 0.0], abs=1e-9)
    untouched = build_model(_digits_arch("feature_dependent"))
    assert sum(_scores(untouched, data.test_set)) > 0  # a data-dependent router scores above zero
