"""Your own data, as a search reads it: PNG images in a folder per class, decoded with Pillow,
augmented (random resized crop, horizontal flip) and normalised, in a map-style ``Dataset``.

``make(root)`` is the factory an experiment names (``Classification("pngdata:make", ...)``): it
returns ``(train, validation)`` Datasets. The first call writes the example images into
``root`` (scikit-learn's digits, upscaled to 32x32, each training image twice with a small
random shift): about 3,200 PNG files. The inputs are crops resized to 16x16.

The transforms draw from torch's global random stream, which the trainer seeds for each item from
(shuffle seed, epoch, index): every trial sees the same augmented images, alone or merged, for
any number of loader workers. torchvision's transforms draw from the same stream, so they work
unchanged wherever torchvision is installed."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

SIZE = 32  # the stored images
CROP = 16  # the inputs the model sees
MEAN, STD = 0.3, 0.33  # of the training pixels, to normalise


class ImageFolder(Dataset):
    """``root/<class>/<name>.png``, classes numbered in sorted order; ``transform(image)`` makes
    the input tensor."""

    def __init__(self, root: str, transform) -> None:
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.files = [(os.path.join(root, c, f), label) for label, c in enumerate(self.classes)
                      for f in sorted(os.listdir(os.path.join(root, c))) if f.endswith(".png")]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index]
        with Image.open(path) as image:
            return self.transform(image.convert("L")), label


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A grey Pillow image as a 1 x H x W float tensor in [0, 1]."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(1, image.height, image.width).float() / 255


def random_resized_crop(x: torch.Tensor, size: int, scale=(0.6, 1.0)) -> torch.Tensor:
    """A random square crop covering ``scale`` of the area, resized to ``size``."""
    _, height, width = x.shape
    area = float(torch.empty(()).uniform_(*scale)) * height * width
    side = max(1, min(height, width, round(area ** 0.5)))
    top = int(torch.randint(0, height - side + 1, ()))
    left = int(torch.randint(0, width - side + 1, ()))
    crop = x[:, top:top + side, left:left + side]
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1) if torch.rand(()) < 0.5 else x


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN) / STD


def train_transform(image: Image.Image, crop: int = CROP) -> torch.Tensor:
    return normalise(random_flip(random_resized_crop(to_tensor(image), crop)))


def val_transform(image: Image.Image, crop: int = CROP) -> torch.Tensor:
    x = to_tensor(image)
    return normalise(F.interpolate(x[None], size=(crop, crop), mode="bilinear", align_corners=False)[0])


def make(root: str = "digits-png", size: int = SIZE, crop: int = CROP):
    """The factory: (train, validation) Datasets over the PNG folders (written on first use)."""
    if not os.path.isdir(root):
        write_images(root, size)
    return (ImageFolder(os.path.join(root, "train"), functools.partial(train_transform, crop=crop)),
            ImageFolder(os.path.join(root, "val"), functools.partial(val_transform, crop=crop)))


def write_images(root: str, size: int = SIZE, copies: int = 2) -> None:
    """scikit-learn's digits as 32x32 PNGs, 80% for training (each ``copies`` times, shifted) and
    20% for validation; written into a temporary folder and moved into place whole, so loader
    workers starting at once never see half a folder."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = torch.randperm(len(digits.images), generator=torch.Generator().manual_seed(0)).tolist()
    cut = int(0.8 * len(order))
    shifts = torch.Generator().manual_seed(1)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=parent, prefix=".writing-")
    for position, index in enumerate(order):
        split = "train" if position < cut else "val"
        pixels = (torch.tensor(digits.images[index]) * 255 / 16).to(torch.uint8)
        big = Image.fromarray(pixels.numpy()).resize((size, size), Image.BILINEAR)
        folder = os.path.join(scratch, split, str(digits.target[index]))
        os.makedirs(folder, exist_ok=True)
        for copy in range(copies if split == "train" else 1):
            dx, dy = (torch.randint(-2, 3, (2,), generator=shifts).tolist() if copy else (0, 0))
            moved = big.transform(big.size, Image.AFFINE, (1, 0, dx, 0, 1, dy))
            moved.save(os.path.join(folder, f"{index:04d}-{copy}.png"))
    try:
        os.rename(scratch, root)
    except OSError:  # another process wrote it first: keep theirs
        shutil.rmtree(scratch, ignore_errors=True)
