"""Path-specialisation scores of the routing (mpn_nas.routing_analysis)."""
import pytest
import torch

from helpers import class_scores, digits_routed_as
from mpn_nas import build_model
from mpn_nas.data import make_data
from mpn_nas.routing_analysis import analyse_routing, routing_points, specialisation_score


def test_score_is_mutual_information_in_bits():
    # two equally likely classes routed to two different connections: exactly 1 bit
    routing = torch.zeros(4, 2, 2)
    routing[:2, 0, 0] = 1.0
    routing[2:, 1, 1] = 1.0
    assert specialisation_score(routing, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)
    assert specialisation_score(routing, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)

def test_score_is_zero_for_routing_none_and_a_uniform_router():
    data = make_data("digits", seed=0)
    plain = build_model(digits_routed_as("none"))
    assert [name for name, _ in routing_points(plain)] == ["blocks.0.conv1.mix", "blocks.1.conv1.mix"]
    assert class_scores(plain, data.test_set) == pytest.approx([0.0, 0.0], abs=1e-9)
    uniform = build_model(digits_routed_as("feature_dependent"))
    for _, mix in routing_points(uniform):
        with torch.no_grad():  # logits 0 for every input: A = 1/p everywhere
            mix.router.gate[2].weight.zero_()
            mix.router.gate[2].bias.zero_()
    report = analyse_routing(uniform, data.test_set, 10)
    assert torch.allclose(report.layers[1].by_class, torch.full((10, 4, 4), 0.25))
    assert [layer.class_score for layer in report.layers] == pytest.approx([0.0, 0.0], abs=1e-9)
    untouched = build_model(digits_routed_as("feature_dependent"))
    assert sum(class_scores(untouched, data.test_set)) > 0  # a data-dependent router scores above zero
