"""Data sets as Lightning data modules: ``digits`` (bundled, the default), ``digits-contexts`` (the same
digits, each rendered in one hidden context), ``cifar10``, ``cifar100``, ``imagefolder:PATH`` and
``fake``. Nothing is downloaded unless ``download=True``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .datasets import DATASETS, DataShape, check_dataset_name, dataset_kind  # noqa: F401 (re-exported)
from .errors import UserError

MIN_IMAGES_PER_CLASS = 3  # image folders: one each for training, validation and test

# ``digits-contexts``: the context each image is rendered in, in the order of their integer codes.
DIGIT_CONTEXTS = ("plain", "inverted", "rotated", "mirrored-noisy")
# Standard deviation of the Gaussian noise of ``mirrored-noisy``, on the [-1, 1] pixel scale.
CONTEXT_NOISE_STD = 0.25


class CorruptImageError(UserError):
    """An image file that cannot be decoded; the message names the file."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker re-raises it in the main process as CorruptImageError(worker traceback
        # text): keep the original one-line message, its last line.
        lines = [line for line in str(message).splitlines() if line.strip()]
        if len(lines) > 1:
            message = lines[-1].split(": ", 1)[-1]
        super().__init__(message)


class ClassificationData(pl.LightningDataModule):
    """Train/validation/test splits of an image classification set with the loaders Lightning uses."""

    def __init__(self, name: str, shape: DataShape, train: Dataset, val: Dataset, test: Dataset,
                 batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        self.name, self.shape = name, shape
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


class ContextDataset(TensorDataset):
    """Images, labels, and the integer code of the context each image was rendered in.

    Items are ``(image, label)`` like any classification set; ``contexts`` (``(N,)``, codes into
    ``context_names``) is there for analysis only: the model is never told the context.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, contexts: torch.Tensor,
                 context_names: Sequence[str]) -> None:
        super().__init__(images, labels)
        self.contexts, self.context_names = contexts, tuple(context_names)


def sample_contexts(dataset: Dataset) -> Optional[tuple[torch.Tensor, tuple[str, ...]]]:
    """``(contexts, names)`` of every item of ``dataset`` (a :class:`ContextDataset` or a ``Subset``
    of one), or ``None`` when the data set has no contexts."""
    if isinstance(dataset, Subset):
        inner = sample_contexts(dataset.dataset)
        return None if inner is None else (inner[0][torch.as_tensor(dataset.indices)], inner[1])
    if isinstance(dataset, ContextDataset):
        return dataset.contexts, dataset.context_names
    return None


def _split_indices(labels: Sequence[int], fractions: tuple[float, float], seed: int) -> tuple[list, list, list]:
    """Stratified, seeded train/val/test indices; ``fractions`` are the val and test shares."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(labels)))
    val_share, test_share = fractions
    rest, test = train_test_split(indices, test_size=test_share, stratify=labels, random_state=seed)
    rest_labels = [labels[i] for i in rest]
    train, val = train_test_split(rest, test_size=val_share / (1 - test_share), stratify=rest_labels,
                                  random_state=seed)
    return train, val, test


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits: images ``(1797, 1, 8, 8)`` scaled to [-1, 1], labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return images, torch.tensor(bunch.target, dtype=torch.long)


def _digits(request: "DataRequest") -> ClassificationData:
    images, labels = digits_tensors()
    full = TensorDataset(images, labels)
    train, val, test = _split_indices(labels.tolist(), (0.15, 0.15), request.seed)
    return ClassificationData("digits", DataShape(1, 8, 10), Subset(full, train), Subset(full, val),
                              Subset(full, test), **request.loader_args)


def render_in_contexts(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each ``(N, 1, H, W)`` image in [-1, 1], rendered in one context drawn at random (seeded).

    Contexts (:data:`DIGIT_CONTEXTS`): ``plain``; ``inverted`` (dark digit on a light ground);
    ``rotated`` (a quarter turn anticlockwise); ``mirrored-noisy`` (left-right mirror plus Gaussian
    noise of standard deviation :data:`CONTEXT_NOISE_STD`, clipped to [-1, 1]). Every context gets
    an equal share of the images (up to one). Returns ``(rendered, contexts)``: ``(N, 1, H, W)``
    and ``(N,)`` context codes. The same seed gives the same tensors.
    """
    generator = torch.Generator().manual_seed(seed)
    count = images.shape[0]
    contexts = (torch.arange(count) % len(DIGIT_CONTEXTS))[torch.randperm(count, generator=generator)]
    noise = torch.randn(images.shape, generator=generator) * CONTEXT_NOISE_STD
    renderings = (
        images,
        -images,
        torch.rot90(images, 1, dims=(2, 3)),
        (torch.flip(images, dims=(3,)) + noise).clamp(-1.0, 1.0),
    )
    rendered = torch.stack(renderings)[contexts, torch.arange(count)]
    return rendered, contexts


def _digits_contexts(request: "DataRequest") -> ClassificationData:
    """Digits in hidden contexts; the split is stratified by class and context together, so every
    context is present in train, validation and test."""
    seed = request.seed
    images, labels = digits_tensors()
    rendered, contexts = render_in_contexts(images, seed)
    full = ContextDataset(rendered, labels, contexts, DIGIT_CONTEXTS)
    strata = (labels * len(DIGIT_CONTEXTS) + contexts).tolist()
    train, val, test = _split_indices(strata, (0.15, 0.15), seed)
    return ClassificationData("digits-contexts", DataShape(1, 8, 10), Subset(full, train), Subset(full, val),
                              Subset(full, test), **request.loader_args)


def _cifar(request: "DataRequest") -> ClassificationData:
    from torchvision import datasets, transforms

    name = request.name
    root = Path(request.data_dir or "./data").expanduser()
    download = request.download
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    normalise = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor(), normalise])
    plain = transforms.Compose([transforms.ToTensor(), normalise])
    try:
        train_aug = cls(str(root), train=True, transform=augment, download=download)
    except RuntimeError:
        raise UserError(_cifar_problem(cls, name, root)) from None
    except OSError as err:
        raise UserError(f"could not download {name} into {root} ({err}); download it elsewhere and pass "
                        "--data-dir") from None
    train_plain = cls(str(root), train=True, transform=plain)
    test = cls(str(root), train=False, transform=plain)
    from sklearn.model_selection import train_test_split

    # Validation: a tenth of the training images, stratified by class (the test set is CIFAR's own).
    train, val = train_test_split(list(range(len(train_aug))), test_size=0.1, stratify=train_aug.targets,
                                  random_state=request.seed)
    return ClassificationData(name, dataset_kind(name).shape, Subset(train_aug, train),
                              Subset(train_plain, val), test, **request.loader_args)


def _cifar_problem(cls, name: str, root: Path) -> str:
    """Why torchvision refused the CIFAR files under ``root``: absent, another version, or a damaged file."""
    from torchvision.datasets.utils import check_integrity

    folder = root / cls.base_folder
    if not folder.is_dir():
        binary = root / cls.base_folder.replace("-py", "-bin").replace("-python", "-binary")
        if binary.is_dir():
            return (f"{binary} holds the binary version of {name}; mpn-nas reads the python version "
                    f"({cls.filename}): pass --download, or unpack that archive under {root}")
        return (f"{name} files not found under {root}; pass --data-dir DIR pointing at them, "
                "or --download to fetch them")
    for filename, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        if not check_integrity(str(folder / filename), md5):
            state = "missing" if not (folder / filename).is_file() else "truncated, damaged or of another version"
            return (f"{name} file {folder / filename} is {state} (not the file torchvision expects); delete "
                    f"{folder} and pass --download, or unpack {cls.filename} there again")
    return f"torchvision could not read {name} under {root}; delete {folder} and pass --download"


def load_image(path: str):
    """ImageFolder's loader: the image as RGB, or a one-line :class:`CorruptImageError` naming the file."""
    from PIL import Image

    try:
        with open(path, "rb") as file:
            return Image.open(file).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"image {path} cannot be read ({str(err).splitlines()[0][:120]}); remove or "
                                "replace it") from None


def _check_images(samples: Sequence[tuple[str, int]]) -> None:
    """Refuse, naming the file, an image whose header or structure is broken (``verify``: cheap, no decoding).
    A file broken further in (e.g. a truncated JPEG) is reported by :func:`load_image` when it is read."""
    from PIL import Image

    for path, _ in samples:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise CorruptImageError(f"image {path} cannot be read ({str(err).splitlines()[0][:120]}); remove or "
                                    "replace it") from None


def _imagefolder(request: "DataRequest") -> ClassificationData:
    from torchvision import datasets, transforms

    shape = request.shape or DataShape(3, 32, 0)
    input_size, in_channels, seed = shape.input_size, shape.in_channels, request.seed
    root = Path(request.argument).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; pass imagefolder:PATH with one sub-folder per class")
    steps = [transforms.Resize((input_size, input_size))]
    if in_channels == 1:
        steps.append(transforms.Grayscale())
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * in_channels, [0.5] * in_channels)]
    try:
        full = datasets.ImageFolder(str(root), transform=transforms.Compose(steps), loader=load_image)
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"image folder {root} holds no images ({err}); it needs one sub-folder of images "
                        "per class") from None
    labels = list(full.targets)
    if len(full.classes) < 2:
        raise UserError(f"image folder {root} has a single class ({full.classes[0]!r}); it needs one sub-folder of "
                        "images per class, at least 2")
    for index, name in enumerate(full.classes):
        if labels.count(index) < MIN_IMAGES_PER_CLASS:
            raise UserError(f"class {name!r} of image folder {root} has {labels.count(index)} image(s); every class "
                            f"needs at least {MIN_IMAGES_PER_CLASS} (training, validation and test)")
    _check_images(full.samples)
    train, val, test = _round_robin_split(len(labels))
    if len(labels) >= 30:
        try:
            train, val, test = _split_indices(labels, (0.1, 0.1), seed)
        except ValueError:  # more classes than a 10% split has images: keep the round-robin split
            pass
    return ClassificationData(f"imagefolder:{root}", DataShape(in_channels, input_size, len(full.classes)),
                              Subset(full, train), Subset(full, val), Subset(full, test), **request.loader_args)


