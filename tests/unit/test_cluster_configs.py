"""The cluster example configs (many local GPUs, Kubeflow, FrameworkController) pass NNI's own config schema,
and the trial command each one runs is one ``mpn-nas trial`` accepts. No cluster or GPU is needed."""
import shlex

import pytest

from helpers import REPO

CLUSTER_EXAMPLES = ("gpus", "kubeflow", "frameworkcontroller")


def _trial_commands(config) -> list[str]:
    service = config.training_service
    if service.platform == "kubeflow":
        return [service.worker.command]
    if service.platform == "frameworkcontroller":
        return [role.command for role in service.task_roles]
    return [config.trial_command]


@pytest.mark.parametrize("name", CLUSTER_EXAMPLES)
def test_cluster_example_passes_nni_schema_and_runs_a_valid_trial_command(name):
    from nni.experiment.config import ExperimentConfig

    from mpn_nas.cli import build_parser

    config = ExperimentConfig.load(str(REPO / "examples" / name / "config.yml"))
    canonical = config.canonical_copy()
    canonical.validate()
    assert canonical.trial_gpu_number == 1 and canonical.tuner.class_name == "strategies.tuners.BudgetedTPE"
    assert canonical.search_space  # the shared CIFAR-10 space file was found and read
    for command in _trial_commands(canonical):
        words = shlex.split(command)
        assert words[:2] == ["mpn-nas", "trial"], command
        args = build_parser().parse_args(words[1:])  # a typo in a flag fails here, as it would in every trial
        assert args.space == canonical.tuner.class_args["space"] and args.device == "cuda"
        assert args.max_flops == canonical.tuner.class_args["max_flops"]  # trial and tuner keep one budget
    if name == "gpus":
        service = canonical.training_service
        assert service.max_trial_number_per_gpu * len(service.gpu_indices) == canonical.trial_concurrency
