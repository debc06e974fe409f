"""Serving many users from one base model: per-request LoRA adapters, mixed in one batch, with an LRU limit.

One base model is held in memory (with the shared aligned adapter merged into it, when there is one). Each
user's adapter is loaded on first use as a named peft adapter and kept while it is among the
`max_loaded_adapters` most recently used; memory grows by the adapter's size per loaded user. Requests queue for
one worker thread, which decodes every waiting request together: rows of different users go through one forward
pass with peft's mixed-adapter batches (`adapter_names=`, "__base__" for rows without an adapter). The event loop
only awaits a future, so generation never blocks the server's other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
import warnings
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from rlhf.personalize.layout import adapter_fingerprint, resolve_shared_adapter

if TYPE_CHECKING:  # torch and the model code load with the first reply, not with the labeling app
    from rlhf.personalize.config import ChatConfig

log = logging.getLogger(__name__)

BASE = "__base__"


class ServiceBusy(RuntimeError):
    """Too many requests are waiting for the model; the client should retry later."""


@dataclass(frozen=True)
class AdapterRef:
    """A user's published adapter: `path` relative to the personal folder."""

    key: str
    version: int
    path: str
    shared: str
    """Fingerprint of the shared adapter it was trained on top of."""

    @property
    def name(self) -> str:
        return f"{self.key}_v{self.version}"


@dataclass(frozen=True)
class ReplyRequest:
    messages: tuple[dict[str, str], ...]
    """The conversation, ending with the user's new message."""
    n: int = 1
    """Candidate replies (independent samples)."""
    max_new_tokens: int = 96
    adapter: AdapterRef | None = None
    """The user's adapter; None = the shared policy (or the base)."""


@dataclass
class Reply:
    texts: list[str]
    tokens: list[int]
    """Generated tokens per candidate."""
    finished: list[bool]
    """Whether each candidate ended with EOS (not cut at max_new_tokens)."""
    ids: list[list[int]] = field(default_factory=list)
    """The generated token ids per candidate (EOS included when there is one)."""
    queue_s: float = 0.0
    load_s: float = 0.0
    """Time spent loading adapters for the batch this request ran in."""
    generate_s: float = 0.0
    batch_rows: int = 0
    fallback: bool = False
    """The requested adapter failed to load; the shared policy (or the base) answered instead."""


@dataclass
class _Job:
    request: ReplyRequest
    future: Future
    submitted: float = field(default_factory=time.perf_counter)


