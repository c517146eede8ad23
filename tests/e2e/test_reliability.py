"""Bad input gets a clear answer; failing trials do not stop a search; interruptions lose nothing."""
import csv
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import (EXAMPLE_ARCHS, REPO, arch_doc, assert_clean_error, ctrl_c_answered, poll_until, run_cli,
                     stop_process, tiny_space_config)

ROUTED = str(EXAMPLE_ARCHS / "digits_routed.json")


def _doc_file(tmp_path, name, doc_or_text):
    path = tmp_path / name
    path.write_text(doc_or_text if isinstance(doc_or_text, str) else json.dumps(doc_or_text))
    return str(path)


def _stage(**changes):
    return [dict(arch_doc()["stages"][0], **changes)]


def _image_folder(root: Path, counts: dict, size: int = 10, modes=("RGB",)) -> Path:
    """``counts[class]`` random PNG images per class sub-folder, cycling through ``modes`` and sizes."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            side = size + 3 * (index % 3)
            pixels = torch.randint(0, 256, (side, side, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).convert(modes[index % len(modes)]).save(root / name / f"{index}.png")
    return root


def _damaged_cifar(root: Path) -> Path:
    """A CIFAR-10 folder whose first training batch is cut short."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    for name, _ in [*CIFAR10.train_list, *CIFAR10.test_list]:
        (folder / name).write_bytes(b"\x80\x02}q" * 10)
    return root