def _round_robin_split(count: int) -> tuple[list, list, list]:
    """Tiny sets: every third image to validation and test alike, the rest to training."""
    held_out = list(range(0, count, 3))
    train = [i for i in range(count) if i % 3]
    return train, held_out, held_out


def _fake(request: "DataRequest") -> ClassificationData:
    from torchvision import datasets, transforms

    shape, seed = request.shape or DataShape(3, 32, 10), request.seed

    def make(size: int, offset: int) -> Dataset:
        return datasets.FakeData(size, (shape.in_channels, shape.input_size, shape.input_size), shape.num_classes,
                                 transforms.ToTensor(), random_offset=seed * 1000 + offset)

    return ClassificationData("fake", shape, make(256, 0), make(64, 1), make(64, 2), **request.loader_args)


@dataclass(frozen=True)
class DataRequest:
    """What a loader of :data:`DATASETS` is asked for."""

    name: str  # as given, e.g. ``cifar10`` or ``imagefolder:PATH``
    argument: str = ""  # what follows ``name:`` (imagefolder's PATH); empty for the others
    data_dir: Optional[str] = None
    download: bool = False
    seed: int = 0
    shape: Optional[DataShape] = None  # for data sets whose shape is the caller's (imagefolder, fake)
    loader_args: dict = field(default_factory=dict)


def make_data(name: str, *, data_dir: Optional[str] = None, download: bool = False, seed: int = 0,
              batch_size: int = 64, shape: Optional[DataShape] = None, num_workers: int = 0,
              pin_memory: bool = False) -> ClassificationData:
    """The data module called ``name``. ``shape`` sets image size, channels and classes for
    ``imagefolder`` and ``fake``, whose shape is not fixed by the data set."""
    kind = dataset_kind(name)
    load = globals()[kind.loader]
    request = DataRequest(name, argument=name.partition(":")[2], data_dir=data_dir, download=download, seed=seed,
                          shape=shape, loader_args=dict(batch_size=batch_size, num_workers=num_workers,
                                                        pin_memory=pin_memory))
    return load(request)


def dataset_shape(name: str, data_dir: Optional[str] = None) -> DataShape:
    """The shape of data set ``name``; fails early on unknown names and missing files."""
    kind = dataset_kind(name)
    if kind.bundled and kind.shape is not None:  # nothing to check on disk
        return kind.shape
    return make_data(name, data_dir=data_dir, shape=DataShape(3, 32, 10)).shape