class ChatService:
    """The policy behind the chat API. Thread-safe: any thread may `submit`; one worker thread runs the model."""

    def __init__(self, cfg: ChatConfig | None = None, model=None, tokenizer=None, seed: int = 0):
        from rlhf.personalize.config import ChatConfig

        self.cfg = cfg = cfg if cfg is not None else ChatConfig()
        self.personal_dir = Path(cfg.personal_dir)
        self.shared_dir = resolve_shared_adapter(cfg.shared_adapter)
        self.shared_fingerprint = adapter_fingerprint(self.shared_dir)
        self._given = (model, tokenizer)
        self.model = self.tokenizer = self.peft = None
        self.loaded: OrderedDict[str, AdapterRef] = OrderedDict()  # LRU: least recently used first
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._seed = seed
        self._batches = 0
        self._warned: set[str] = set()
        self._worker = threading.Thread(target=self._loop, name="rlhf-chat-model", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ which policy answers

    def policy_for(self, adapter: AdapterRef | None) -> tuple[str, AdapterRef | None]:
        """('user', ref) when the user's adapter is usable, else ('shared', None) or ('base', None)."""
        fallback = ("shared" if self.shared_dir is not None else "base", None)
        if adapter is None:
            return fallback
        if adapter.shared != self.shared_fingerprint:
            self._warn_once(adapter.name, "%s was trained on another shared adapter; serving the shared policy", adapter.name)
            return fallback
        if not (self.personal_dir / adapter.path / "adapter_config.json").is_file():
            self._warn_once(adapter.name, "%s: adapter files missing under %s", adapter.name, self.personal_dir)
            return fallback
        return "user", adapter

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # ------------------------------------------------------------------ requests

    def submit(self, request: ReplyRequest) -> Future:
        if not 1 <= request.max_new_tokens <= self.cfg.max_new_tokens:
            raise ValueError(f"max_new_tokens must be in [1, {self.cfg.max_new_tokens}]")
        with self._lock:
            if self._pending >= self.cfg.max_queue:
                raise ServiceBusy(f"{self._pending} requests are waiting for the model")
            self._pending += 1
        job = _Job(request, Future())
        self._queue.put(job)
        return job.future

    def reply(self, request: ReplyRequest, timeout: float | None = None) -> Reply:
        """Blocking: submit and wait."""
        return self.submit(request).result(timeout)

    async def areply(self, request: ReplyRequest) -> Reply:
        """Awaitable: the event loop stays free while the worker generates."""
        return await asyncio.wrap_future(self.submit(request))

    def loaded_adapters(self) -> list[str]:
        with self._lock:
            return list(self.loaded)

    def forget(self, key: str) -> None:
        """Drop a user's adapters from memory at the next batch (e.g. after the user was deleted)."""
        self._queue.put(_Job(ReplyRequest((), 0, 1, AdapterRef(key, -1, "", "")), Future()))

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    # ------------------------------------------------------------------ the worker

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < self.cfg.max_batch:  # everything that queued meanwhile joins this batch
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
            forget = [j for j in jobs if j.request.n == 0]
            work = [j for j in jobs if j.request.n > 0]
            try:
                for j in forget:
                    self._evict_key(j.request.adapter.key)
                    j.future.set_result(None)
                if work:
                    self._run(work)
            except BaseException as e:  # noqa: BLE001 - every waiting request must hear about it
                log.exception("chat generation failed")
                for j in work:
                    if not j.future.done():
                        j.future.set_exception(e)
            finally:
                with self._lock:
                    self._pending -= len(work)

    def _load_model(self) -> None:
        import torch

        from rlhf.generation import eos_ids
        from rlhf.models.lora import load_adapter
        from rlhf.models.registry import load_causal_lm

        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        model, tok = self._given
        if model is None:
            model, tok = load_causal_lm(self.cfg.model)
        if self.shared_dir is not None:
            model = load_adapter(model, self.shared_dir, merge=True)
            log.info("chat: shared adapter %s merged into the base", self.shared_dir)
        self.model, self.tokenizer = model.eval(), tok
        self.eos = eos_ids(tok, model)

    def _ensure_loaded(self, refs: Sequence[AdapterRef]) -> tuple[float, set[str]]:
        """Load missing adapters (named `<key>_v<version>`), then evict the least recently used over the limit.

        Returns the time it took and the names that failed to load (their rows fall back to the shared policy).
        """
        from rlhf.models.lora import _quiet_peft

        t0 = time.perf_counter()
        needed = {r.name: r for r in refs}
        failed: set[str] = set()
        for name, ref in needed.items():
            if name in self.loaded:
                self.loaded.move_to_end(name)
                continue
            path = str(self.personal_dir / ref.path)
            try:
                with _quiet_peft():
                    if self.peft is None:
                        from peft import PeftModel

                        self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
                    else:
                        self.peft.load_adapter(path, adapter_name=name)
            except Exception:  # noqa: BLE001 - one user's broken adapter must not fail the other rows
                log.exception("chat: cannot load adapter %s from %s; serving the shared policy instead", name, path)
                failed.add(name)
                if self.peft is not None and name in self.peft.peft_config:
                    self.peft.delete_adapter(name)
                continue
            with self._lock:
                self.loaded[name] = ref
            for old in [n for n, r in self.loaded.items() if r.key == ref.key and n != name]:
                self._delete(old)  # an older version of this user's adapter
        while len(self.loaded) > self.cfg.max_loaded_adapters:
            victim = next((n for n in self.loaded if n not in needed), None)
            if victim is None:
                break  # this batch itself needs more adapters than the limit; they go after it
            self._delete(victim)
        return time.perf_counter() - t0, failed

    def _delete(self, name: str) -> None:
        with self._lock:
            self.loaded.pop(name, None)
        if self.loaded:
            with warnings.catch_warnings():  # "Adapter ... was active": no adapter is active here, rows name theirs
                warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
                self.peft.delete_adapter(name)
        else:  # peft cannot hold zero adapters: take the LoRA layers out again
            self.model, self.peft = self.peft.unload(), None

    def _evict_key(self, key: str) -> None:
        for name in [n for n, r in self.loaded.items() if r.key == key]:
            self._delete(name)

    def _run(self, jobs: list[_Job]) -> None:
        import torch

        from rlhf.generation import SamplingConfig, encode_texts, format_messages, sample

        if self.model is None:
            self._load_model()
        t_start = time.perf_counter()
        refs = [j.request.adapter for j in jobs if j.request.adapter is not None]
        load_s, failed = self._ensure_loaded(refs) if refs else (0.0, set())
        prompts, names, owners = [], [], []
        for i, j in enumerate(jobs):
            text = format_messages(self.tokenizer, self._with_system(j.request.messages))
            name = j.request.adapter.name if j.request.adapter is not None else BASE
            name = BASE if name in failed else name
            prompts += [text] * j.request.n
            names += [name] * j.request.n
            owners += [i] * j.request.n
        ids, mask = encode_texts(self.tokenizer, prompts, self.cfg.max_prompt_tokens)
        cfg = SamplingConfig(max(j.request.max_new_tokens for j in jobs), self.cfg.temperature, self.cfg.top_p)
        lm = functools.partial(self.peft, adapter_names=names) if self.peft is not None else self.model
        self._batches += 1
        gen = torch.Generator().manual_seed(self._seed * 1_000_003 + self._batches)
        t0 = time.perf_counter()
        out = sample(lm, ids, mask, cfg, self.eos, self.tokenizer.pad_token_id, gen, share_prefill=False)  # per-row adapters
        gen_s = time.perf_counter() - t0
        lengths = out.response_lengths.tolist()
        for i, j in enumerate(jobs):
            rows = [r for r, o in enumerate(owners) if o == i]
            limit = j.request.max_new_tokens
            texts, tokens, finished, ids = [], [], [], []
            for r in rows:
                n = min(lengths[r], limit)
                toks = out.responses[r, :n].tolist()
                texts.append(self.tokenizer.decode(toks, skip_special_tokens=True).strip())
                tokens.append(n)
                finished.append(bool(out.finished[r]) and lengths[r] <= limit)
                ids.append(toks)
            fallback = j.request.adapter is not None and j.request.adapter.name in failed
            j.future.set_result(Reply(texts, tokens, finished, ids, t_start - j.submitted, load_s, gen_s, len(prompts),
                                      fallback))

    def _with_system(self, messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:  # noqa: D102
        msgs = list(messages)
        if self.cfg.system_prompt and not (msgs and msgs[0]["role"] == "system"):
            msgs = [{"role": "system", "content": self.cfg.system_prompt}] + msgs
        return msgs


def chat_config_from_env() -> ChatConfig:
    """The chat server's config: the YAML file named by RLHF_CHAT_CONFIG, else the defaults."""
    import os

    from rlhf.config import load_config

    path = os.environ.get("RLHF_CHAT_CONFIG")
    return load_config(ChatConfig, path) if path else ChatConfig()


@contextlib.contextmanager
def serve_in_background(chat: ChatService, settings=None, db=None) -> Iterator[str]:  # noqa: ANN001
    """The feedback app (labeling + chat) with `chat` as its policy, under uvicorn in a thread; yields its URL.

    Like `rlhf.feedback.server.serve_in_background`, for benches and tests that build the ChatService themselves.
    """
    import uvicorn

    from rlhf.feedback.config import ServeConfig
    from rlhf.feedback.server import _bind
    from rlhf.feedback.web.app import create_app

    settings = settings or ServeConfig(port=0)
    app = create_app(settings, db)
    app.state.chat = chat
    sock = _bind(settings.host, settings.port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=settings.log_level, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rlhf-chat-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the chat server did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://{settings.host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
