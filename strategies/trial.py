"""``mpn-nas trial``: the trial command of an ``nnictl create`` experiment.

Reads the tuner's parameters, maps them to an architecture through the same space config as the
exported ``search_space.json``, refuses over-budget parameters, trains and reports to NNI.
"""
from __future__ import annotations

from typing import Optional

from mpn_nas.errors import UserError

from search_spaces.budget import Budget, check_arch
from search_spaces.config import load_config, sample_to_arch

from .search import dataset_shape


def run_trial(space: str, space_config: Optional[str], dataset: str, data_dir: Optional[str], epochs: int,
              budget: Budget, batch_size: int = 64, lr: float = 0.05, seed: int = 0, device: str = "auto") -> float:
    import nni

    from search_spaces.evaluation import train_arch_and_report

    params = nni.get_next_parameter()
    if not params:
        raise UserError("no parameters from NNI; run 'mpn-nas trial' as the trialCommand of an nnictl experiment")
    in_channels, input_size, num_classes = dataset_shape(dataset, data_dir)
    config = load_config(space, space_config, in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    arch = sample_to_arch(config, params)
    fits, _, problems = check_arch(arch, budget)
    if not fits:
        raise UserError(f"parameters are over budget ({'; '.join(problems)}); use a budget-aware tuner "
                        "(strategies.tuners) so that they are never proposed")
    print(f"trial architecture: {arch.to_json()}", flush=True)
    return train_arch_and_report(arch, dataset=dataset, data_dir=data_dir, epochs=epochs, batch_size=batch_size,
                                 lr=lr, seed=seed, device=device)
