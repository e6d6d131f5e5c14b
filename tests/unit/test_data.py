"""moesweep.data: CIFAR-10 reader, digits/synthetic splits, normalization, batched augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import CLASSES, write_mini_cifar10

from moesweep.config import ConfigError, DataCfg
from moesweep.data import (DatasetNotFoundError, augment_batch, eval_batches, load_data, read_cifar10,
                           train_batches)

# mini CIFAR: 5 batches x 20 = 100 training images, 30 test images
N_POOL, N_TEST = 100, 30


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_mini_cifar10(root, per_batch=N_POOL // 5, n_test=N_TEST)
    return root


def cifar(root, **kw) -> DataCfg:
    return DataCfg(name="cifar10", root=str(root), val_size=kw.pop("val_size", 10), **kw)


def raw_pixels(x: torch.Tensor, data) -> torch.Tensor:
    """Undo the normalization: back to the uint8 pixels that were stored on disk."""
    return (x * data.std[:, None, None] + data.mean[:, None, None]).round().to(torch.uint8)


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


# --- CIFAR-10 reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar_reader_accepts_bytes_and_str_keys(tmp_path, bytes_keys):
    directory = write_mini_cifar10(tmp_path, per_batch=4, n_test=6, bytes_keys=bytes_keys)
    train_x, train_y, test_x, test_y, names = read_cifar10(directory)
    assert train_x.shape == (20, 3, 32, 32) and train_x.dtype.name == "uint8"
    assert test_x.shape == (6, 3, 32, 32) and len(train_y) == 20 and len(test_y) == 6
    assert names == CLASSES


def test_cifar_splits_sizes_dtypes_and_disjointness(cifar_root):
    d = load_data(cifar(cifar_root))
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (N_POOL - 10, 10, N_TEST)
    assert d.train_x.shape[1:] == (3, 32, 32) and d.train_x.dtype == torch.float32
    assert d.train_y.dtype == torch.long and (d.num_classes, d.in_channels, d.image_size) == (10, 3, 32)
    assert d.class_names == CLASSES
    # train and val partition the 50,000-image pool (here 100): no image in both, none lost
    train, val = rows(raw_pixels(d.train_x, d)), rows(raw_pixels(d.val_x, d))
    pool_x = read_cifar10(cifar_root / "cifar-10-batches-py")[0]
    assert not train & val and train | val == rows(torch.from_numpy(pool_x))


def test_cifar_root_may_be_the_batches_dir_itself(cifar_root):
    a = load_data(cifar(cifar_root))
    b = load_data(cifar(cifar_root / "cifar-10-batches-py"))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


def test_cifar_val_size_fraction(cifar_root):
    d = load_data(cifar(cifar_root, val_size=0.2))
    assert (len(d.train_y), len(d.val_y)) == (80, 20)


def test_val_size_must_leave_training_images(cifar_root):
    with pytest.raises(ConfigError, match="data.val_size"):
        load_data(cifar(cifar_root, val_size=N_POOL))


def test_split_is_deterministic_and_follows_split_seed(cifar_root):
    a, b = load_data(cifar(cifar_root)), load_data(cifar(cifar_root))
    c = load_data(cifar(cifar_root, split_seed=1))
    for split in ("train_x", "val_x", "test_x", "train_y"):
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert rows(raw_pixels(a.val_x, a)) != rows(raw_pixels(c.val_x, c))


def test_subset_caps_each_split_with_prefixes_of_the_full_split(cifar_root):
    full = load_data(cifar(cifar_root))
    d = load_data(cifar(cifar_root, subset=15))
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (15, 10, 15)  # val (10) is under the cap
    # same images in the same order, only fewer (normalization stats differ, raw pixels do not)
    assert torch.equal(raw_pixels(d.test_x, d), raw_pixels(full.test_x, full)[:15])
    assert torch.equal(raw_pixels(d.train_x, d), raw_pixels(full.train_x, full)[:15])


def test_missing_cifar_raises_one_line_error_naming_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_data(cifar(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "\n" not in msg and "cifar-10-batches-py" in msg and "data.download: true" in msg
    assert isinstance(e.value, FileNotFoundError)


# --- digits and synthetic ------------------------------------------------------------------------


def test_digits_shapes_split_and_normalization():
    d = load_data(DataCfg(name="digits"))
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (1797 - 2 * 270, 270, 270)  # 70/15/15
    assert d.train_x.shape[1:] == (1, 8, 8) and (d.in_channels, d.image_size, d.num_classes) == (1, 8, 10)
    # normalized with the train split's own statistics
    assert abs(d.train_x.mean().item()) < 1e-5 and abs(d.train_x.std().item() - 1) < 1e-3
    assert 0 < d.mean.item() < 16  # raw digits pixels are 0..16
    assert set(d.train_y.tolist()) == set(range(10))


def test_digits_val_fraction_is_used():
    d = load_data(DataCfg(name="digits", val_size=0.1))
    assert len(d.val_y) == round(0.1 * 1797) and len(d.test_y) == 270


def test_synthetic_is_deterministic_and_learnable():
    cfg = DataCfg(name="synthetic", synthetic_size=64, synthetic_classes=4, synthetic_image_size=8)
    d, again = load_data(cfg), load_data(cfg)
    assert d.train_x.shape == (64, 3, 8, 8) and len(d.val_y) == len(d.test_y) == 64
    assert torch.equal(d.train_x, again.train_x) and torch.equal(d.test_y, again.test_y)
    # nearest class mean (fit on train) classifies test well: the classes carry signal
    means = torch.stack([d.train_x[d.train_y == k].mean(0) for k in range(4)]).flatten(1)
    pred = torch.cdist(d.test_x.flatten(1), means).argmin(1)
    assert (pred == d.test_y).float().mean() > 0.9


# --- augmentation and batches --------------------------------------------------------------------


def shifted_versions(x: torch.Tensor, p: int) -> torch.Tensor:
    """All (2p + 1)^2 zero-padded crops of every image: [B, (2p + 1)^2, C, H, W] (slow reference)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (p,) * 4)
    crops = [padded[..., i:i + h, j:j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    return torch.stack(crops, 1)


def test_augment_identity_when_disabled_and_preserves_shape_dtype_device():
    x = torch.randn(6, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, 0, False, g), x)
    out = augment_batch(x, 2, True, g)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert augment_batch(x.double(), 2, True, g).dtype == torch.float64


def test_augment_crops_are_shifts_with_zero_fill_and_vary():
    x = torch.randn(64, 2, 6, 6)
    out = augment_batch(x, 2, False, torch.Generator().manual_seed(0))
    match = (shifted_versions(x, 2) == out[:, None]).flatten(2).all(-1)  # [B, 25]
    assert match.any(1).all()  # every output is one of the 25 shifted copies of its own input
    offsets = match.float().argmax(1)
    assert len(offsets.unique()) > 5  # offsets differ across the batch
    assert (offsets != 12).any()  # index 12 = (2, 2) = no shift


def test_augment_flips_about_half():
    x = torch.randn(200, 1, 4, 4)
    out = augment_batch(x, 0, True, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and 60 < mirrored.sum() < 140


def test_augment_is_deterministic_for_a_generator_seed():
    x = torch.randn(16, 3, 8, 8)
    a = augment_batch(x, 2, True, torch.Generator().manual_seed(3))
    b = augment_batch(x, 2, True, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def synth():
    return load_data(DataCfg(name="synthetic", synthetic_size=50, synthetic_image_size=8))


def test_train_batches_cover_every_image_once_and_keep_last_partial(synth):
    cfg = DataCfg(name="synthetic", augment=False)
    batches = list(train_batches(synth, 16, torch.Generator().manual_seed(0), cfg))
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x = torch.cat([b[0] for b in batches])
    assert rows(x) == rows(synth.train_x) and len(x) == 50
    again = torch.cat([b[0] for b in train_batches(synth, 16, torch.Generator().manual_seed(0), cfg)])
    assert torch.equal(x, again)


def test_augmentation_reaches_training_batches_only(synth):
    cfg = DataCfg(name="synthetic", augment=True, crop_padding=2, flip=True)
    x = torch.cat([b[0] for b in train_batches(synth, 16, torch.Generator().manual_seed(0), cfg)])
    # every training image is some crop of a stored image, possibly mirrored...
    candidates = torch.cat([shifted_versions(synth.train_x, 2), shifted_versions(synth.train_x.flip(3), 2)], 1)
    candidates = candidates.flatten(0, 1).flatten(1)  # [50 * 50, C*H*W]
    assert (x.flatten(1)[:, None] == candidates[None]).all(-1).any(1).all()
    # ...but most are not the stored image itself
    assert len(rows(x) & rows(synth.train_x)) < 25
    # evaluation batches are exactly the stored tensors, in order (views, not copies)
    for split in ("val", "test", "train"):
        sx, sy = getattr(synth, f"{split}_x"), getattr(synth, f"{split}_y")
        batches = list(eval_batches(sx, sy, 16))
        assert torch.equal(torch.cat([b[0] for b in batches]), sx)
        assert torch.equal(torch.cat([b[1] for b in batches]), sy)
        assert batches[1][0].data_ptr() == sx[16].data_ptr()

