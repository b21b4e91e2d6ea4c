"""Model loading options: int8 quantisation against float32, on real photos.

The weights are the seeded random ones (IDIOS_WEIGHTS=random): no pretrained weights can be
fetched where the tests run, so agreement is measured on the real architecture with random
values, which says how much quantisation moves vectors, not how well CLIP matches photos.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from idios.config import Settings
from idios.models import REGISTRY

from photos import PHOTO_NAMES, photo

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from idios.models.int8 import SelfAttention, release_memory, unfuse_attention  # noqa: E402


def _variants(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [
        image,
        ImageOps.mirror(image),
        image.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
        image.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
    ]


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [variant for name in PHOTO_NAMES for variant in _variants(photo(name))]


@pytest.fixture(scope="module")
def vit_b32_pair():
    models = {}
    for quantize in ("none", "int8"):
        model = REGISTRY["vit_b32"](Settings(weights="random", quantize=quantize))
        model.load()
        models[quantize] = model
    return models["none"], models["int8"]


def test_quantize_setting(monkeypatch) -> None:
    monkeypatch.delenv("IDIOS_QUANTIZE", raising=False)
    assert Settings().quantize == "int8"
    monkeypatch.setenv("IDIOS_QUANTIZE", "none")
    assert Settings().quantize == "none"
    with pytest.raises(ValueError):
        Settings(quantize="int4")


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_multihead_attention(batch_first: bool, causal: bool) -> None:
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(64, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 7, 64) if batch_first else torch.randn(7, 3, 64)
    mask = torch.full((7, 7), float("-inf")).triu(1) if causal else None
    with torch.inference_mode():
        expected = attention(x, x, x, need_weights=False, attn_mask=mask)[0]
        got, weights = SelfAttention(attention).eval()(x, x, x, need_weights=False, attn_mask=mask)
    assert weights is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    holder = torch.nn.Sequential(attention)
    assert unfuse_attention(holder) == 1 and isinstance(holder[0], SelfAttention)
    with pytest.raises(ValueError):
        holder[0](x, x.clone(), x)  # cross-attention is not what it computes


def test_int8_leaves_no_float_matrices(vit_b32_pair) -> None:
    fp32, int8 = vit_b32_pair
    modules = list(int8._model.modules())
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in modules)
    assert not any(type(m) in (torch.nn.Linear, torch.nn.Embedding) for m in modules)
    quantized = [m for m in modules if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantized) == 2 * 12 * 4  # two towers, 12 blocks, in/out projections and the MLP's two layers
    float_bytes = sum(p.numel() * p.element_size() for p in int8._model.parameters())
    assert float_bytes < sum(p.numel() * p.element_size() for p in fp32._model.parameters()) / 20
    release_memory()  # callable at any time


def test_int8_embeddings_agree_with_float32(vit_b32_pair, images) -> None:
    fp32, int8 = vit_b32_pair
    reference = np.array(fp32.embed_images(images))
    batched = np.array(int8.embed_images(images))
    assert batched.shape == reference.shape == (len(images), 512)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert (batched * reference).sum(axis=1).min() > 0.999
    # Activations are quantised per batch: alone, an image gets a vector very close to its batched one.
    alone = np.array(int8.embed_images(images[:1], urgent=True))[0]
    assert float(alone @ batched[0]) > 0.999

    # Retrieval: each image's five nearest neighbours mostly stay the same.
    def top(vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.argsort(-(vectors @ index.T), axis=1, kind="stable")[:, :5]

    pairs = zip(top(reference, reference), top(batched, batched), strict=True)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in pairs])
    assert overlap >= 0.9
    texts = ["a photo of a cat", "an astronaut", "a cup of coffee", "coins on a table"]
    text_cosines = (np.array(fp32.embed_texts(texts)) * np.array(int8.embed_texts(texts))).sum(axis=1)
    assert text_cosines.min() > 0.995
