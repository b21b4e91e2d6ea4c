"""CLIP's inputs as numpy arrays: image pixels and text tokens, without torch.

The ONNX Runtime path keeps torch out of the worker process (importing it is most of a worker's
memory), and open_clip's preprocessing (torchvision transforms) and tokenizer module both import
it. These build the same arrays; `tests/integration/test_models.py` checks them against open_clip's own.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

# open_clip's OPENAI_DATASET_MEAN / _STD: the normalisation every OpenAI CLIP model was trained with.
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def pixels(images: list[Image], size: int) -> np.ndarray:
    """A float32 batch (n, 3, size, size), as open_clip's eval transform makes it: bicubic resize of
    the short side to `size` (torchvision's rounding), centre crop, scale to 0-1, normalise."""
    from PIL import Image as PILImage

    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        width, height = image.size
        short, long = min(width, height), max(width, height)
        scaled = int(size * long / short)
        target = (size, scaled) if width <= height else (scaled, size)
        resized = image if image.size == target else image.resize(target, PILImage.Resampling.BICUBIC)
        left = round((target[0] - size) / 2.0)
        top = round((target[1] - size) / 2.0)
        cropped = resized.crop((left, top, left + size, top + size)).convert("RGB")
        batch[i] = np.asarray(cropped, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (batch - MEAN) / STD


class ClipTokenizer:
    """OpenAI CLIP's byte-level BPE (open_clip's `SimpleTokenizer`, context length 77), on the
    `tokenizers` library, with open_clip's own vocabulary file and text cleaning."""

    CONTEXT = 77
    START, END = "<start_of_text>", "<end_of_text>"
    # open_clip's word pattern, its special tokens first.
    PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

    def __init__(self) -> None:
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers
        from tokenizers.pre_tokenizers import ByteLevel

        merges = [_merge_pair(line) for line in _bpe_lines()[1 : 49152 - 256 - 2 + 1]]
        byte_symbols = list(_BYTE_TO_UNICODE.values())  # open_clip's order: printable bytes first
        vocab = byte_symbols + [symbol + "</w>" for symbol in byte_symbols]
        vocab += ["".join(merge) for merge in merges] + [self.START, self.END]
        bpe = models.BPE(
            vocab={token: i for i, token in enumerate(vocab)},
            merges=merges,
            end_of_word_suffix="</w>",
            continuing_subword_prefix="",
        )
        tokenizer = Tokenizer(bpe)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(self.PATTERN), behavior="removed", invert=True),
                ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.add_special_tokens([self.START, self.END])
        self._tokenizer = tokenizer
        self._start, self._end = len(vocab) - 2, len(vocab) - 1

    def __call__(self, texts: list[str]) -> np.ndarray:
        """int64 token ids (n, 77): start, the text's tokens, end, zeros; long texts are cut and end with `end`."""
        import ftfy

        tokens = np.zeros((len(texts), self.CONTEXT), dtype=np.int64)
        for i, text in enumerate(texts):
            cleaned = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split()).lower()
            ids = [self._start, *self._tokenizer.encode(cleaned).ids, self._end]
            if len(ids) > self.CONTEXT:
                ids = ids[: self.CONTEXT]
                ids[-1] = self._end
            tokens[i, : len(ids)] = ids
        return tokens


def _merge_pair(line: str) -> tuple[str, str]:
    """One line of the merges file: the two symbols it joins."""
    first, second = line.split()
    return first, second


def _bpe_lines() -> list[str]:
    """The merges file open_clip ships, found without importing open_clip (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package open_clip_torch is not installed; it ships CLIP's vocabulary")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path) as merges:
        return merges.read().decode("utf-8").split("\n")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of bytes to printable characters, which CLIP's vocabulary is spelled in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {
        **{b: chr(b) for b in printable},
        **{b: chr(256 + n) for n, b in enumerate(others)},
    }


_BYTE_TO_UNICODE = _byte_to_unicode()
