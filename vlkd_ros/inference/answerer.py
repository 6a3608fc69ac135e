"""Answering "is X graspable?": observations -> the student's image features (`embed`, the costly half) -> each
name's score, decision and location (`answer`), numpy only. A name is scored with its prompts' text features
(cached per prompt, encoded by the model dir's ONNX text tower) or, once learnt from shots, with its query vector
and its own scale, bias and threshold. What it reads of the model is one immutable `Serving` snapshot."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vlkd_formats.object_registry import ObjectEntry, ObjectRegistry, normalize_name
from vlkd_runtime.grasp_dir import ServedModelDir
from vlkd_runtime.scoring import sigmoid
from vlkd_runtime.text import OnnxTextEncoder, prompt_texts

NAME_CACHE_SIZE = 4096  # (name, description) -> prompt features kept for answers; cleared when full


@dataclass(frozen=True)
class Serving:
    """What one query reads: version, registry, the image encoder of its weights, the query vectors of objects
    learnt from shots (name -> (D,) float32), and the registry's entries by name."""

    version: str
    registry: ObjectRegistry
    encoder: Callable[[np.ndarray], np.ndarray]
    queries: dict[str, np.ndarray]
    entries: dict[str, ObjectEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", {o.name: o for o in self.registry.objects})


@dataclass(frozen=True, eq=False)
class Embedding:
    """What `embed` returns and `answer` reads: the student's image features of some observations ((B, D) global, or
    (B, 1 + L, D) dense) and the serving snapshot that computed them; opaque to callers but for `model_version` and
    `len()`. `answers` memoises what `answer` computed per prompt: a later question about the same name on these
    features is a lookup."""

    features: np.ndarray
    serving: Serving
    owner: Any
    answers: dict = field(default_factory=dict)  # prompt key -> (scores per observation, locations | None)

    @property
    def model_version(self) -> str:
        """Version of the weights that computed these features."""
        return self.serving.version

    def __len__(self) -> int:
        return len(self.features)


class Answerer:
    """Scores names on image features with the model's scorer, prompts and threshold; `pending` gives the entries of
    new names a job is learning (answered zero-shot with their description meanwhile). The trained labels' prompt
    features come from the model dir (the teacher's); `text()` makes the encoder of any other prompt, once one is
    asked for."""

    def __init__(self, model: ServedModelDir, text: Callable[[], OnnxTextEncoder],
                 pending: Callable[[], Mapping[str, ObjectEntry]]):
        self.transform = model.transform()
        self.scorer = model.scorer()
        self.threshold = float(model.grasp.threshold)
        self.prompts = model.grasp.prompts()
        self._make_text, self._text, self._pending = text, None, pending
        self._text_cache: dict[str, np.ndarray] = {_join(t): f for t, f in model.label_features().items()}
        self._name_cache: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray | None]] = {}
        self._text_lock = threading.Lock()

    def prepare(self, images: Any) -> np.ndarray:
        """Validate and transform one observation or a list of them into (B, C, S, S) float32."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("no images given: pass an HxWx3 uint8 array, a dict of views, or a non-empty list")
        views = self.transform.views
        out = []
        for i, item in enumerate(items):
            if isinstance(item, np.ndarray):
                if views != ["base_rgb"]:
                    raise ValueError(f"this model stacks views {views}"
                                     f"{' (depth is required)' if self.transform.needs_depth else ''}: pass a dict "
                                     f"{{view: array}} per observation, not a bare RGB array")
                item = {"base_rgb": item}
            elif not isinstance(item, Mapping):
                raise ValueError(f"image {i} must be an HxWx3 uint8 numpy array or a dict of views, "
                                 f"got {type(item).__name__}")
            try:
                out.append(self.transform(item))
            except ValueError as err:
                raise ValueError(f"image {i}: {err}") from None
        return np.stack(out)

    def features(self, serving: Serving, inputs: np.ndarray, batch: int = 2) -> np.ndarray:
        """The serving encoder's features of transformed observations, float32, `batch` at a time (onnxruntime keeps
        the memory its largest batch took: with the shipped model 8 frames at a time cost a process 18 MB more than
        2, 64 frames 70 MB, and neither saved time)."""
        return np.concatenate([serving.encoder(inputs[i:i + batch]).astype(np.float32, copy=False)
                               for i in range(0, len(inputs), batch)])

    def answer(self, embedding: Embedding, names: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
        """One dict per observation, {name: {"graspable", "score"}} (+ "location" for a dense model), under the
        snapshot that computed the embedding."""
        keys = check_names(names)
        serving = embedding.serving
        prompts = [self._prompt_key(key, serving) for key in keys]
        memo = embedding.answers  # shared by threads answering about the same features: read once, then added to
        found = {prompt: memo.get(prompt) for prompt in prompts}
        todo = [prompt for prompt, known in found.items() if known is None]
        if todo:  # each name is scored on its own (the scorer's softmax runs over locations, not names)
            pos, neg = self._name_features(todo, serving)
            logits, boxes = self.scorer.score_and_locate(embedding.features, pos, neg)
            learnt = [(j, serving.entries[p[0]]) for j, p in enumerate(todo) if p[2]]
            if learnt:  # an object learnt from shots has its own scale and bias on the raw logit
                cols = [j for j, _ in learnt]
                logits = logits.copy()
                logits[:, cols] = (logits[:, cols] * np.array([e.query_scale for _, e in learnt], np.float32)
                                   + np.array([e.query_bias for _, e in learnt], np.float32))
            scores = sigmoid(logits).astype(np.float32).T.tolist()
            where = [None] * len(todo) if boxes is None else boxes.transpose(1, 0, 2).tolist()
            new = dict(zip(todo, zip(scores, where)))
            found.update(new)
            if len(memo) + len(new) > NAME_CACHE_SIZE:  # bounded, whatever names clients make up
                memo.clear()
            memo.update(new)
        thresholds = [self.threshold_of(k, serving.registry) for k in keys]
        out = []
        for i in range(len(embedding)):
            answers = {}
            for name, prompt, t in zip(names, prompts, thresholds):
                scores_of, where_of = found[prompt]
                answers[name] = {"graspable": bool(scores_of[i] >= t), "score": float(scores_of[i])}
                if where_of is not None:
                    u, v, x0, y0, x1, y1, conf = where_of[i]
                    answers[name]["location"] = {"u": u, "v": v, "box": [x0, y0, x1, y1], "confidence": conf}
            out.append(answers)
        return out

    def threshold_of(self, key: str, registry: ObjectRegistry) -> float:
        """The decision threshold of a normalised name: its own once learnt from shots, else the model's."""
        entry = registry.get(key)
        return self.threshold if entry is None or entry.threshold is None else entry.threshold

    def text_features(self, keys: list[str], registry: ObjectRegistry) -> tuple[np.ndarray, np.ndarray | None]:
        """Positive/negative prompt features (N, D) of normalised names, with registry (or pending) descriptions."""
        pending = self._pending()
        descriptions = {k: e.description for k in keys
                        if (e := registry.get(k) or pending.get(k)) is not None and e.description}
        pos, neg = prompt_texts(keys, self.prompts, descriptions)
        rows = [_join(t) for t in pos] + ([_join(t) for t in neg] if neg else [])
        texts = dict(zip(rows, pos + (neg or [])))
        with self._text_lock:
            missing = [r for r in dict.fromkeys(rows) if r not in self._text_cache]
            if missing:
                self._text = self._text or self._make_text()
                for r, f in zip(missing, self._text.encode([texts[r] for r in missing])):
                    self._text_cache[r] = f
            feats = np.stack([self._text_cache[r] for r in rows])
        return (feats[:len(keys)], feats[len(keys):]) if neg else (feats, None)

    def raw_scores(self, feats: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """The scorer's logit of one query vector on features (N, ...): what an answer scales and biases."""
        zero = np.zeros_like(vector)[None] if self.prompts.negative_templates else None
        return self.scorer.logits(feats, vector[None].astype(np.float32), zero)[:, 0]

    def _prompt_key(self, key: str, serving: Serving) -> tuple[str, str, str]:
        """(name, the description it is prompted with under `serving`'s registry or a pending job ("" for none),
        the file of its query vector once learnt from shots ("" for none))."""
        entry = serving.entries.get(key)
        query = entry.query if entry is not None and entry.query and key in serving.queries else ""
        entry = entry or self._pending().get(key)
        return key, entry.description if entry is not None and entry.description else "", query

    def _name_features(self, prompts: list[tuple[str, str, str]], serving: Serving
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """`text_features` of the names of `prompts` (`_prompt_key`s) under `serving`'s registry, or the query
        vector of a name learnt from shots (its negative row zero), each name's rows cached with the description
        and query they came from (an answer costs a lookup per name, not prompt building and normalising)."""
        cache = self._name_cache
        rows = []
        for cache_key in prompts:
            key, _, query = cache_key
            row = cache.get(cache_key)
            if row is None and query:
                vector = serving.queries[key]
                row = (vector, np.zeros_like(vector) if self.prompts.negative_templates else None)
            if row is None:
                pos, neg = self.text_features([key], serving.registry)
                row = (pos[0], None if neg is None else neg[0])
                if len(cache) >= NAME_CACHE_SIZE:
                    cache.clear()
                cache[cache_key] = row
            rows.append(row)
        pos = np.stack([r[0] for r in rows])
        return pos, (None if rows[0][1] is None else np.stack([r[1] for r in rows]))


def check_names(names: Sequence[str]) -> list[str]:
    """The normalised names of a non-empty list of names (ValueError for a bare string or an empty list)."""
    if isinstance(names, str):
        raise ValueError(f"names must be a list of object names, got the string {names!r}; use [{names!r}]")
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"names must be a non-empty list of object names, got {names!r}")
    return [_normalized(n) if isinstance(n, str) else normalize_name(n) for n in names]


_normalized = lru_cache(maxsize=4096)(normalize_name)  # answers normalise the same few names over and over


def _join(texts: list[str]) -> str:
    return "\x1f".join(texts)
