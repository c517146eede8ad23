"""The budget-aware nnictl tuners, driven through NNI's tuner API as the NNI manager drives them."""
import pytest

from helpers import tiny_space_config
from mpn_nas import profile
from mpn_nas.errors import UserError
from search_spaces.config import load_config, sample_to_arch
from search_spaces.hpo import hpo_search_space

MAX_PARAMS = 5_500  # about 3 in 10 samples of the tiny space fit
PROPOSALS = 200


# Random proposes hundreds of distinct architectures whose parameters are counted: ~25 s here.
@pytest.mark.parametrize("name", ["BudgetedTPE", "BudgetedEvolution",
                                  pytest.param("BudgetedRandom", marks=pytest.mark.slow)])
def test_budgeted_tuner_never_proposes_over_budget(tmp_path, name):
    from strategies import tuners

    space_config = tiny_space_config(tmp_path / "space.json")
    tuner = getattr(tuners, name)(space="resnet", shape="digits", space_config=str(space_config),
                                  max_params=MAX_PARAMS, seed=0)
    config = load_config("resnet", space_config, in_channels=1, input_size=8, num_classes=10)
    tuner.update_search_space(hpo_search_space(config))
    measured = {}  # architecture -> parameters counted by mpn_nas.profile on the built network
    for parameter_id in range(PROPOSALS):
        parameters = tuner.generate_parameters(parameter_id)
        arch = sample_to_arch(config, parameters)
        if arch not in measured:
            measured[arch] = profile(arch, latency=False).params
        params = measured[arch]
        assert params <= MAX_PARAMS, (parameter_id, parameters, params)
        # Bigger feasible networks score higher, so TPE and Evolution have a signal to follow.
        tuner.receive_trial_result(parameter_id, parameters, params / MAX_PARAMS)
        tuner.trial_end(parameter_id, True)
    assert tuner.rejected > 0  # the wrapped tuner did propose over-budget sets, and they were held back
    assert len(measured) > 10  # still a search, not one feasible architecture repeated


def test_budgeted_tuner_rejects_an_infeasible_budget_and_a_foreign_space(tmp_path):
    from strategies.tuners import BudgetedTPE

    with pytest.raises(UserError, match="smallest"):
        BudgetedTPE(space="resnet", shape="digits", max_params=100)
    tuner = BudgetedTPE(space="resnet", shape="digits", max_params=30_000)
    with pytest.raises(UserError, match="do not match"):
        tuner.update_search_space({"lr": {"_type": "choice", "_value": [0.1, 0.01]}})
