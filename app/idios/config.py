"""Configuration: every setting is an `IDIOS_*` environment variable (or `.env` entry)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_USER_AGENT = "Idios/0.1 (+https://github.com/idios/idios; reverse image search)"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Settings shared by `idios serve`, `idios api` and `idios worker`."""

    model_config = SettingsConfigDict(env_prefix="IDIOS_", env_file=".env", extra="ignore", populate_by_name=True)

    log_level: str = Field("INFO", description="Logging level.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or as one JSON object each (time, level, logger, message, request_id) "
        "for a log collector.",
    )

    # HTTP API
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(4213, description="Port the API listens on.")
    keep_alive: float = Field(
        75.0,
        gt=0,
        description="Seconds the API keeps an idle HTTP connection open. Longer than the idle expiry of the "
        "proxy in front (Traefik: 60 s) and of common clients, so none of them sends a request on a "
        "connection the API is closing.",
    )
    request_timeout: float = Field(30.0, gt=0, description="Seconds an interactive request may take before 504.")
    bulk_timeout: float = Field(600.0, gt=0, description="Seconds add_bulk, restore and dump requests may take.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API keys as 'read:<sha256>' or 'write:<sha256>' (comma separated; `idios hash-key` makes one). "
        "None: the API is open.",
    )
    api_keys_file: Path | None = Field(None, description="File with one 'scope:<sha256>' API key entry per line.")
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="Largest request body (413 beyond).")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names (the HTTP Host header, without port) the API answers, comma separated; "
        "'*.example.net' matches its subdomains, '*' accepts any. The loopback names (localhost, 127.0.0.1, "
        "[::1]) are always answered (health checks). Empty: only those when IDIOS_HOST is a loopback address, "
        "else any host. Other hosts get 400. Guards an instance on 127.0.0.1 against DNS rebinding; set it to "
        "the names clients use wherever the API listens on other addresses.",
    )
    max_bulk_items: int = Field(1000, gt=0, description="Most items in one add_bulk request.")
    max_restore_rows: int = Field(10000, gt=0, description="Most rows in one restore request.")
    max_bulk_queries: int = Field(100, gt=0, description="Most queries in one search_bulk request.")

    # Transport
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ connection URL.")
    amqp_url_file: Path | None = Field(None, description="File holding the RabbitMQ URL (a Docker secret, say).")
    allow_default_credentials: bool = Field(
        False,
        description="Allow guest/guest RabbitMQ and root:Milvus Milvus credentials on a non-loopback host "
        "(development only).",
    )
    queue_prefix: str = Field("idios", description="Prefix of every RabbitMQ queue name.")
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        gt=1024 * 1024,
        description="Largest message the broker accepts (RabbitMQ 4's max_message_size, 16 MiB by default; "
        "the shipped broker config sets the same). Jobs and answers are sized to fit under it.",
    )
    max_queued_jobs: int = Field(
        1000, gt=0, description="Ingestion jobs allowed to wait; beyond, add answers 503 with Retry-After."
    )
    prefetch: int = Field(32, gt=0, description="Ingestion jobs a worker holds at once.")
    interactive_prefetch: int = Field(8, gt=0, description="Interactive jobs a worker holds at once.")

    # Store
    milvus_uri: str = Field(
        "embedded",
        description="'embedded' (bundled Milvus server if installed, else Milvus Lite under data_dir), "
        "a Milvus Lite file path (*.db), or http://host:19530.",
    )
    milvus_token: str = Field("", description="Milvus token ('user:password'); empty when auth is off.")
    milvus_token_file: Path | None = Field(None, description="File holding the Milvus token.")
    milvus_consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = Field(
        "Session", description="Consistency level of similarity searches (counts and listings are always Strong)."
    )
    collection_prefix: str = Field("idios_", description="Prefix of each model's Milvus collection.")
    data_dir: Path = Field(Path("data"), description="Where the embedded Milvus keeps its files.")

    # Models
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["vit_b32", "phash"], description="Models this worker loads (comma separated)."
    )
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="'random' builds the real architectures with seeded random weights (tests, benchmarks).",
    )
    weights_dir: Path | None = Field(None, description="Directory holding model weights (else the usual caches).")
    batch_size: int = Field(16, gt=0, description="Most images embedded in one forward pass.")
    batch_linger_ms: float = Field(5.0, ge=0, description="How long a batch waits for more jobs to arrive.")
    model_threads: int = Field(
        0,
        ge=0,
        # The name it had when only torch ran the models is read too.
        validation_alias=AliasChoices("IDIOS_MODEL_THREADS", "IDIOS_TORCH_THREADS"),
        description="Cores the model's forward passes use in all (ONNX Runtime or torch); 0 uses every core. "
        "IDIOS_TORCH_THREADS, its former name, is read too.",
    )
    pass_threads: int = Field(
        1,
        ge=0,
        description="Threads of each forward pass; the model runs IDIOS_MODEL_THREADS / this many batches side by "
        "side. One thread per pass gives the most images/s on CPU; more make a single search's pass faster "
        "(doc/benchmarks.md). 0: one pass at a time on all of them.",
    )
    runtime: Literal["onnx", "torch"] = Field(
        "onnx",
        description="How the CLIP models run: 'onnx' exports them once to ONNX (into IDIOS_ONNX_DIR) and runs "
        "them with ONNX Runtime, without torch in the worker; 'torch' "
        "runs open_clip itself (the GPU's choice). ResNet-50 always runs on torch.",
    )
    onnx_dir: Path | None = Field(
        None,
        description="Where exported ONNX graphs are kept and shared between workers; default "
        "IDIOS_WEIGHTS_DIR/onnx, else ~/.cache/idios/onnx.",
    )
    quantize: Literal["none", "int8"] = Field(
        "int8",
        description="'int8' stores the CLIP models' matrix weights as 8-bit integers (dynamic quantisation, "
        "CPU): less memory and faster passes, embeddings close to float32's (doc/benchmarks.md). 'none' "
        "keeps float32 (the exact reference vectors). A GPU ignores it and "
        "follows IDIOS_GPU_PRECISION. ResNet-50 and phash are unaffected.",
    )
    gpu_precision: Literal["float16", "tf32", "float32"] = Field(
        "float16",
        description="How the CLIP models compute on a GPU (IDIOS_RUNTIME=torch): 'float16' casts the model "
        "to half precision, as OpenAI's own CLIP runs on a GPU; 'tf32' keeps float32 weights and lets "
        "matrix products round their inputs to TF32; 'float32' gives the exact reference vectors "
        "(figures: doc/benchmarks.md).",
    )

    # Image fetching
    url_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Networks (CIDR) image urls may point to despite the private-address guard."
    )
    max_download_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest image download.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to an image server.")
    download_timeout: float = Field(15.0, gt=0, description="Seconds for a whole image download.")
    max_redirects: int = Field(5, ge=0, description="Redirects followed per image url.")
    dns_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds to resolve an image url's host name; lookups run in their own small thread pool.",
    )
    min_image_side: int = Field(
        150,
        ge=1,
        description="Images with a shorter side are refused; copydetect takes them down to 32 px (a small crop or "
        "a thumbnail is a query it answers).",
    )
    max_image_pixels: int = Field(
        52_000_000,
        gt=0,
        description="Images declaring more pixels are refused (413). 52 Mpx accepts the full-resolution photos "
        "of 48 and 50 Mpx phone sensors (8064x6048, 8192x6144 = 50.3 Mpx) and 45 Mpx cameras; the models "
        "look at 224 px, so larger images (61 Mpx and medium-format cameras, 200 Mpx phone modes) only cost "
        "decoding time and memory: resize them first.",
    )
    max_jpeg_scans: int = Field(
        100,
        gt=0,
        description="JPEGs with more scans are refused (422) before decoding: every scan of a progressive JPEG "
        "is a pass over the whole image, and real ones have about 10.",
    )
    decode_budget_bytes: int = Field(
        1024 * 1024 * 1024,
        gt=0,
        description="Bytes of decoded images a worker holds at once, over all its decodes (each image's cost is "
        "estimated from its header: width x height x bytes per pixel of its mode, plus decoder buffers and the "
        "RGB result); further decodes wait their turn, and an image costing more than all of it is refused "
        "(413). doc/security.md says what the largest images cost.",
    )
    decode_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds one image's decode may take (once started) before its request fails (504). The "
        "decoding thread cannot be stopped: it runs on, and its share of IDIOS_DECODE_BUDGET_BYTES stays "
        "held, until the decoder finishes.",
    )
    decode_min_side: int = Field(
        224, ge=32, description="Large JPEGs are decoded at reduced scale while both sides stay above this."
    )
    max_image_side: int = Field(1000, gt=0, description="Images are shrunk to this longest side before embedding.")
    user_agent: str = Field(DEFAULT_USER_AGENT, description="User-Agent sent when fetching images.")

    # Worker
    health_port: int = Field(
        4214,
        description="Port of the worker's HTTP health check and its Prometheus metrics (`/metrics`; 0 disables "
        "both). Several workers on one host need one port each; a worker whose port is taken logs so and runs "
        "without a health check.",
    )
    health_host: str = Field(
        "127.0.0.1",
        description="Address the worker's health check listens on. It has no key: the container healthchecks "
        "ask from inside the container; set 0.0.0.0 only where a trusted network's monitor must reach it.",
    )

    @model_validator(mode="after")
    def _secret_files(self) -> Settings:
        if self.amqp_url_file is not None:
            self.amqp_url = Path(self.amqp_url_file).read_text().strip()
        if self.milvus_token_file is not None:
            self.milvus_token = Path(self.milvus_token_file).read_text().strip()
        return self

    @field_validator("models", "url_allow_networks", "api_keys", "allowed_hosts", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _some_key(cls, value: object) -> object:
        # Runs before _csv. Empty means unset (an open API); a value such as "," is a mistake, not "no key".
        if isinstance(value, str) and value.strip() and not _split_csv(value):
            raise ValueError("set, but holds no key entry ('read:<sha256>' or 'write:<sha256>')")
        return value

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("url_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value


def _loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_credential_problems(settings: Settings, *, broker: bool, milvus: bool) -> list[str]:
    """Well-known default credentials used against a non-loopback host; empty when none or allowed."""
    if settings.allow_default_credentials:
        return []
    problems = []
    if broker:
        url = urlsplit(settings.amqp_url)
        if (
            (url.username or "guest") == "guest"
            and (url.password or "guest") == "guest"
            and not _loopback(url.hostname)
        ):
            problems.append(f"RabbitMQ at {url.hostname} with guest/guest: set a user and password in IDIOS_AMQP_URL")
    if milvus and settings.milvus_token in ("root:Milvus",):
        host = urlsplit(settings.milvus_uri).hostname
        if settings.milvus_uri.startswith(("http://", "https://")) and not _loopback(host):
            problems.append(f"Milvus at {host} with root:Milvus: set another password in IDIOS_MILVUS_TOKEN")
    return problems
