"""The pre-processing every implementation computes, stated once.

A batch of uint8 HWC images, each of its own size, becomes one NCHW float
tensor: bilinear resize with OpenCV ``INTER_LINEAR`` pixel-centre semantics
(optionally: shorter side to ``resize`` then a centre crop), optional BGR->RGB,
``(pixel * scale - mean) / std`` per output channel, float32 or float16.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optiserve.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    out_h: int
    out_w: int
    crop: bool = False  # True: shorter side -> resize_short, then centre crop to (out_h, out_w)
    resize_short: int = 0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    bgr_to_rgb: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.out_h < 1 or self.out_w < 1:
            raise UsageError(f"pre-processing output size must be positive, got {self.out_h}x{self.out_w}")
        if self.crop and self.resize_short < max(self.out_h, self.out_w):
            raise UsageError(f"resize {self.resize_short} is smaller than the crop {self.out_h}x{self.out_w}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise UsageError("mean and std need three values each, std non-zero")
        if self.dtype not in ("float32", "float16"):
            raise UsageError(f"pre-processing dtype must be float32 or float16, got {self.dtype!r}")

    @classmethod
    def parse(cls, text: str) -> PreprocessSpec:
        """``image:resize=224[,crop=224][,mean=a/b/c][,std=a/b/c][,scale=x][,bgr][,fp16]``."""
        kind, _, body = text.partition(":")
        if kind != "image":
            raise UsageError(f"unknown pre-processing {kind!r}; valid: image")
        kw: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in body.split(","))):
            key, _, value = item.partition("=")
            kw[key] = value
        known = {"resize", "crop", "mean", "std", "scale", "bgr", "fp16", "src", "impl"}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise UsageError(f"unknown pre-processing key {unknown[0]!r}; valid: {', '.join(sorted(known))}")
        if "resize" not in kw:
            raise UsageError("pre-processing needs resize=N or resize=HxW")

        def size(v: str, what: str) -> tuple[int, int]:
            m = re.fullmatch(r"(\d+)(?:x(\d+))?", v)
            if not m:
                raise UsageError(f"malformed {what}={v!r}: expected N or HxW")
            return int(m.group(1)), int(m.group(2) or m.group(1))

        def triple(v: str, what: str) -> tuple[float, float, float]:
            try:
                vals = tuple(float(x) for x in v.split("/"))
            except ValueError:
                raise UsageError(f"malformed {what}={v!r}: expected three numbers a/b/c") from None
            if len(vals) != 3:
                raise UsageError(f"malformed {what}={v!r}: expected three numbers a/b/c")
            return vals

        rh, rw = size(kw["resize"], "resize")
        common = {
            "mean": triple(kw["mean"], "mean") if "mean" in kw else IMAGENET_MEAN,
            "std": triple(kw["std"], "std") if "std" in kw else IMAGENET_STD,
            "scale": float(kw["scale"]) if "scale" in kw else 1.0 / 255.0,
            "bgr_to_rgb": "bgr" in kw,
            "dtype": "float16" if "fp16" in kw else "float32",
        }
        if "crop" in kw:
            ch, cw = size(kw["crop"], "crop")
            if rh != rw:
                raise UsageError("with crop, resize is the shorter side: one number")
            return cls(ch, cw, crop=True, resize_short=rh, **common)  # type: ignore[arg-type]
        return cls(rh, rw, **common)  # type: ignore[arg-type]

    def geometry(self, h: int, w: int) -> tuple[float, float, int, int]:
        """(scale_y, scale_x, offset_y, offset_x) mapping output pixels to source pixels."""
        if not self.crop:
            return h / self.out_h, w / self.out_w, 0, 0
        r = self.resize_short
        rh, rw = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
        oy, ox = round((rh - self.out_h) / 2), round((rw - self.out_w) / 2)
        return h / rh, w / rw, int(oy), int(ox)

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Per *source* channel (a, b) with out = pixel * a + b, after any BGR swap."""
        a = np.array([self.scale / s for s in self.std], np.float32)
        b = np.array([-m / s for m, s in zip(self.mean, self.std, strict=True)], np.float32)
        if self.bgr_to_rgb:  # source channel c lands in output channel 2 - c
            a, b = a[::-1].copy(), b[::-1].copy()
        return a, b


def check_images(images: Sequence[np.ndarray]) -> None:
    """One-line errors for what no kernel can process."""
    if len(images) == 0:
        raise UsageError("pre-processing got an empty batch")
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray):
            raise UsageError(f"image {i} is a {type(img).__name__}, not a NumPy array")
        if img.dtype != np.uint8:
            raise UsageError(f"image {i} has dtype {img.dtype}; pre-processing takes uint8 HWC images")
        if img.ndim != 3 or img.shape[2] != 3:
            raise UsageError(f"image {i} has shape {img.shape}; pre-processing takes HxWx3 images")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise UsageError(f"image {i} is empty ({img.shape[0]}x{img.shape[1]})")


def source_coords(n_out: int, offset: int, scale: float, n_src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR taps along one axis: (index0, index1, weight of index1)."""
    f = (np.arange(n_out, dtype=np.float64) + offset + 0.5) * scale - 0.5
    i0 = np.floor(f).astype(np.int64)
    w = f - i0
    low = i0 < 0
    i0[low], w[low] = 0, 0.0
    high = i0 >= n_src - 1
    i0[high], w[high] = n_src - 1, 0.0
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, w


def effective_bytes(images: Sequence[np.ndarray], spec: PreprocessSpec) -> int:
    """Bytes a single pass must read (every source pixel) and write (the output)."""
    out_item = 2 if spec.dtype == "float16" else 4
    return sum(int(i.nbytes) for i in images) + len(images) * 3 * spec.out_h * spec.out_w * out_item


def batch_shape(n: int, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    return (n, 3, spec.out_h, spec.out_w)


@dataclass(frozen=True)
class PackedBatch:
    """What a GPU kernel needs to find each image in one flat byte buffer."""

    offsets: np.ndarray  # int64, byte offset of each image
    heights: np.ndarray  # int32
    widths: np.ndarray  # int32
    geom: np.ndarray  # float32 (n, 4): scale_y, scale_x, offset_y, offset_x
    total_bytes: int


def pack(images: Sequence[np.ndarray], spec: PreprocessSpec) -> PackedBatch:
    sizes = np.array([i.nbytes for i in images], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    geom = np.array([spec.geometry(i.shape[0], i.shape[1]) for i in images], np.float32).reshape(-1, 4)
    return PackedBatch(
        offsets=offsets,
        heights=np.array([i.shape[0] for i in images], np.int32),
        widths=np.array([i.shape[1] for i in images], np.int32),
        geom=geom,
        total_bytes=int(sizes.sum()),
    )


def copy_into(flat: np.ndarray, images: Sequence[np.ndarray], packed: PackedBatch) -> None:
    """Lay the images end to end in ``flat`` (a pinned host buffer on GPU paths)."""
    for img, off in zip(images, packed.offsets, strict=True):
        flat[int(off) : int(off) + img.nbytes] = np.ascontiguousarray(img).reshape(-1)
