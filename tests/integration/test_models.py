"""Model loading options: int8 quantisation and the ONNX runtime against float32, on real photos.

The weights are the seeded random ones (IDIOS_WEIGHTS=random): no pretrained weights can be
fetched where the tests run, so agreement is measured on the real architecture with random
values, which says how much quantisation moves vectors, not how well CLIP matches photos.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from idios.config import Settings
from idios.models import REGISTRY

from tests.support.photos import PHOTO_NAMES, photo

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from idios.heap import release_memory  # noqa: E402
from idios.models.int8 import SelfAttention, unfuse_attention  # noqa: E402


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
        model = REGISTRY["vit_b32"](Settings(weights="random", runtime="torch", quantize=quantize))
        model.load()
        models[quantize] = model
    return models["none"], models["int8"]


@pytest.mark.parametrize(
    ("field", "default", "other", "bad"),
    [("quantize", "int8", "none", "int4"), ("gpu_precision", "float16", "tf32", "bfloat8")],
)
def test_precision_settings(monkeypatch, field: str, default: str, other: str, bad: str) -> None:
    variable = f"IDIOS_{field.upper()}"
    monkeypatch.delenv(variable, raising=False)
    assert getattr(Settings(), field) == default
    monkeypatch.setenv(variable, other)
    assert getattr(Settings(), field) == other
    with pytest.raises(ValueError):
        Settings(**{field: bad})


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


def assert_agrees(fp32, model, images) -> None:
    """`model`'s vectors are float32's to cosine 0.999 (texts 0.995), and keep the neighbours."""
    reference = np.array(fp32.embed_images(images))
    batched = np.array(model.embed_images(images))
    assert batched.shape == reference.shape == (len(images), 512)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert (batched * reference).sum(axis=1).min() > 0.999
    # Activations are quantised per batch: alone, an image gets a vector very close to its batched one.
    alone = np.array(model.embed_images(images[:1], interactive=True))[0]
    assert float(alone @ batched[0]) > 0.999

    # Retrieval: each image's five nearest neighbours mostly stay the same.
    def top(vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.argsort(-(vectors @ index.T), axis=1, kind="stable")[:, :5]

    pairs = zip(top(reference, reference), top(batched, batched), strict=True)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in pairs])
    assert overlap >= 0.9
    texts = ["a photo of a cat", "an astronaut", "a cup of coffee", "coins on a table"]
    text_cosines = (np.array(fp32.embed_texts(texts)) * np.array(model.embed_texts(texts))).sum(axis=1)
    assert text_cosines.min() > 0.995


def test_int8_embeddings_agree_with_float32(vit_b32_pair, images) -> None:
    fp32, int8 = vit_b32_pair
    assert_agrees(fp32, int8, images)


# ONNX Runtime (IDIOS_RUNTIME=onnx, the default)


@pytest.fixture(scope="module")
def onnx_int8():
    model = REGISTRY["vit_b32"](Settings(weights="random", runtime="onnx", quantize="int8"))
    model.load()
    return model


def test_runtime_setting(monkeypatch) -> None:
    monkeypatch.delenv("IDIOS_RUNTIME", raising=False)
    assert Settings().runtime == "onnx"
    with pytest.raises(ValueError):
        Settings(runtime="tensorflow")


def test_gpu_precision_leaves_cpu_models_alone(vit_b32_pair, images) -> None:
    """IDIOS_GPU_PRECISION is for GPUs: a CPU worker with float16 set still computes float32's vectors."""
    fp32, _ = vit_b32_pair
    model = REGISTRY["vit_b32"](Settings(weights="random", runtime="torch", quantize="none", gpu_precision="float16"))
    model.load()
    expected, got = np.stack(fp32.embed_images(images[:4])), np.stack(model.embed_images(images[:4]))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_onnx_int8_agrees_with_torch_float32(vit_b32_pair, onnx_int8, images) -> None:
    fp32, _ = vit_b32_pair
    assert_agrees(fp32, onnx_int8, images)


def test_passes_side_by_side_give_the_same_vectors(images) -> None:
    """Bulk batches run their forward passes at once on one session (IDIOS_PASS_THREADS=1, a pass
    per core): each batch still gets exactly its own vectors."""
    from concurrent.futures import ThreadPoolExecutor

    model = REGISTRY["vit_b32"](Settings(weights="random", runtime="onnx", quantize="int8", model_threads=2))
    model.load()
    assert model.pass_slots.parallel == 2
    batches = [images[i : i + 4] for i in range(0, 16, 4)]
    alone = [np.array(model.embed_images(batch)) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda batch: np.array(model.embed_images(batch)), batches * 3))
    for index, vectors in enumerate(together):
        np.testing.assert_allclose(vectors, alone[index % len(batches)], atol=1e-6)


