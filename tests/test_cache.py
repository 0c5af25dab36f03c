import hashlib
import json
import multiprocessing
import sqlite3
from dataclasses import replace

import pytest

from evalsuite.results.cache import (
    CachedBackend,
    ResponseCache,
    chat_template_sha256,
    generation_settings,
    request_key,
)
from evalsuite.types import Generation, GenerationRequest, Message, SamplingParams, Timings

CHAT = (Message("user", "What is 2+2?"),)


def req(prompt=CHAT, **params) -> GenerationRequest:
    return GenerationRequest("gsm8k", "test-0", prompt, SamplingParams(**params))


# --- keys ---------------------------------------------------------------------------


def test_key_is_stable_and_ignores_the_requests_place_in_the_run():
    a = req(max_tokens=16)
    assert request_key("id", a) == request_key("id", a)
    moved = replace(a, task="other", sample_id="test-9", repeat=3)
    assert request_key("id", moved) == request_key("id", a)


@pytest.mark.parametrize("change", [
    lambda r: replace(r, prompt=(Message("user", "What is 2+3?"),)),
    lambda r: replace(r, prompt=(Message("system", "Be brief."), *r.prompt)),
    lambda r: replace(r, prompt="What is 2+2?"),  # same words as a plain completion prompt
    lambda r: replace(r, params=replace(r.params, max_tokens=17)),
    lambda r: replace(r, params=replace(r.params, temperature=0.7)),
    lambda r: replace(r, params=replace(r.params, top_p=0.9)),
    lambda r: replace(r, params=replace(r.params, stop=("\n",))),
    lambda r: replace(r, json_schema={"type": "object"}),
])
def test_anything_that_changes_a_generation_changes_the_key(change):
    base = req(max_tokens=16)
    assert request_key("id", change(base)) != request_key("id", base)


def test_model_or_engine_identity_changes_the_key():
    assert request_key("id-a", req()) != request_key("id-b", req())


def test_seed_counts_only_when_sampling():
    greedy = req(temperature=0.0, seed=1)
    assert request_key("id", greedy) == request_key("id", replace(greedy, params=replace(greedy.params, seed=2)))
    sampled = req(temperature=0.8, seed=1)
    assert request_key("id", sampled) != request_key("id", replace(sampled, params=replace(sampled.params, seed=2)))


def test_generation_settings_drop_what_cannot_change_an_output():
    settings = {"dtype": "bfloat16", "max_model_len": 2048, "gpu_memory_utilization": 0.25,
                "seed": 0, "max_concurrency": 8, "engine_args": {"revision": "abc"}}
    assert generation_settings(settings) == {"dtype": "bfloat16", "max_model_len": 2048, "revision": "abc"}


def test_chat_template_hash_prefers_the_jinja_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ old }}"}))
    assert chat_template_sha256(tmp_path) == hashlib.sha256(b"{{ old }}").hexdigest()
    (tmp_path / "chat_template.jinja").write_text("{{ new }}")
    assert chat_template_sha256(tmp_path) == hashlib.sha256(b"{{ new }}").hexdigest()
    assert chat_template_sha256(tmp_path / "missing") is None


def test_chat_template_hash_from_files_matches_the_loaded_tokenizer(embedded_model):
    """The hash the cache reads from disk is the one the backends report after loading."""
    transformers = pytest.importorskip("transformers")
    from evalsuite.backends import chat_template_sha256 as loaded_hash

    tokenizer = transformers.AutoTokenizer.from_pretrained(embedded_model)
    assert chat_template_sha256(embedded_model) == loaded_hash(tokenizer)
    assert chat_template_sha256(embedded_model) is not None


# --- the store ----------------------------------------------------------------------


GEN = Generation("four", "stop", "<|im_start|>user ...", 12, 2, Timings(e2e_s=0.5, ttft_s=0.1, itl_s=(0.2, 0.2)))


