"""Distributed retraining: ``mpn-nas retrain --devices N --distributed ... --num-nodes M`` on Lightning's
strategies, here as CPU processes talking gloo over loopback."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import EXAMPLE_ARCHS, REPO, poll_until, reserved_port, run_cli, stop_process
from mpn_nas.cli import main
from mpn_nas.data import make_data

ARCH = str(EXAMPLE_ARCHS / "digits_single.json")
TWO_PROCESSES = ("--devices", "2", "--device", "cpu")
pytestmark = pytest.mark.xdist_group("distributed")  # under pytest-xdist, one worker trains ddp_run once


def _retrain(out, *extra: str, env=None):
    result = run_cli("retrain", ARCH, "--epochs", "2", "--out", str(out), "--seed", "3", *extra, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _model_file_checksum(path) -> str:
    from mpn_nas.sharding import weights_checksum

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return f"{weights_checksum(state):014x}"


def _test_split_accuracy(model_path, seed: int) -> float:
    """Accuracy of the saved model over every image of the test split, in this one process."""
    from mpn_nas.checkpoint import load_model

    _, model = load_model(model_path)
    images, labels = zip(*make_data("digits", seed=seed).test_set)
    with torch.no_grad():
        predicted = model(torch.stack(images)).argmax(dim=1)
    return (predicted == torch.stack(labels)).float().mean().item()


def _processed_epochs(checkpoint) -> int:
    return torch.load(checkpoint, weights_only=True)["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = _retrain(out, *TWO_PROCESSES, "--distributed", "ddp")
    return out, result, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_model_equal_on_every_rank(ddp_run):
    out, result, metrics = ddp_run
    assert {k: metrics[k] for k in ("world_size", "num_nodes", "strategy", "global_batch_size",
                                    "per_device_batch_size")} == \
        {"world_size": 2, "num_nodes": 1, "strategy": "ddp", "global_batch_size": 64, "per_device_batch_size": 32}
    # Every rank saw the same weights at the end of training, and they are the ones model.pt holds.
    assert metrics["rank_weight_checksums"] == [_model_file_checksum(out / "model.pt")] * 2
    # Only rank 0 wrote: one set of files, one final report, one row per epoch.
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "checkpoints", "logs", "metrics.csv",
                                                     "metrics.json", "model.pt"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]
    assert result.stdout.count("wrote ") == 1
    assert [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2"]
    # The synchronised accuracy is the whole test split's (not rank 0's half of it).
    assert metrics["test_accuracy"] == pytest.approx(_test_split_accuracy(out / "model.pt", seed=3), abs=1e-6)


@pytest.mark.slow
def test_ddp_spawn_and_two_nodes_on_loopback_train_the_same_weights_as_ddp(ddp_run, tmp_path):
    _, _, ddp_metrics = ddp_run
    spawned = tmp_path / "spawn"
    _retrain(spawned, *TWO_PROCESSES, "--distributed", "ddp_spawn")
    assert json.loads((spawned / "metrics.json").read_text())["rank_weight_checksums"] == \
        ddp_metrics["rank_weight_checksums"]

    # Two "machines" of one process each, as the README launches them: one command per node.
    nodes = tmp_path / "nodes"
    command = [sys.executable, "-m", "mpn_nas.cli", "retrain", ARCH, "--epochs", "2", "--out", str(nodes),
               "--seed", "3", "--device", "cpu", "--num-nodes", "2"]
    with reserved_port() as port:
        # One thread each, as Lightning gives each of the 2 local processes of the ddp run on 2 cores: float
        # sums over other thread counts round differently. (Real nodes have their own cores.)
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        processes = [subprocess.Popen(command, env={**env, "NODE_RANK": str(rank)}, cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
        try:
            outputs = [process.communicate(timeout=300) for process in processes]
        finally:
            for process in processes:
                stop_process(process)
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert "wrote " in outputs[0][0] and "wrote " not in outputs[1][0]  # node 0 writes, node 1 only trains
    metrics = json.loads((nodes / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["num_nodes"]) == (2, 2)
    assert metrics["rank_weight_checksums"] == ddp_metrics["rank_weight_checksums"]


@pytest.mark.slow
def test_an_interrupted_two_process_retrain_resumes_from_its_checkpoint(ddp_run, tmp_path):
    _, _, straight = ddp_run
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mpn_nas.cli", "retrain", ARCH, "--epochs", "2", "--out", str(out), "--seed", "3",
               *TWO_PROCESSES]
    process = subprocess.Popen(command, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / "last.ckpt"

    def first_epoch_saved():  # the checkpoint is written after the epoch's line, maybe not yet whole
        try:
            return _processed_epochs(checkpoint) == 1
        except Exception:
            return False

    try:
        for line in process.stdout:  # killed (both ranks) right after the first epoch's checkpoint
            if line.startswith("epoch 1/2"):
                poll_until(first_epoch_saved, timeout=60, interval=0.02, what="epoch 1's checkpoint")
                break
    finally:
        stop_process(process)
        process.stdout.close()
    assert process.returncode != 0 and not (out / "model.pt").exists()
    assert _processed_epochs(checkpoint) == 1
    first_rows = (out / "metrics.csv").read_text().splitlines()

    resumed = _retrain(out, *TWO_PROCESSES, "--resume")
    assert [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("epoch ")] == ["2/2"]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[:2] == first_rows[:2] and [row.split(",")[0] for row in rows[1:]] == ["1", "2"]
    metrics = json.loads((out / "metrics.json").read_text())
    # The second epoch continued from the first one's weights, optimiser and shuffle: the same end as unbroken.
    assert metrics["rank_weight_checksums"] == straight["rank_weight_checksums"]
    assert metrics["test_accuracy"] == straight["test_accuracy"]


def test_retrain_help_states_the_batch_and_learning_rate_rule(capsys):
    with pytest.raises(SystemExit):
        main(["retrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size is the global batch" in text
    assert "--lr and its schedule mean what they mean on one device" in text


def _refused(cli, tmp_path, *flags: str) -> str:
    status, lines = cli("retrain", ARCH, "--out", "{tmp}/never", *flags)
    assert status == 2 and len(lines) == 1 and not (tmp_path / "never").exists(), lines
    return lines[0]


def test_bad_distributed_settings_are_refused_in_one_line_writing_nothing(cli, tmp_path, monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    cores = os.cpu_count()
    assert f"only {cores} CPU cores" in _refused(cli, tmp_path, "--device", "cpu", "--devices", str(cores + 1))
    assert "invalid choice: 'horovod'" in _refused(cli, tmp_path, "--distributed", "horovod")
    assert "--distributed fsdp needs CUDA GPUs" in _refused(cli, tmp_path, "--device", "cpu", "--devices", "2",
                                                            "--distributed", "fsdp")
    assert "--sync-batchnorm needs CUDA GPUs" in _refused(cli, tmp_path, "--device", "cpu", "--devices", "2",
                                                          "--sync-batchnorm")
    assert "pass a multiple of 2" in _refused(cli, tmp_path, "--device", "cpu", "--devices", "2",
                                              "--batch-size", "63")
    assert "needs MASTER_ADDR, MASTER_PORT, NODE_RANK set" in _refused(cli, tmp_path, "--num-nodes", "2")
    monkeypatch.setenv("MASTER_ADDR", "no-such-host.invalid")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("NODE_RANK", "1")
    assert "MASTER_ADDR=no-such-host.invalid does not resolve" in _refused(cli, tmp_path, "--num-nodes", "2")
    monkeypatch.setenv("NODE_RANK", "2")
    assert "a number below --num-nodes 2" in _refused(cli, tmp_path, "--num-nodes", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setattr("mpn_nas.distributed.MASTER_WAIT_S", 1.0)
    with reserved_port() as port:  # nothing listens there
        monkeypatch.setenv("MASTER_PORT", str(port))
        assert f"master 127.0.0.1:{port} not reachable within 1 s" in _refused(cli, tmp_path, "--num-nodes", "2")


def test_sharded_loaders_read_every_evaluation_image_once_and_split_the_global_batch(monkeypatch):
    import torch.distributed as dist
    from torch.utils.data import Subset

    from mpn_nas.sharding import ShardedData

    data = make_data("digits", batch_size=64)
    data.val_set, data.test_set = Subset(data.val_set, range(101)), Subset(data.test_set, range(7))  # odd sizes
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    shards = {"train": [], "val": [], "test": []}
    for rank in (0, 1):
        monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
        sharded = ShardedData(data, world_size=2, seed=0)
        for split in shards:
            loader = getattr(sharded, f"{split}_dataloader")()
            assert loader.batch_size == 32
            shards[split].append(list(loader.sampler))
    assert sorted(shards["val"][0] + shards["val"][1]) == list(range(101))
    assert sorted(shards["test"][0] + shards["test"][1]) == list(range(7))
    train_size = len(data.train_set)  # shuffled halves (one index repeated when the size is odd)
    assert [len(shard) for shard in shards["train"]] == [(train_size + 1) // 2] * 2
    assert set(shards["train"][0]) | set(shards["train"][1]) == set(range(train_size))
