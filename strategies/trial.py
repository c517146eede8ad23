"""``mpn-nas trial``: the trial command of an ``nnictl create`` experiment.

Reads the tuner's parameters, maps them to an architecture through the same space config as the
exported ``search_space.json``, refuses over-budget parameters, trains and reports to NNI.
"""
from __future__ import annotations

from typing import Optional

from mpn_nas.data import dataset_shape
from mpn_nas.errors import UserError
from mpn_nas.recipe import TrainConfig

from search_spaces.budget import Budget, check_arch
from search_spaces.config import load_config, sample_to_arch


def run_trial(space: str, space_config: Optional[str], dataset: str, data_dir: Optional[str], config: TrainConfig,
              budget: Budget) -> float:
    """Train the architecture of NNI's next parameters with ``config``; returns its validation accuracy."""
    import nni

    from .evaluation import train_arch_and_report

    params = nni.get_next_parameter()
    if not params:
        raise UserError("no parameters from NNI; run 'mpn-nas trial' as the trialCommand of an nnictl experiment")
    shape = dataset_shape(dataset, data_dir)
    candidates = load_config(space, space_config, in_channels=shape.in_channels, input_size=shape.input_size,
                             num_classes=shape.num_classes)
    arch = sample_to_arch(candidates, params)
    fits, _, problems = check_arch(arch, budget)
    if not fits:
        raise UserError(f"parameters are over budget ({'; '.join(problems)}); use a budget-aware tuner "
                        "(strategies.tuners) so that they are never proposed")
    print(f"trial architecture: {arch.to_json()}", flush=True)
    return train_arch_and_report(arch, config, dataset=dataset, data_dir=data_dir)
