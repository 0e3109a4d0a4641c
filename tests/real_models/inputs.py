"""Realistic, seeded inputs for the real pretrained models shipped in PyPI wheels.

Each builder returns arrays keyed by the model's input names, the samples along
the model's own batch axis (axis 0, except silero VAD's ``state``: axis 1), and
0-d scalars (``sr``) as 0-d arrays: exactly what ``--inputs``/``--calibration``
files hold. Pre-processing follows each model's own package:

* PaddleOCR rec/cls (rapidocr): black text on white, resized to height 48 keeping
  the aspect ratio, ``(x/255 - 0.5)/0.5``, right-padded with zeros to the width, CHW.
* PaddleOCR det: a page with text blocks, ``(x/255 - mean)/std`` (ImageNet), CHW.
* ddddocr common_det: shapes and a few glyphs on a background, letterboxed onto
  416x416 with 114 padding, CHW float32 of the raw 0..255 pixels, as ddddocr's
  ``DetectionEngine.preproc`` feeds them (dividing by 255 flattens its objectness to ~0.02).
* silero VAD: 512-sample chunks at 16 kHz (sine mixes, modulated tones, noise,
  silence), a zero state ``[2, N, 128]``, ``sr`` = 16000.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

WORDS = (
    *("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "serving", "model", "latency", "budget"),
    *("cheap", "fast", "queue", "batch", "token", "price", "invoice", "total", "amount", "date", "2024"),
    *("ORDER", "No", "1234", "hello", "world", "PYTHON", "onnx", "runtime", "kernel", "region", "europe"),
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
VAD_RATE = 16000
VAD_CHUNK = 512


def _cv2():  # type: ignore[no-untyped-def]
    import cv2

    return cv2


def render_line(rng: np.random.Generator, words: int = 3) -> np.ndarray:
    """A uint8 HxWx3 image of random words in black on white, tightly cropped with a margin."""
    cv2 = _cv2()
    text = " ".join(rng.choice(WORDS, size=words))
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX]))
    scale = float(rng.uniform(0.9, 1.3))
    thick = int(rng.integers(1, 3))
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    pad = 6
    img = np.full((h + base + 2 * pad, w + 2 * pad, 3), 255, np.uint8)
    ink = int(rng.integers(0, 60))
    cv2.putText(img, text, (pad, pad + h), font, scale, (ink, ink, ink), thick, cv2.LINE_AA)
    return img


def paddle_norm(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """PaddleOCR's resize_norm_img: height fixed, aspect kept (capped at width), zero-padded, CHW float32."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    new_w = min(width, math.ceil(height * w / h))
    resized = cv2.resize(img, (new_w, height)).astype(np.float32)
    chw = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :new_w] = chw
    return out


