"""Text embedders: an offline default and an OpenAI-compatible HTTP client.

Every embedder returns L2-normalised float32 rows and names the vectors it makes with a `ModelKey`
(model id, dimensions, version). The key is stored beside each vector, so changing any part of it makes
the backfill re-embed everything rather than mixing incomparable vectors in one index.

The default `HashingEmbedder` needs no download and no network: it hashes word unigrams and character
3-grams into a fixed number of buckets (the "hashing trick"). It is honest lexical similarity: good at
shared words, word forms and typos, blind to synonyms and meaning (see docs/memory.md).
"""

from __future__ import annotations

import math
import os
import re
import time
import unicodedata
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx
import numpy as np

from palyra_ops.errors import PalyraError
from palyra_ops.journal.memory import ModelKey


class Embedder(Protocol):
    """What the memory layer needs from an embedding model."""

    @property
    def key(self) -> ModelKey: ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised float32 row per text, shape (len(texts), key.dim)."""
        ...


def l2_normalise(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return mat / norms


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Signed feature hashing of word unigrams and character 3-grams, sublinear tf, L2-normalised.

    crc32 (not Python's `hash`, which is salted per process) keeps vectors identical across runs and
    machines, so stored vectors stay valid. The sign bit halves the bias that bucket collisions add
    to dot products. Words weigh more than 3-grams so an exact word match outranks a partial one,
    while the 3-grams still connect "deploy"/"deployment"/"depoly".
    """

    MODEL = "palyra-hashing-ngram"
    VERSION = "1"

    def __init__(self, dim: int = 384, *, word_weight: float = 1.0, trigram_weight: float = 0.5) -> None:
        if not 16 <= dim <= 8192:
            raise PalyraError(f"hashing embedder dimensions must be between 16 and 8192, got {dim}")
        self.dim = dim
        self.word_weight = word_weight
        self.trigram_weight = trigram_weight
        self._key = ModelKey(self.MODEL, dim, self.VERSION)
        self._cache: dict[str, tuple[int, float]] = {}

    @property
    def key(self) -> ModelKey:
        return self._key

    def _bucket(self, feature: str) -> tuple[int, float]:
        hit = self._cache.get(feature)
        if hit is None:
            h = zlib.crc32(feature.encode("utf-8"))
            hit = (h % self.dim, 1.0 if h & 0x80000000 else -1.0)
            if len(self._cache) < 200_000:
                self._cache[feature] = hit
        return hit

    def features(self, text: str) -> Counter[str]:
        norm = unicodedata.normalize("NFKC", text).casefold()
        words = _WORD.findall(norm)
        feats: Counter[str] = Counter()
        for w in words:
            feats["w:" + w] += 1
            padded = f" {w} "
            for i in range(len(padded) - 2):
                feats["c:" + padded[i : i + 3]] += 1
        if not feats:
            # punctuation-only text still deserves a stable, non-zero vector
            stripped = norm.strip() or norm
            padded = f" {stripped} "
            for i in range(max(1, len(padded) - 2)):
                feats["c:" + padded[i : i + 3]] += 1
        return feats

    def embed_one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for feat, tf in self.features(text).items():
            idx, sign = self._bucket(feat)
            weight = self.word_weight if feat[0] == "w" else self.trigram_weight
            vec[idx] += sign * weight * (1.0 + math.log(tf))
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # every feature cancelled out: fall back to an arbitrary fixed direction
            vec[0] = 1.0
            return vec
        return vec / norm

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self.embed_one(t)
        return out