def test_clip_inputs_are_open_clips(images) -> None:
    """The torch-free pixels and tokens are exactly what open_clip's transform and tokenizer give."""
    import open_clip

    from idios.models.clip_inputs import ClipTokenizer, pixels

    transform = open_clip.image_transform(224, is_train=False)
    odd = [images[0].resize((1001, 333)), images[1].resize((224, 224)), images[2].resize((225, 700))]
    for batch in (images[:8], odd):
        expected = torch.stack([transform(image) for image in batch]).numpy()
        np.testing.assert_array_equal(pixels(batch, 224), expected)
    texts = [
        "a photo of a cat",
        "A DOG on the   beach!!",
        "Ça coûte 12,50 € — naïve café",
        "日本語のテキスト",
        "emoji 🐱🐶 and it's what we'll've done",
        "&amp;lt;b&amp;gt; html entities",
        "<start_of_text> special tokens inside <end_of_text>",
        "",
        "x" * 300,
        " ".join(["word"] * 100),
        "numbers 1234567 and 3.14159, snake_case/kebab-case.jpg",
        "tab\tnew\nline e\u0301",
    ]
    np.testing.assert_array_equal(ClipTokenizer()(texts), open_clip.get_tokenizer("ViT-B-32")(texts).numpy())


def test_onnx_graphs_are_exported_once_per_key(onnx_int8) -> None:
    from idios.models.onnx import graph_dir

    settings = Settings(weights="random", runtime="onnx", quantize="int8")
    directory = graph_dir(settings, "vit_b32", "random")
    stamps = {path.name: path.stat().st_mtime_ns for path in directory.glob("*.onnx")}
    assert set(stamps) == {"image.onnx", "text.onnx"}
    again = REGISTRY["vit_b32"](settings)
    again.load()  # from the files: nothing exported again
    assert {path.name: path.stat().st_mtime_ns for path in directory.glob("*.onnx")} == stamps
    # Whatever the graphs are built from is part of their key.
    assert graph_dir(Settings(weights="random", quantize="none"), "vit_b32", "random") != directory
    assert graph_dir(settings, "vit_b32", "file:/w/vit_b32.pt:1:2") != directory
    assert graph_dir(settings, "vit_l14", "random") != directory


def test_onnx_worker_process_never_imports_torch(onnx_int8) -> None:
    """What keeps a worker small: loading and running the model leaves torch out of the process."""
    code = (
        "import sys; from idios.config import Settings; from idios.models import REGISTRY; from PIL import Image;"
        "m = REGISTRY['vit_b32'](Settings(weights='random')); m.load();"
        "m.embed_images([Image.new('RGB', (300, 200), 'red')]); m.embed_texts(['red']);"
        "print(sorted(name for name in ('torch', 'torchvision', 'open_clip') if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_damaged_onnx_graph_is_removed_and_reported(onnx_int8, tmp_path) -> None:
    from idios.models.base import ModelUnavailable
    from idios.models.onnx import graph_dir

    settings = Settings(weights="random", runtime="onnx", quantize="int8")
    copy = Settings(weights="random", runtime="onnx", quantize="int8", onnx_dir=tmp_path)
    source, target = graph_dir(settings, "vit_b32", "random"), graph_dir(copy, "vit_b32", "random")
    shutil.copytree(source, target)
    (target / "image.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelUnavailable, match="cannot load the ONNX graphs"):
        REGISTRY["vit_b32"](copy).load()
    assert not (target / "image.onnx").exists()  # the next start exports it again


def test_failed_export_makes_the_model_unavailable_with_the_reason(tmp_path, monkeypatch) -> None:
    from idios.models.base import ModelUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "vit_b32.pt").write_bytes(b"not a checkpoint")
    settings = Settings(weights="pretrained", weights_dir=weights, onnx_dir=tmp_path / "onnx")
    with pytest.raises(ModelUnavailable, match=r"exporting vit_b32 to ONNX failed.*vit_b32\.pt"):
        REGISTRY["vit_b32"](settings).load()
    assert [path.name for path in (tmp_path / "onnx").iterdir()] == [".vit_b32.lock"]  # no half-written graphs