def ocr_lines(n: int, seed: int, width: int, height: int = 48, flip_every: int = 0) -> dict[str, np.ndarray]:
    """``{"x": [n, 3, height, width]}`` text lines; with ``flip_every=k`` every k-th one is upside down."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img = render_line(rng, words=int(rng.integers(1, 4)) if width < 256 else int(rng.integers(2, 5)))
        if flip_every and i % flip_every == flip_every - 1:
            img = np.ascontiguousarray(img[::-1, ::-1])
        rows.append(paddle_norm(img, height, width))
    return {"x": np.stack(rows)}


def det_pages(n: int, seed: int, size: int = 96) -> dict[str, np.ndarray]:
    """``{"x": [n, 3, size, size]}`` pages with a few text blocks, ImageNet-normalised."""
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        page = np.full((size, size, 3), int(rng.integers(225, 256)), np.uint8)
        y = int(rng.integers(10, 20))
        while y < size - 6:
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3))))
            scale = float(rng.uniform(0.3, 0.45))
            x = int(rng.integers(2, 14))
            cv2.putText(page, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
            y += int(rng.integers(14, 24))
        f = page.astype(np.float32) / 255.0
        rows.append(((f - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
    return {"x": np.stack(rows).astype(np.float32)}


def det_text_mask(size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One page (normalised, [1, 3, size, size]) and a bool [size, size] mask of its ink."""
    cv2 = _cv2()
    page = np.full((size, size, 3), 255, np.uint8)
    cv2.putText(page, "hello world", (6, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    mask = page[:, :, 0] < 128
    f = page.astype(np.float32) / 255.0
    return ((f - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32), mask


def shapes(n: int, seed: int, size: int = 416) -> dict[str, np.ndarray]:
    """``{"images": [n, 3, 416, 416]}`` filled circles/rectangles and a few glyphs on a noisy
    background, letterboxed (the source is 4:3) onto 114 grey as ddddocr does; raw 0..255 values."""
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        h, w = 240, 320
        bg = rng.integers(150, 256, size=3)
        img = np.empty((h, w, 3), np.uint8)
        img[:] = bg
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, size=(h, w, 3)), 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            color = tuple(int(c) for c in rng.integers(0, 140, size=3))
            cx, cy = int(rng.integers(30, w - 30)), int(rng.integers(30, h - 30))
            r = int(rng.integers(10, 35))
            if rng.random() < 0.5:
                cv2.circle(img, (cx, cy), r, color, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r), color, -1)
        for _ in range(int(rng.integers(1, 4))):  # click-captcha style glyphs
            glyph = str(rng.choice(list("ABCDEFGHKMNPRSTXYZ")))
            at = (int(rng.integers(10, w - 50)), int(rng.integers(45, h - 10)))
            color = tuple(int(c) for c in rng.integers(0, 120, size=3))
            cv2.putText(img, glyph, at, cv2.FONT_HERSHEY_DUPLEX, float(rng.uniform(1.2, 1.8)), color, 3)
        scale = min(size / h, size / w)
        resized = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
        padded = np.full((size, size, 3), 114, np.uint8)
        padded[: resized.shape[0], : resized.shape[1]] = resized
        rows.append(padded.transpose(2, 0, 1).astype(np.float32))
    return {"images": np.stack(rows)}


def audio_chunks(n: int, seed: int, chunk: int = VAD_CHUNK) -> dict[str, np.ndarray]:
    """silero VAD feeds: ``input`` [n, chunk] float32 in [-1, 1], ``state`` zeros [2, n, 128]
    (samples on axis 1, the model's batch axis), ``sr`` a 0-d int64 16000.
    A mix of sine chords, amplitude-modulated 'voiced' tones with harmonics, noise and near silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(chunk) / VAD_RATE
    rows = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # a chord of 2-3 sines
            freqs = rng.uniform(150, 3000, size=int(rng.integers(2, 4)))
            x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs) / len(freqs)
        elif kind == 1:  # a voiced-like tone: f0 with harmonics, syllable-rate envelope
            f0 = rng.uniform(90, 250)
            x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
            x = x * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)))
        elif kind == 2:  # white noise
            x = rng.standard_normal(chunk)
        else:  # near silence
            x = 0.002 * rng.standard_normal(chunk)
        x = np.asarray(x, np.float64)
        peak = float(np.max(np.abs(x))) or 1.0
        rows.append((x / peak * rng.uniform(0.1, 0.8)).astype(np.float32))
    return {
        "input": np.stack(rows),
        "state": np.zeros((2, n, 128), np.float32),
        "sr": np.array(VAD_RATE, dtype=np.int64),
    }


BUILDERS = {
    "cls": lambda n, seed: ocr_lines(n, seed, width=192),
    "rec": lambda n, seed: ocr_lines(n, seed, width=320),
    "det": lambda n, seed: det_pages(n, seed, size=96),
    "vad": audio_chunks,
    "dddet": shapes,
}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def write_calib_and_eval(
    folder: Path, kind: str, n_calib: int = 16, n_eval: int = 32, calib_seed: int = 1, eval_seed: int = 2
) -> tuple[Path, Path]:
    """``folder/KIND-calib.npz`` and ``folder/KIND-eval.npz`` from different seeds; 32 eval samples,
    the profile's default ``--eval-samples``, so none is judged twice."""
    build = BUILDERS[kind]
    calib = write_npz(Path(folder) / f"{kind}-calib.npz", build(n_calib, calib_seed))
    ev = write_npz(Path(folder) / f"{kind}-eval.npz", build(n_eval, eval_seed))
    return calib, ev
