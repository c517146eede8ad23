import json

import pytest
import torch

from helpers import arch_doc, assert_refused, class_scores, digits_routed_as, figure_pixels, png_size
from mpn_nas import Arch, build_model
from mpn_nas.checkpoint import save_model
from mpn_nas.cli import main
from mpn_nas.data import make_data
from mpn_nas.routing_analysis import analyse_routing
from mpn_nas.training import TrainConfig, train


@pytest.mark.slow
@pytest.mark.parametrize("routing", ["cross_prediction", "feature_dependent"])
def test_trained_routed_model_specialises_more_than_at_initialisation(routing):
    arch = digits_routed_as(routing)
    data = make_data("digits", seed=0)
    torch.manual_seed(0)  # train() seeds the same way, so this is the trained model's initialisation
    initial = sum(class_scores(build_model(arch), data.test_set))
    model, metrics = train(arch, data, TrainConfig(epochs=5, seed=0, device="cpu"), progress=False)
    trained = sum(class_scores(model, data.test_set))
    assert metrics["test_accuracy"] > 0.9
    assert trained > 2 * initial > 0, (initial, trained)


@pytest.mark.parametrize("dataset", ["digits", "digits-contexts"])
def test_show_routing_writes_png_and_json(tmp_path, capsys, dataset):
    arch = Arch.from_dict(arch_doc())
    save_model(tmp_path / "model.pt", arch, build_model(arch))
    (tmp_path / "metrics.json").write_text(json.dumps({"seed": 2}))
    out = tmp_path / "figs" / "routing.png"
    assert main(["show-routing", str(tmp_path / "model.pt"), "--dataset", dataset, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = 2 if dataset == "digits" else 4  # one row of panels per layer, per class and (contexts) per context
    assert abs(png_size(out)[0] - figure_pixels(1.25 * 10 + 1.2, 1, 110)[0]) <= 1  # ten class panels a row
    assert abs(png_size(out)[1] - figure_pixels(1, 1.5 * rows + 0.4, 110)[1]) <= 1
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["seed"] == 2 and doc["samples"] == 270 and doc["split"] == "test"
    assert [(layer["name"], layer["routing"], layer["in_paths"], layer["out_paths"]) for layer in doc["layers"]] == [
        ("blocks.0.conv1.mix", "feature_dependent", 3, 3), ("blocks.1.conv1.mix", "cross_prediction", 3, 2)]
    # The scores written are those of the analysis on the same model and split (data seed 2, from metrics.json).
    from mpn_nas.checkpoint import load_model
    from mpn_nas.data import sample_contexts

    test_set = make_data(dataset, seed=2).test_set
    expected = analyse_routing(load_model(tmp_path / "model.pt")[1], test_set, 10, contexts=sample_contexts(test_set))
    for layer, reference in zip(doc["layers"], expected.layers):
        assert layer["class_specialisation_bits"] == pytest.approx(reference.class_score, rel=1e-6, abs=1e-9)
        if dataset == "digits-contexts":
            assert layer["context_specialisation_bits"] == pytest.approx(reference.context_score, rel=1e-6, abs=1e-9)
        assert torch.tensor(layer["mean_routing_by_class"]).shape == (10, layer["in_paths"], layer["out_paths"])
        assert ("context_specialisation_bits" in layer) == (dataset == "digits-contexts")
    for layer in doc["layers"]:
        assert f"{layer['class_specialisation_bits']:.3g}" in printed


def test_show_routing_bad_input(tmp_path, cli):
    assert_refused(cli("show-routing", "{tmp}/missing.pt"), "not found")
    arch = Arch.from_dict(arch_doc(in_channels=3))
    save_model(tmp_path / "model.pt", arch, build_model(arch))
    model = str(tmp_path / "model.pt")
    assert_refused(cli("show-routing", model, "--dataset", "digits", "-o", "{tmp}/r.png"), "expects 3x8x8")
    assert_refused(cli("show-routing", model, "--dataset", "nope"), "unknown dataset")
    assert_refused(cli("show-routing", model, "-o", "{tmp}/r.jpg"), ".png")
    assert_refused(cli("show-routing", model, "--split", "all"), "invalid choice")
    assert not (tmp_path / "r.png").exists()