class OpenAIEmbedder:
    """Client for an OpenAI-compatible `POST {base_url}/embeddings` endpoint.

    Works with OpenAI itself and with local servers speaking the same shape (vLLM, Ollama,
    llama.cpp, text-embeddings-inference). The API key is read from an environment variable at call
    time, never stored in the journal. 429 and 5xx responses are retried with backoff because
    backfill runs unattended; anything else is a configuration problem and fails fast.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        dim: int | None = None,
        version: str = "1",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 2,
        send_dimensions: bool = False,
        client: httpx.Client | None = None,
    ) -> None:
        if not model:
            raise PalyraError("openai embedder: model is required")
        if not base_url.startswith(("http://", "https://")):
            raise PalyraError(f"openai embedder: base_url must start with http:// or https://, got {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._dim = dim
        self.version = version
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.send_dimensions = send_dimensions
        self._client = client or httpx.Client(timeout=timeout_s)
        #: requests made, for tests and stats
        self.requests = 0

    @property
    def key(self) -> ModelKey:
        if self._dim is None:
            # The key must be known before anything is stored; ask the model once.
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return ModelKey(self.model, self._dim, self.version)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.key.dim), dtype=np.float32)
        mat = self._request(texts)
        if self._dim is None:
            self._dim = mat.shape[1]
        if mat.shape[1] != self._dim:
            raise PalyraError(
                f"embedding endpoint {self.base_url} returned {mat.shape[1]} dimensions for model "
                f"{self.model!r}, expected {self._dim}"
            )
        return mat

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _request(self, texts: list[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.send_dimensions and self._dim is not None:
            body["dimensions"] = self._dim
        url = f"{self.base_url}/embeddings"
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                resp = self._client.post(url, json=body, headers=self._headers(), timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                if attempt <= self.max_retries:
                    time.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                raise PalyraError(f"embedding endpoint {url} unreachable: {exc}") from exc
            if resp.status_code == 429 or resp.status_code >= 500:
                if attempt <= self.max_retries:
                    time.sleep(_retry_after(resp, 0.2 * 2**attempt))
                    continue
            if resp.status_code != 200:
                raise PalyraError(
                    f"embedding endpoint {url} answered HTTP {resp.status_code}: {_error_text(resp)}"
                )
            return self._parse(resp, len(texts), url)

    def _parse(self, resp: httpx.Response, n: int, url: str) -> np.ndarray:
        try:
            data = resp.json()["data"]
            rows = sorted(data, key=lambda d: d.get("index", 0))
            mat = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise PalyraError(f"embedding endpoint {url} returned an unexpected body: {exc}") from exc
        if mat.ndim != 2 or mat.shape[0] != n:
            raise PalyraError(f"embedding endpoint {url} returned {mat.shape[0] if mat.ndim else 0} vectors for {n} inputs")
        if not np.all(np.isfinite(mat)):
            raise PalyraError(f"embedding endpoint {url} returned non-finite values")
        return l2_normalise(mat)

    def close(self) -> None:
        self._client.close()


def _retry_after(resp: httpx.Response, default: float) -> float:
    try:
        return min(float(resp.headers.get("Retry-After", default)), 10.0)
    except ValueError:
        return default


def _error_text(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    except (ValueError, AttributeError):
        pass
    return resp.text[:300] or resp.reason_phrase


@dataclass(frozen=True)
class EmbedderSpec:
    """Configuration of an embedder, as written in the daemon config and remembered in the journal.

    The journal remembers the spec the daemon last used so `palyra-ops memory search` embeds the
    query with the same model as the index, without the user repeating the configuration.
    """

    kind: str = "hashing"  # hashing | openai
    dim: int | None = None
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    version: str = "1"
    timeout_s: float = 30.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderSpec:
        if not isinstance(data, dict):
            raise PalyraError("memory.embedder must be a mapping")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PalyraError(f"memory.embedder: unknown field(s) {', '.join(unknown)}")
        kind = data.get("kind", "hashing")
        if kind not in ("hashing", "openai"):
            raise PalyraError(f"memory.embedder.kind must be 'hashing' or 'openai', got {kind!r}")
        dim = data.get("dim")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
            raise PalyraError(f"memory.embedder.dim must be a positive integer, got {dim!r}")
        if kind == "openai":
            if not data.get("model") or not data.get("base_url"):
                raise PalyraError("memory.embedder: kind 'openai' needs model and base_url")
        timeout = data.get("timeout_s", 30.0)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise PalyraError(f"memory.embedder.timeout_s must be a positive number, got {timeout!r}")
        return cls(
            kind=kind,
            dim=dim,
            model=data.get("model"),
            base_url=data.get("base_url"),
            api_key_env=data.get("api_key_env", "OPENAI_API_KEY"),
            version=str(data.get("version", "1")),
            timeout_s=float(timeout),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build(self) -> Embedder:
        if self.kind == "hashing":
            return HashingEmbedder(self.dim or 384)
        return OpenAIEmbedder(
            model=self.model or "",
            base_url=self.base_url or "",
            dim=self.dim,
            version=self.version,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
        )


def default_embedder() -> Embedder:
    return HashingEmbedder()