def _bad_input_cases(tmp_path):
    """(case, command line, fragment of the one-line message) for every row of the README's table."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    busy_port = listening.getsockname()[1]
    empty_folder = tmp_path / "empty_images" / "cat"
    empty_folder.mkdir(parents=True)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    previous_search = tmp_path / "previous"
    previous_search.mkdir()
    (previous_search / "search.json").write_text("{}")
    foreign_checkpoint = tmp_path / "foreign_run" / "checkpoints"
    foreign_checkpoint.mkdir(parents=True)
    torch.save({"weights": torch.zeros(2)}, foreign_checkpoint / "last.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    out = str(tmp_path / "out")
    corrupt = _image_folder(tmp_path / "corrupt_images", {"cat": 4, "dog": 4})
    (corrupt / "dog" / "2.png").write_bytes(b"not a png")
    single = _image_folder(tmp_path / "single_class", {"cat": 6})
    few = _image_folder(tmp_path / "few_images", {"cat": 4, "dog": 2})
    (tmp_path / "binary_cifar" / "cifar-10-batches-bin").mkdir(parents=True)
    huge_space = {"widths": [[4, 8], [8, 4096]], "path_counts": [1, 64], "blocks": [1, 64]}
    digits = str(EXAMPLE_ARCHS / "digits_single.json")
    return listening, [
        ("path count 100,000", ["profile", _doc_file(tmp_path, "p5.json", arch_doc(stages=_stage(paths=100_000)))],
         "'stages[0].paths' = 100,000 is above the limit of 64"),
        ("blocks 10,000,000", ["profile", _doc_file(tmp_path, "b7.json", arch_doc(stages=_stage(blocks=10 ** 7)))],
         "'stages[0].blocks' = 10,000,000 is above the limit"),
        ("width 10^9", ["profile", _doc_file(tmp_path, "w9.json", arch_doc(stages=_stage(width=10 ** 9)))],
         "'stages[0].width'"),
        ("input size 10^5", ["profile", _doc_file(tmp_path, "i5.json", arch_doc(input_size=10 ** 5))], "input_size"),
        ("ensemble of 1000", ["profile", _doc_file(tmp_path, "e3.json", arch_doc(family="ensemble",
                                                                                 ensemble_size=1000))],
         "ensemble_size"),
        ("document over --max-memory", ["profile", ROUTED, "--max-memory", "64K"], "raise --max-memory"),
        ("document of several MB", ["profile", _doc_file(tmp_path, "big.json", json.dumps(arch_doc()) + " " * 2 ** 21)],
         "size"),
        ("training batch over the memory limit", ["retrain", str(EXAMPLE_ARCHS / "cifar10_routed.json"), "--dataset",
                                                  "fake", "--batch-size", "65536", "--out", out], "--batch-size"),
        ("--port out of range", ["search", "--engine", "ts", "--port", "70000", "--out", out], "--port"),
        ("negative --lr", ["retrain", ROUTED, "--lr", "-1", "--out", out], "--lr: must be a number in (0, 10]"),
        ("negative --weight-decay", ["retrain", ROUTED, "--weight-decay", "-1", "--out", out], "--weight-decay"),
        ("--batch-size 0", ["retrain", ROUTED, "--batch-size", "0", "--out", out], "--batch-size"),
        ("--epochs 0", ["search", "--epochs", "0", "--out", out], "--epochs"),
        ("--trials 0", ["search", "--trials", "0", "--out", out], "--trials"),
        ("--concurrency 0", ["search", "--concurrency", "0", "--out", out], "--concurrency"),
        ("negative GPU index", ["search", "--gpus", "-1", "--out", out], "--gpus"),
        ("--max-params 0", ["search", "--max-params", "0", "--out", out], "--max-params"),
        ("--max-latency-ms nan", ["search", "--max-latency-ms", "nan", "--out", out], "--max-latency-ms"),
        ("negative --seed", ["retrain", ROUTED, "--seed", "-1", "--out", out], "--seed"),
        ("--max-memory not a size", ["profile", ROUTED, "--max-memory", "lots"], "--max-memory"),
        ("corrupt image", ["retrain", digits, "--dataset", f"imagefolder:{corrupt}", "--out", out],
         f"image {corrupt / 'dog' / '2.png'} cannot be read"),
        ("image folder of a single class", ["retrain", digits, "--dataset", f"imagefolder:{single}", "--out", out],
         "single class ('cat')"),
        ("class with too few images", ["retrain", digits, "--dataset", f"imagefolder:{few}", "--out", out],
         "class 'dog'"),
        ("truncated CIFAR file", ["retrain", str(EXAMPLE_ARCHS / "cifar10_routed.json"), "--dataset", "cifar10",
                                  "--data-dir", str(_damaged_cifar(tmp_path / "damaged_cifar")), "--out", out],
         "data_batch_1 is truncated, damaged or of another version"),
        ("CIFAR of the binary version", ["retrain", str(EXAMPLE_ARCHS / "cifar10_routed.json"), "--dataset", "cifar10",
                                         "--data-dir", str(tmp_path / "binary_cifar"), "--out", out],
         "binary version"),
        ("space config with an enormous candidate", ["search", "--space-config", _doc_file(
            tmp_path, "s5.json", {"widths": [[4, 8], [8, 100_000]]}), "--out", out], "space config list 'widths[1]'"),
        ("space config whose largest architecture is too big", ["search", "--space-config", _doc_file(
            tmp_path, "s6.json", huge_space), "--out", out], "largest architecture of this space config"),
        ("malformed JSON", ["profile", _doc_file(tmp_path, "m.json", "{'format': mpn}")], "not valid JSON"),
        ("truncated JSON", ["retrain", _doc_file(tmp_path, "t.json", json.dumps(arch_doc())[:40]), "--out", out],
         "not valid JSON"),
        ("wrong format version", ["profile", _doc_file(tmp_path, "v.json", arch_doc(version=9))], "version"),
        ("unknown family", ["profile", _doc_file(tmp_path, "f.json", arch_doc(family="vit"))], "family"),
        ("unknown routing", ["profile", _doc_file(tmp_path, "r.json", arch_doc(stages=_stage(routing="x")))],
         "routing"),
        ("unknown dataset", ["retrain", ROUTED, "--dataset", "mnist", "--out", out], "unknown dataset"),
        ("unknown strategy", ["search", "--strategy", "hyperband", "--out", out], "unknown strategy"),
        ("density outside (0, 1]", ["profile", _doc_file(tmp_path, "d.json", arch_doc(stages=_stage(density=2)))],
         "density"),
        ("path count below 1", ["profile", _doc_file(tmp_path, "p.json", arch_doc(stages=_stage(paths=0)))],
         "paths"),
        ("width not positive", ["profile", _doc_file(tmp_path, "w.json", arch_doc(stages=_stage(width=0)))],
         "width"),
        ("budget below the smallest architecture", ["search", "--max-params", "50", "--out", out], "at least"),
        ("missing CIFAR files", ["retrain", str(EXAMPLE_ARCHS / "cifar10_routed.json"), "--dataset", "cifar10",
                                 "--data-dir", str(tmp_path / "nowhere"), "--out", out], "--download"),
        ("image folder without images", ["retrain", ROUTED, "--dataset", f"imagefolder:{empty_folder.parent}",
                                         "--out", out], "no images"),
        ("output directory not writable", ["retrain", ROUTED, "--out", str(a_file / "sub")], "not writable"),
        ("output directory holds another search", ["search", "--out", str(previous_search)], "already holds"),
        ("port already in use", ["search", "--engine", "ts", "--port", str(busy_port), "--out", out], "in use"),
        ("checkpoint that is not ours", ["retrain", ROUTED, "--out", str(foreign_checkpoint.parent), "--resume"],
         "not an mpn-nas"),
        ("model file that is not ours", ["show-routing", str(tmp_path / "foreign.pt"), "-o",
                                         str(tmp_path / "r.png")], "not an mpn-nas"),
        ("space config with bad candidates", ["search", "--space-config",
                                              _doc_file(tmp_path, "s.json", {"densities": [0, 1]}), "--out", out],
         "densities"),
        ("resume of a directory without a search", ["search", "--resume", str(tmp_path / "nothing")], "no search"),
    ]


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def test_every_bad_input_gets_one_line_and_status_2(tmp_path, capsys):
    from mpn_nas.cli import main

    listening, cases = _bad_input_cases(tmp_path)
    try:
        for case, argv, fragment in cases:  # in-process: same main() as the console script, much faster
            capsys.readouterr()
            status = main(argv)
            assert_clean_error(_Result(status, capsys.readouterr().err), 2, fragment)
    finally:
        listening.close()
    assert not (tmp_path / "out").exists()  # nothing written before validation passed


def test_bad_input_in_a_real_process_prints_no_traceback(tmp_path):
    result = run_cli("retrain", _doc_file(tmp_path, "t.json", '{"format": "mpn-nas/arch", "ver'), "--out",
                     str(tmp_path / "out"))
    assert_clean_error(result, 2, "not valid JSON")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "profile", _doc_file(tmp_path, "m.json", "{"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_diverging_training_raises_a_clear_error():
    from mpn_nas import Arch
    from mpn_nas.data import make_data
    from mpn_nas.training import NonFiniteLossError, TrainConfig, train

    arch = Arch.from_json(str(EXAMPLE_ARCHS / "digits_single.json"))
    data = make_data("digits")
    images, labels = data.train_set.dataset.tensors  # --lr is capped, so overflow the activations instead
    data.train_set.dataset.tensors = (images * float("inf"), labels)
    with pytest.raises(NonFiniteLossError, match="loss became"):
        train(arch, data, TrainConfig(epochs=2, lr=10.0, device="cpu"), progress=False, test=False)


def _search_settings(tmp_path, **changes):
    from mpn_nas.recipe import TrainConfig
    from search_spaces.budget import Budget
    from strategies.search import SearchSettings

    settings = dict(out=tmp_path / "search", space_config=str(tiny_space_config(tmp_path / "space.json")), trials=4,
                    training=TrainConfig(epochs=1), budget=Budget(max_params=12_000), quiet=True)
    return SearchSettings(**(settings | changes))


def _failing_train(real_train, errors):
    """``train`` that raises ``errors[i]`` on its i-th call (when not None) and trains otherwise."""
    calls = iter(errors)

    def train(*args, **kwargs):
        error = next(calls, None)
        if error is not None:
            raise error
        return real_train(*args, **kwargs)
    return train


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    import mpn_nas.training as training
    from mpn_nas.training import NonFiniteLossError, TrainConfig
    from strategies.search import run_search

    monkeypatch.setattr(training, "train", _failing_train(training.train, [
        RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), None, NonFiniteLossError("loss became nan"),
        ValueError("bad batch")]))
    summary = run_search(_search_settings(tmp_path, training=TrainConfig(epochs=1, seed=3)))
    rows = list(csv.DictReader(open(tmp_path / "search" / "trials.csv")))
    assert [r["status"] for r in rows] == ["failed", "succeeded", "failed", "failed"]
    assert rows[0]["reason"].startswith("out of memory") and rows[2]["reason"].startswith("non-finite loss")
    assert rows[3]["reason"] == "ValueError: bad batch"
    assert summary["trials_failed"] == 3 and summary["best"]["trial"] == 2


@pytest.mark.slow
def test_search_where_every_trial_fails_ends_with_an_error(tmp_path, monkeypatch):
    import mpn_nas.training as training
    from strategies.search import run_search

    monkeypatch.setattr(training, "train", _failing_train(training.train, [ValueError("boom")] * 2))
    with pytest.raises(RuntimeError, match="all 2 trials failed"):
        run_search(_search_settings(tmp_path, trials=2))
    assert not (tmp_path / "search" / "best_arch.json").exists()


@pytest.mark.slow
def test_ctrl_c_during_retrain_leaves_a_checkpoint_that_resumes_bit_identically(tmp_path):
    """The real signal path; which epochs a resume runs is checked in-process in test_retrain.py."""
    from mpn_nas.checkpoint import load_model

    base = ["retrain", str(EXAMPLE_ARCHS / "digits_single.json"), "--epochs", "4", "--batch-size", "16", "--device",
            "cpu", "--quiet"]
    straight = run_cli(*base, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "mpn_nas.cli", *base, "--out", str(out)], cwd=REPO,
                               preexec_fn=ctrl_c_answered,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "checkpoints" / "last.ckpt"
    try:
        poll_until(lambda: checkpoint.exists() or process.poll() is not None, timeout=300, interval=0.05)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=300)
    finally:
        stop_process(process)
    assert process.returncode == 130 and not (out / "metrics.json").exists()
    assert torch.load(checkpoint, weights_only=True)["epoch"] < 3  # really cut short
    resumed = run_cli(*base, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, expected = load_model(tmp_path / "straight" / "model.pt")
    _, got = load_model(out / "model.pt")
    expected_state, got_state = expected.state_dict(), got.state_dict()
    assert [name for name in expected_state if not torch.equal(expected_state[name], got_state[name])] == []
    expected_metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    got_metrics = json.loads((out / "metrics.json").read_text())
    assert (got_metrics["test_accuracy"], got_metrics["val_accuracy"]) == (expected_metrics["test_accuracy"],
                                                                           expected_metrics["val_accuracy"])


def test_image_folder_of_mixed_sizes_and_modes_loads(tmp_path):
    from mpn_nas.data import DataShape, make_data

    root = _image_folder(tmp_path / "mixed", {"cat": 5, "dog": 5}, modes=("RGB", "L", "RGBA", "P"))
    for channels in (1, 3):
        data = make_data(f"imagefolder:{root}", shape=DataShape(channels, 8, 2), batch_size=16)
        images, labels = next(iter(data.train_dataloader()))
        assert images.shape == (len(data.train_set), channels, 8, 8) and torch.isfinite(images).all()


def test_image_corrupted_mid_training_is_named_and_the_checkpoint_kept(tmp_path):
    import pytorch_lightning as pl

    from mpn_nas import Arch
    from mpn_nas.data import CorruptImageError, DataShape, make_data
    from mpn_nas.training import TrainConfig, check_resumable, train

    root = _image_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    victim = root / "cat" / "1.png"

    class CorruptAfterFirstEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                victim.write_bytes(victim.read_bytes()[:40])  # cut short after the files were checked

    arch = Arch.from_dict(dict(json.loads((EXAMPLE_ARCHS / "digits_single.json").read_text()), num_classes=2))
    data = make_data(f"imagefolder:{root}", shape=DataShape(1, 8, 2), batch_size=8)
    out = tmp_path / "run"
    with pytest.raises(CorruptImageError) as failed:
        train(arch, data, TrainConfig(epochs=3, device="cpu"), out_dir=out, callbacks=[CorruptAfterFirstEpoch()],
              progress=False, test=False)
    message = str(failed.value)
    assert "\n" not in message and str(victim) in message and "--resume" in message
    check_resumable(out / "checkpoints" / "last.ckpt", arch)  # the finished epoch can be continued
