"""OpenCV's HOG people detector (Dalal–Triggs), computed with NumPy and OpenCV's filters.

OpenCV 5 wheels no longer carry ``cv2.HOGDescriptor``. This module computes the same descriptor as
OpenCV's default ``HOGDescriptor()`` — 64×128 window, 16×16 blocks on an 8 px grid, 8×8 cells, 9
unsigned orientation bins, square-root gamma, Gaussian block weighting (σ = 4) with bilinear votes
into the cells, L2-Hys normalisation — and scores it with OpenCV's default people SVM
(``getDefaultPeopleDetector()``, stored in data/hog_people_default.xml). Detection slides the window
in 8 px steps over an image padded by 8 px and a pyramid in 1.05 steps, then groups the hits like
``detectMultiScale`` (more than two overlapping windows make a person).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.algorithms.grouping import Detection, group_rectangles

PEOPLE_SVM = Path(__file__).with_name("data") / "hog_people_default.xml"

WINDOW_W, WINDOW_H = 64, 128
_BLOCK, _STEP, _CELL, _BINS = 16, 8, 8, 9
_PAD = 8  # OpenCV pads the image by one step so windows may start just outside it
_BLOCKS_X, _BLOCKS_Y = (WINDOW_W - _BLOCK) // _STEP + 1, (WINDOW_H - _BLOCK) // _STEP + 1  # 7 × 15
_L2HYS_CLIP = 0.2


@lru_cache(maxsize=1)
def _cell_kernels() -> tuple[NDArray[np.float32], ...]:
    """Per cell of a block (x-major: (0,0), (0,1), (1,0), (1,1)), the weight of each block pixel's vote:
    a Gaussian over the block times the bilinear share of that cell, as OpenCV's HOGCache sets them."""
    pos = np.arange(_BLOCK, dtype=np.float32)
    sigma = (_BLOCK + _BLOCK) / 8.0
    gauss = np.exp(-((pos[:, None] - _BLOCK / 2) ** 2 + (pos[None, :] - _BLOCK / 2) ** 2) / (2 * sigma * sigma))
    cell_pos = (pos + 0.5) / _CELL - 0.5  # pixel centre in cell units
    share = [np.maximum(0.0, 1.0 - np.abs(cell_pos - c)) for c in (0, 1)]  # tent: bilinear with clipping
    return tuple((gauss * share[cy][:, None] * share[cx][None, :]).astype(np.float32)
                 for cx in (0, 1) for cy in (0, 1))


@lru_cache(maxsize=1)
def _people_svm() -> tuple[NDArray[np.float32], float]:
    """SVM weights reshaped to (blocks x, blocks y, 36) — OpenCV orders blocks x-major — and the bias."""
    root = ElementTree.parse(PEOPLE_SVM).getroot()
    coefs = np.array((root.text or "").split(), dtype=np.float32)
    if coefs.size != _BLOCKS_X * _BLOCKS_Y * 4 * _BINS + 1:
        raise ValueError(f"{PEOPLE_SVM.name}: expected {_BLOCKS_X * _BLOCKS_Y * 4 * _BINS + 1} coefficients")
    weights = coefs[:-1].reshape(_BLOCKS_X, _BLOCKS_Y, 4 * _BINS)
    return weights, float(coefs[-1])


def _block_histograms(gray: NDArray[Any]) -> NDArray[np.float32]:
    """Normalised block histograms of the image padded by 8 px: (blocks down, blocks across, 36)."""
    # Gradients of the reflect-padded image, with one more pixel for the central differences.
    padded = cv2.copyMakeBorder(gray, _PAD + 1, _PAD + 1, _PAD + 1, _PAD + 1, cv2.BORDER_REFLECT_101)
    level = np.sqrt(padded.astype(np.float32))  # OpenCV's gamma correction
    dx = level[1:-1, 2:] - level[1:-1, :-2]
    dy = level[2:, 1:-1] - level[:-2, 1:-1]
    magnitude = np.sqrt(dx * dx + dy * dy)
    angle = np.mod(np.arctan2(dy, dx), 2 * np.pi) * (_BINS / np.pi) - 0.5
    low = np.floor(angle)
    upper_share = angle - low
    low_bin = np.mod(low.astype(np.int64), _BINS)
    high_bin = np.mod(low_bin + 1, _BINS)
    votes = np.zeros((*magnitude.shape, _BINS), np.float32)
    rows, cols = np.indices(magnitude.shape)
    votes[rows, cols, low_bin] += magnitude * (1 - upper_share)
    votes[rows, cols, high_bin] += magnitude * upper_share

    blocks_down = (votes.shape[0] - _BLOCK) // _STEP + 1
    blocks_across = (votes.shape[1] - _BLOCK) // _STEP + 1
    cells = []
    for kernel in _cell_kernels():
        summed = cv2.filter2D(votes, -1, kernel, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
        cells.append(summed[: blocks_down * _STEP: _STEP, : blocks_across * _STEP: _STEP])
    hist = np.concatenate(cells, axis=2)  # (down, across, 4 cells × 9 bins)

    size = hist.shape[2]
    hist = hist / (np.sqrt((hist * hist).sum(axis=2, keepdims=True)) + size * 0.1)
    hist = np.minimum(hist, _L2HYS_CLIP)
    hist = hist / (np.sqrt((hist * hist).sum(axis=2, keepdims=True)) + 1e-3)
    normalised: NDArray[np.float32] = hist.astype(np.float32)
    return normalised


def window_scores(gray: NDArray[Any]) -> NDArray[np.float32]:
    """SVM score of every window position (8 px grid, starting 8 px outside the image): rows × cols."""
    hist = _block_histograms(gray)
    weights, bias = _people_svm()
    rows = hist.shape[0] - _BLOCKS_Y + 1
    cols = hist.shape[1] - _BLOCKS_X + 1
    if rows <= 0 or cols <= 0:
        return np.zeros((0, 0), np.float32)
    scores = np.full((rows, cols), bias, np.float32)
    for bx in range(_BLOCKS_X):
        for by in range(_BLOCKS_Y):
            scores += hist[by: by + rows, bx: bx + cols] @ weights[bx, by]
    return scores


def detect_people(gray: NDArray[Any], *, hit_threshold: float = 0.0, scale_step: float = 1.05,
                  group_threshold: int = 2) -> list[Detection]:
    """People in a grey image, like ``HOGDescriptor.detectMultiScale`` with the default detector."""
    height, width = gray.shape[:2]
    hits: list[tuple[int, int, int, int]] = []
    scale = 1.0
    while round(width / scale) >= WINDOW_W and round(height / scale) >= WINDOW_H:
        size = (round(width / scale), round(height / scale))
        level = gray if scale == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR_EXACT)
        for row, col in zip(*np.nonzero(window_scores(level) >= hit_threshold), strict=True):
            x, y = int(col) * _STEP - _PAD, int(row) * _STEP - _PAD
            hits.append((round(x * scale), round(y * scale), round(WINDOW_W * scale), round(WINDOW_H * scale)))
        scale *= scale_step
    return group_rectangles(hits, group_threshold)

