import torch

from mpn_nas.data import (CONTEXT_NOISE_STD, DATASETS, DIGIT_CONTEXTS, check_dataset_name, digits_tensors, make_data,
                          sample_contexts)


def _splits(data):
    return {"train": data.train_set, "val": data.val_set, "test": data.test_set}


def _tensors(subset):
    images = torch.stack([subset[i][0] for i in range(len(subset))])
    labels = torch.tensor([subset[i][1] for i in range(len(subset))])
    return images, labels, sample_contexts(subset)[0]


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = (make_data("digits-contexts", seed=s) for s in (3, 3, 4))
    for name in ("train", "val", "test"):
        a, b, c = (_tensors(_splits(d)[name]) for d in (first, again, other))
        for x, y in zip(a, b):
            assert torch.equal(x, y), name
        assert not torch.equal(a[0], c[0]), name


def test_every_context_in_every_split_in_equal_shares():
    data = make_data("digits-contexts", seed=0)
    assert (data.shape.in_channels, data.shape.input_size, data.shape.num_classes) == (1, 8, 10)
    sizes = []
    for name, subset in _splits(data).items():
        contexts, names = sample_contexts(subset)
        assert names == DIGIT_CONTEXTS
        counts = torch.bincount(contexts, minlength=len(DIGIT_CONTEXTS))
        assert (counts > 0).all(), (name, counts)
        assert counts.max() - counts.min() <= 0.1 * counts.float().mean(), (name, counts)  # balanced draw
        image, label = subset[0]
        assert image.shape == (1, 8, 8) and isinstance(int(label), int)
        sizes.append(len(subset))
    assert sum(sizes) == 1797


def test_each_image_is_the_digit_rendered_in_its_context():
    originals, original_labels = digits_tensors()
    data = make_data("digits-contexts", seed=1)
    subset = data.test_set
    images, labels, contexts = _tensors(subset)
    source = originals[torch.as_tensor(subset.indices)]
    assert torch.equal(labels, original_labels[torch.as_tensor(subset.indices)])
    expected = {
        "plain": source, "inverted": -source, "rotated": torch.rot90(source, 1, dims=(2, 3)),
    }
    for code, name in enumerate(DIGIT_CONTEXTS):
        chosen = contexts == code
        if name in expected:
            assert torch.equal(images[chosen], expected[name][chosen]), name
        else:  # mirrored, plus noise of the documented size
            residual = images[chosen] - torch.flip(source[chosen], dims=(3,)).clamp(-1, 1)
            unclipped = images[chosen].abs() < 1
            assert 0.5 * CONTEXT_NOISE_STD < residual[unclipped].std() < 1.5 * CONTEXT_NOISE_STD


def test_name_is_accepted_and_listed():
    assert "digits-contexts" in DATASETS
    check_dataset_name("digits-contexts")
    assert sample_contexts(make_data("digits", seed=0).test_set) is None