def test_store_round_trips_a_generation_and_uses_wal(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    assert cache.put_many([("k1", GEN)]) == 1
    assert cache.get_many(["k1", "k2"]) == {"k1": GEN}
    mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_failed_generations_are_not_stored_and_first_writer_wins(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    failed = Generation("", "error", error="timeout")
    assert cache.put_many([("bad", failed)]) == 0
    assert cache.put_many([("k", GEN), ("k", replace(GEN, text="five"))]) == 1
    assert cache.get_many(["k"])["k"].text == "four"
    assert len(cache) == 1


def _writer(path, worker: int, n: int) -> None:
    cache = ResponseCache(path)
    for i in range(n):
        # Keys overlap between workers: half are shared, half are the worker's own.
        key = f"shared-{i}" if i % 2 == 0 else f"w{worker}-{i}"
        cache.put_many([(key, replace(GEN, text=f"{worker}:{i}"))])
        assert key in cache.get_many([key])
    cache.close()


def test_several_processes_write_one_cache(tmp_path):
    path = tmp_path / "c.sqlite"
    ctx = multiprocessing.get_context("spawn")
    workers, n = 4, 60
    procs = [ctx.Process(target=_writer, args=(path, w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    cache = ResponseCache(path)
    assert len(cache) == n // 2 + workers * (n // 2)  # 30 shared keys + 30 own keys per worker
    assert len(cache.get_many([f"w3-{i}" for i in range(1, n, 2)])) == n // 2


# --- the backend seen through the cache ----------------------------------------------


class Scripted:
    name = "scripted"

    def __init__(self):
        self.seen: list[list[str]] = []

    def generate(self, requests):
        self.seen.append([r.prompt for r in requests])
        return [Generation(f"echo {r.prompt}", "stop") for r in requests]

    def describe(self):
        return {"backend": self.name}


def test_only_misses_reach_the_backend_and_hits_are_counted(tmp_path):
    opened = []

    def open_backend():
        opened.append(Scripted())
        return opened[-1]

    cache = ResponseCache(tmp_path / "c.sqlite")
    first = CachedBackend(open_backend, "id", cache, "scripted")
    out = first.generate([req("a"), req("b")])
    assert [g.text for g in out] == ["echo a", "echo b"]
    assert (first.hits, first.misses) == (0, 2)

    second = CachedBackend(open_backend, "id", cache, "scripted")
    out = second.generate([req("b"), req("c"), req("a")])
    assert [g.text for g in out] == ["echo b", "echo c", "echo a"]
    assert (second.hits, second.misses) == (2, 1)
    assert opened[1].seen == [["c"]]


def test_a_fully_cached_batch_never_opens_the_backend(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    CachedBackend(Scripted, "id", cache, "scripted").generate([req("a")])

    def must_not_open():
        raise AssertionError("backend opened on a full cache hit")

    cached = CachedBackend(must_not_open, "id", cache, "scripted")
    assert not cached.open_if_needed([req("a")])
    assert cached.generate([req("a")])[0].text == "echo a"
    assert not cached.opened and cached.describe() is None


def test_split_and_store_serve_a_stream_one_generation_at_a_time(tmp_path):
    def must_not_open():
        raise AssertionError("split and store never open the backend")

    cache = ResponseCache(tmp_path / "c.sqlite")
    cached = CachedBackend(must_not_open, "id", cache, "scripted")
    assert cached.split([req("a"), req("b")]) == ({}, [0, 1])
    cached.store(req("b"), Generation("echo b", "stop", output_tokens=2, timings=Timings(e2e_s=0.5, ttft_s=0.1)))
    hits, misses = cached.split([req("a"), req("b"), req("c")])
    assert misses == [0, 2] and list(hits) == [1]
    assert hits[1].text == "echo b" and hits[1].output_tokens == 2
    assert hits[1].timings == Timings()  # a hit was not timed in this run
    assert (cached.hits, cached.misses) == (1, 4) and not cached.opened


def test_without_a_cache_every_request_goes_to_the_backend():
    cached = CachedBackend(Scripted, "id", None, "scripted")
    cached.generate([req("a")])
    cached.generate([req("a")])
    assert (cached.hits, cached.misses) == (0, 2)
    assert cached.inner.seen == [["a"], ["a"]]


def test_the_cache_file_follows_the_environment(tmp_path, monkeypatch):
    from evalsuite.results.cache import default_path

    monkeypatch.delenv("EVALSUITE_RESPONSE_CACHE", raising=False)
    monkeypatch.setenv("EVALSUITE_CACHE", str(tmp_path / "c"))
    assert default_path() == tmp_path / "c" / "responses.sqlite"
    monkeypatch.setenv("EVALSUITE_RESPONSE_CACHE", str(tmp_path / "r.sqlite"))
    assert default_path() == tmp_path / "r.sqlite"
