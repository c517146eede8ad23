"""benchmarks/paper_table.py on anyone's data: an image folder end to end (table, JSON, plot, the
adaptive baselines and the searched row within the budget), data sets of the command line, bases
derived from the data's shape, and results of several data sets appended into one combined table."""
import importlib.util
import json
import subprocess
import sys

import pytest

from helpers import REPO, figure_pixels, png_size
from mpn_nas.data import DATASETS, DataShape

TOLERANCE = 0.05


def _load():
    spec = importlib.util.spec_from_file_location("paper_table", REPO / "benchmarks" / "paper_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_table"] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def _image_folder(root, classes=3, per_class=4, size=8):
    """A handful of small RGB PNG images per class, classes told apart by brightness."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = (rng.random((size, size, 3)) * 60 + label * 90).astype("uint8")
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "paper_table.py"), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_image_folder_end_to_end_with_adaptive_baselines_and_a_searched_row_in_budget(tmp_path):
    folder = _image_folder(tmp_path / "images")
    out = tmp_path / "results" / "table"
    result = _run("--datasets", f"imagefolder:{folder}", "--input-size", "8", "--in-channels", "1",
                  "--variants", "selective_kernel", "split_attention", "feature_dependent", "searched",
                  "--seeds", "2", "--epochs", "1", "--jobs", "1", "--device", "cpu", "--latency-rounds", "1",
                  "--search-trials", "2", "--search-epochs", "1", "--tolerance", str(TOLERANCE), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    name = f"imagefolder:{folder}"
    entry = json.loads(out.with_suffix(".json").read_text())["datasets"][name]
    summary, rows = entry["summary"], entry["summary"]["variants"]
    assert sorted({(r["variant"], r["seed"]) for r in entry["runs"]}) == sorted(
        (v, s) for v in ("selective_kernel", "split_attention", "feature_dependent", "searched")
        for s in (0, 1))
    assert len({r["split"] for r in entry["runs"] if r["seed"] == 0}) == 1  # one split for every variant of a seed
    assert summary["shape"] == "1×8×8, 3 classes"  # the folder's class count, the asked shape
    reference = rows["feature_dependent"]["params"]
    for variant in ("selective_kernel", "split_attention"):
        assert abs(rows[variant]["params"] - reference) <= TOLERANCE * reference, variant
        blocks = {stage.get("block") for stage in rows[variant]["arch"]["stages"]}
        assert blocks == {variant} and rows[variant]["arch"]["stages"][0]["paths"] == 1
    # The searched row: found by the search under the reference's budget, and that budget holds.
    assert rows["searched"]["params"] <= reference * (1 + TOLERANCE)
    search = summary["search"]
    assert search["budget"] == int(reference * (1 + TOLERANCE)) and search["minutes"] > 0
    (best_file,) = (tmp_path / "results" / "table_search").glob("*/search/best_arch.json")
    assert json.loads(best_file.read_text())["stages"] == rows["searched"]["arch"]["stages"]  # retrained as found
    for row in rows.values():  # mean, std and the 95% CI of two seeds
        assert len(row["accuracies"]) == 2 and row["ci95"] >= 0
    markdown = out.with_suffix(".md").read_text()
    assert f"### `{name}` (1×8×8, 3 classes)" in markdown and "95% CI" in markdown
    assert "selective-kernel blocks (SKNet)" in markdown and "split-attention blocks (ResNeSt)" in markdown
    assert f"budget {search['budget']:,} parameters" in markdown
    assert png_size(out.with_suffix(".png")) == figure_pixels(6 * 1, 4.5, 120)


def test_every_command_line_data_set_is_accepted_and_a_bad_name_is_refused(capsys):
    table = _load()
    for kind in DATASETS.values():
        name = kind.usage.replace("PATH", "/some/folder")
        assert table.parse_args(["--datasets", name]).datasets == [name]
    with pytest.raises(SystemExit) as exited:
        table.parse_args(["--datasets", "digits", "mnist"])
    assert exited.value.code == 2 and "unknown dataset 'mnist'" in capsys.readouterr().err


def test_base_follows_the_data_shape_and_matching_its_class_count():
    table = _load()
    small, large = table.base_for(DataShape(1, 8, 10)), table.base_for(DataShape(3, 32, 100))
    assert (small.in_channels, small.input_size, len(small.widths)) == (1, 8, 2)
    assert (large.in_channels, large.input_size, large.num_classes, len(large.widths)) == (3, 32, 100, 3)
    assert large.cpu_epochs < large.epochs  # CIFAR-sized bases run on CPU with fewer epochs by default
    few, many = (table.resnet_arch(table.base_for(DataShape(1, 8, classes)), paths=4, routing=table.REFERENCE)
                 for classes in (3, 50))
    target = table.param_count(many)
    assert target > table.param_count(few)  # the classifier grows with the classes, so does the target
    widened = table.matched_arch("widened", table.base_for(DataShape(1, 8, 50)), target, TOLERANCE)
    assert abs(table.param_count(widened) - target) <= TOLERANCE * target


def test_summary_has_the_t_interval_of_the_mean():
    table = _load()
    runs = [{"variant": v, "seed": s, "test_accuracy": a, "split": "x"}
            for v, accs in (("feature_dependent", (0.90, 0.92, 0.94)), ("widened", (0.91, 0.91, 0.91)))
            for s, a in enumerate(accs)]
    complexity = {v: {"params": 1, "flops": 1, "latency_ms": 1.0} for v in ("feature_dependent", "widened")}
    rows = table.summarise("digits", runs, complexity)["variants"]
    # t(0.975, 2) = 4.303; std 0.02 over 3 seeds
    assert rows["feature_dependent"]["ci95"] == pytest.approx(4.3027 * 0.02 / 3 ** 0.5, rel=1e-3)
    assert rows["widened"]["ci95"] == pytest.approx(0.0, abs=1e-12)
    assert rows["widened"]["vs_best_routed"]["mean"] == pytest.approx(-0.01)
    mixed = runs + [{"variant": "widened", "seed": 0, "test_accuracy": 0.5, "split": "other"}]
    with pytest.raises(RuntimeError, match="different splits"):
        table.summarise("digits", mixed, complexity)


@pytest.mark.slow
def test_data_sets_of_separate_runs_append_into_one_combined_table(tmp_path):
    table = _load()
    out = tmp_path / "table"
    common = ["--variants", "feature_dependent", "--seeds", "1", "--epochs", "1", "--jobs", "1",
              "--device", "cpu", "--latency-rounds", "1", "--input-size", "8", "--out", str(out)]
    for dataset in ("fake", "digits"):
        assert table.main(["--datasets", dataset, *common]) == 0
    markdown = out.with_suffix(".md").read_text()
    assert "| variant | `fake` | `digits` |" in markdown
    assert "### `fake` (3×8×8, 10 classes)" in markdown and "### `digits` (1×8×8, 10 classes)" in markdown
    assert set(json.loads(out.with_suffix(".json").read_text())["datasets"]) == {"fake", "digits"}
    assert png_size(out.with_suffix(".png")) == figure_pixels(6 * 2, 4.5, 120)
    assert table.main(["--datasets", "digits", *common, "--fresh"]) == 0
    assert set(json.loads(out.with_suffix(".json").read_text())["datasets"]) == {"digits"}


@pytest.mark.slow
def test_digits_folder_writes_an_image_folder_the_data_sets_read(tmp_path):
    spec = importlib.util.spec_from_file_location("digits_folder", REPO / "benchmarks" / "digits_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from mpn_nas.data import make_data

    assert module.write_folder(tmp_path / "digits", 12) == 1797
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == [str(d) for d in range(10)]
    data = make_data(f"imagefolder:{tmp_path / 'digits'}", shape=DataShape(1, 12, 0))
    assert data.shape == DataShape(1, 12, 10)
    image, label = data.train_set[0]
    assert image.shape == (1, 12, 12) and image.min() >= -1 and image.max() <= 1
    with pytest.raises(module.UserError, match="not empty"):
        module.write_folder(tmp_path / "digits", 12)


@pytest.mark.slow  # times three training steps of the CIFAR-sized reference
def test_cifar_sized_data_on_cpu_gets_fewer_epochs_and_a_time_warning(tmp_path, capsys):
    table = _load()
    args = table.parse_args(["--datasets", "fake", "--input-size", "32", "--seeds", "2", "--device", "cpu",
                             "--variants", "feature_dependent"])
    plan = table.plan_dataset("fake", args, ["feature_dependent"], "cpu", 1, tmp_path)
    assert plan["base"].widths == (16, 32, 64) and plan["epochs"] == plan["base"].cpu_epochs == 3
    assert "warning: fake on CPU: 2 trainings of 3 epochs each" in capsys.readouterr().err
    assert len(plan["splits"]) == 2  # one split per seed, made here and handed to the jobs
    explicit = table.plan_dataset("fake", table.parse_args(["--datasets", "fake", "--input-size", "32",
                                                           "--epochs", "7", "--seeds", "1"]),
                                  ["feature_dependent"], "cuda", 1, tmp_path)
    assert explicit["epochs"] == 7 and "warning" not in capsys.readouterr().err
