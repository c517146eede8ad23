"""Retraining on several devices or machines with Lightning's own strategies (DDP, DDP spawn, FSDP):
the options, their checks, the mapping onto Lightning's Trainer, and the data loaders each process reads.

The batch rule: ``--batch-size`` is the *global* batch. Each of the ``devices x num_nodes`` processes
takes ``batch_size / world_size`` samples per step and DDP averages the gradients, so one optimiser
step sees the same number of samples as on one device, and ``--lr`` and its schedule keep their
meaning (a recipe recorded by ``mpn-nas search`` retrains the same way on 1 or 8 devices).

Multi-node launch (Lightning's environment variables, one command per machine)::

    MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NODE_RANK=0 mpn-nas retrain ARCH --devices 4 --num-nodes 2 ...
    MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NODE_RANK=1 mpn-nas retrain ARCH --devices 4 --num-nodes 2 ...

or ``torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:PORT -m mpn_nas.cli retrain ...`` with the
same ``--devices``/``--num-nodes``. Only global rank 0 writes files.
"""
from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from .data import ClassificationData
    from .training import TrainConfig

# --distributed NAME -> Lightning's strategy name; "auto" is DDP with one process per device once there
# is more than one device (launched by re-running the command, which also works under torchrun).
STRATEGIES = {"auto": "ddp", "ddp": "ddp", "ddp_spawn": "ddp_spawn", "fsdp": "fsdp"}
MASTER_WAIT_S = 60.0  # how long a node of rank > 0 waits for MASTER_ADDR:MASTER_PORT to accept connections
BATCH_RULE = ("--batch-size is the global batch: each of the devices x num-nodes processes takes "
              "batch-size / (devices x num-nodes) per step, so --lr and its schedule mean what they mean on one device")


def world_size(config: "TrainConfig") -> int:
    return config.devices * config.num_nodes


def check_config(config: "TrainConfig", device: str) -> None:
    """Refuse, in one line, settings that cannot run here; ``device`` is the resolved ``cpu``/``cuda``."""
    if config.distributed not in STRATEGIES:
        raise UserError(f"unknown distributed strategy {config.distributed!r}; allowed: {', '.join(STRATEGIES)}")
    if device == "cuda":
        from .devices import visible_gpu_count

        available, what = visible_gpu_count(), "CUDA GPUs are visible"
    else:
        available, what = os.cpu_count() or 1, "CPU cores are here (one process per core at most)"
    if config.devices > available:
        raise UserError(f"--devices {config.devices} asked for, but only {available} {what}; pass --devices "
                        f"{available} or fewer")
    if device != "cuda":  # Lightning's FSDP and PyTorch's SyncBatchNorm refuse CPU tensors
        for flag, asked in (("--distributed fsdp", config.distributed == "fsdp"),
                            ("--sync-batchnorm", config.sync_batchnorm)):
            if asked:
                raise UserError(f"{flag} needs CUDA GPUs; on CPU use --distributed ddp without --sync-batchnorm")
    if config.batch_size % world_size(config):
        raise UserError(f"--batch-size {config.batch_size} does not split evenly over {world_size(config)} processes "
                        f"({BATCH_RULE}); pass a multiple of {world_size(config)}")
    if config.num_nodes > 1:
        check_master(config.num_nodes)


def launched_externally() -> bool:
    """torchrun (or another elastic launcher) started this process and set its rank."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def check_master(num_nodes: int) -> None:
    """Multi-node runs need the rendezvous Lightning reads from the environment; a node of rank > 0
    waits up to :data:`MASTER_WAIT_S` for the master to accept connections, instead of PyTorch's
    30-minute store timeout."""
    if launched_externally():
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if not os.environ.get(name)]
    if missing:
        raise UserError(f"--num-nodes {num_nodes} needs {', '.join(missing)} set on every machine (the address and "
                        "a free port of the machine with NODE_RANK=0, and this machine's rank); or launch with "
                        "torchrun")
    address, port_text, rank_text = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["NODE_RANK"]
    if not (port_text.isdigit() and 0 < int(port_text) < 65536) or not rank_text.isdigit() \
            or int(rank_text) >= num_nodes:
        raise UserError(f"MASTER_PORT={port_text} must be a TCP port and NODE_RANK={rank_text} a number below "
                        f"--num-nodes {num_nodes}")
    try:
        socket.getaddrinfo(address, int(port_text))
    except socket.gaierror:
        raise UserError(f"MASTER_ADDR={address} does not resolve; set it to the address of the machine with "
                        "NODE_RANK=0") from None
    if int(rank_text) > 0 and not _reachable(address, int(port_text), MASTER_WAIT_S):
        raise UserError(f"master {address}:{port_text} not reachable within {MASTER_WAIT_S:g} s; start the "
                        "NODE_RANK=0 machine first and check MASTER_ADDR, MASTER_PORT and its firewall")


def _reachable(address: str, port: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((address, port), timeout=2):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def launch_rank(config: "TrainConfig") -> int:
    """This process's global rank as its launcher set it (torchrun; Lightning for the processes it starts,
    the user for a machine's NODE_RANK); 0 on one device. Known before the process group exists, so that
    files are kept to rank 0 from the start."""
    if world_size(config) == 1:
        return 0
    if launched_externally():
        return int(os.environ.get("RANK", 0))
    return int(os.environ.get("NODE_RANK", 0)) * config.devices + int(os.environ.get("LOCAL_RANK", 0))


def trainer_options(config: "TrainConfig") -> dict[str, Any]:
    """Keyword arguments of ``pl.Trainer``: one device, or Lightning's strategy over all of them."""
    if world_size(config) == 1:
        return {"devices": 1}
    strategy: Any = STRATEGIES[config.distributed]
    if strategy == "fsdp":
        from pytorch_lightning.strategies import FSDPStrategy

        strategy = FSDPStrategy(state_dict_type="full")  # one checkpoint file that --resume and rank 0 read
    return {"devices": config.devices, "num_nodes": config.num_nodes, "strategy": strategy,
            "sync_batchnorm": config.sync_batchnorm}


def data_for(data: "ClassificationData", config: "TrainConfig") -> "pl.LightningDataModule":
    """``data`` itself on one device; else its splits sharded for each process (:class:`.sharding.ShardedData`)."""
    if world_size(config) == 1:
        return data
    from .sharding import ShardedData

    return ShardedData(data, world_size(config), config.seed)


def callbacks(config: "TrainConfig", last_stage: str) -> list:
    """Callbacks a distributed run adds: the per-rank weight checksums that metrics.json records, and the
    orderly end of each process's process group after ``last_stage`` ("fit" or "test")."""
    if world_size(config) == 1:
        return []
    from .sharding import EndProcessGroup, RankChecksums

    return [RankChecksums(), EndProcessGroup(every_stage=config.distributed == "ddp_spawn", last_stage=last_stage)]


def run_facts(trainer: "pl.Trainer", config: "TrainConfig") -> dict:
    """What metrics.json records about the distribution of a run."""
    facts = {"world_size": world_size(config), "num_nodes": config.num_nodes,
             "strategy": STRATEGIES[config.distributed] if world_size(config) > 1 else "single_device",
             "global_batch_size": config.batch_size, "per_device_batch_size": config.batch_size // world_size(config)}
    checksums = trainer.callback_metrics.get("weight_checksums")
    if checksums is not None:
        facts["rank_weight_checksums"] = [f"{int(value):014x}" for value in checksums.reshape(-1).tolist()]
    return facts
