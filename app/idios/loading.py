"""The models a worker loads (IDIOS_MODELS), what each is doing, and the one a job asks for."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from idios import metrics
from idios.config import Settings
from idios.errors import NotFound, Unavailable
from idios.models import REGISTRY, EmbeddingModel, ModelUnavailable
from idios.store import SchemaMismatch, Store

log = logging.getLogger("idios.loading")

ModelStatus = dict[str, dict[str, str]]


class LoadedModels:
    """Loads the configured models, each with its collection, and hands them to jobs."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.models: dict[str, EmbeddingModel] = {}
        # {name: {"status": loading|ready|unavailable, "reason": why not ready}} for every configured model
        self.status: ModelStatus = {}
        for name in settings.models:
            self._set(name, "loading")
        # Collections that exist but do not fit their model: a worker refuses to start with them.
        self.schema_errors: list[str] = []

    def load_all(self) -> list[str]:
        """Load every configured model (blocking, in parallel: one slow download does not hold up
        the others); returns the names now ready."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.settings.models))) as pool:
            list(pool.map(self._load, self.settings.models))
        return list(self.models)

    def _load(self, name: str) -> None:
        if name not in REGISTRY:
            self._set(name, "unavailable", f"unknown model '{name}'")
            return
        model = REGISTRY[name](self.settings)
        try:
            model.load()
            self.store.ensure_collection(model.spec)
        except Exception as exc:
            # A refused schema and a missing model say why themselves; anything else also names its type.
            explained = isinstance(exc, SchemaMismatch | ModelUnavailable | Unavailable)
            reason = str(exc) if explained else f"{type(exc).__name__}: {exc}"
            log.error("model %s unavailable: %s", name, reason)
            if isinstance(exc, SchemaMismatch):
                self.schema_errors.append(reason)
            self._set(name, "unavailable", reason)
            return
        self.models[name] = model
        self._set(name, "ready")
        log.info("model %s ready", name)

    def _set(self, name: str, status: str, reason: str = "") -> None:
        self.status[name] = {"status": status, "reason": reason}
        metrics.set_model_status(name, status)

    def get(self, name: str | None) -> EmbeddingModel:
        """The loaded model; 404 for a name Idios does not know, 503 for one not ready here."""
        if name not in REGISTRY:
            raise NotFound(f"unknown model '{name}'", type="unknown_model")
        model = self.models.get(name)
        if model is None:
            state = self.status.get(name, {"status": "unavailable", "reason": "not loaded by this worker"})
            raise Unavailable(
                f"model {name} is {state['status']}: {state['reason'] or 'loading'}", type="model_unavailable"
            )
        return model
