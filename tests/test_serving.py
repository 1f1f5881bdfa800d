"""examples/serve_many_tasks.py in-process on loopback: a tiny model with several soft-injection task adapters
served over HTTP to concurrent clients. Every answer must equal that task's answer computed alone (the adapter
set active, the prompt run by itself through generate), requests must really be batched, refusals must be 400s
that say why, and closing must leave no thread behind."""

import contextlib
import importlib.util
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import torch

import headwise
from soft_injection import SoftInjectionConfig, inject
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "serve_many_tasks.py"
TASKS = ["t0", "t1", "t2", "t3", "t4"]
BASE = "__base__"
CLIENTS, PER_CLIENT = 8, 40  # 320 requests per load run
LENGTHS = (1, 3, 6)  # max_new_tokens asked: rows of one batch ask different lengths


def _example():
    if "serve_many_tasks" not in sys.modules:  # imported once: the module must not load anything on import
        spec = importlib.util.spec_from_file_location("serve_many_tasks", EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["serve_many_tasks"] = module
        spec.loader.exec_module(module)
    return sys.modules["serve_many_tasks"]


serving = _example()


def served_model():
    """A tiny Llama holding five soft-injection adapters, each clearly non-identity and different from the others."""
    base = tiny_model("llama")
    base.set_attn_implementation("sdpa")
    sites = headwise.find_head_sites(base)
    shape = (len(sites), sites[0].num_heads, sites[0].head_dim)
    torch.manual_seed(3)
    model = base
    for i, name in enumerate(TASKS):
        heads = "all" if i % 2 else [(layer, (i + layer) % 4) for layer in range(3)] + [(1, (i + 2) % 4)]
        model = inject(model, 4 * torch.randn(shape), SoftInjectionConfig(heads=heads, init_weights=False), adapter_name=name)
    return model.eval()


def prompts(count: int = 12) -> list[str]:
    rng = random.Random(5)
    return [f"Q: {' '.join(f'w{rng.randrange(80)}' for _ in range(rng.randint(1, 7)))}\nA:" for _ in range(count)]


def answer_alone(model, tokenizer, task: str, prompt: str, max_new_tokens: int) -> str:
    """The task's answer with nothing else in the batch: its adapter set active (the bare model for __base__),
    the prompt unpadded, greedy, cut as the server documents (special tokens dropped, first newline, stripped)."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    if task == BASE:
        context = model.disable_adapter()
    else:
        model.set_adapter(task)
        context = contextlib.nullcontext()
    with torch.no_grad(), context:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0].strip()


@pytest.fixture(scope="module")
def setup():
    """The model, the tokenizer, and every (task, prompt, length) answer computed alone, before any server runs
    (set_adapter is not for a model that is serving). One intra-op thread: a model this small gains nothing from
    more, and on a busy machine the spinning of a second one slows each forward pass many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tokenizer = served_model(), tiny_tokenizer()
        pool = prompts()
        expected = {(task, prompt, n): answer_alone(model, tokenizer, task, prompt, n)
                    for task in [*TASKS, BASE] for prompt in pool for n in LENGTHS}
        model.set_adapter(TASKS[0])
        yield model, tokenizer, pool, expected
    finally:
        torch.set_num_threads(threads)


def post(url: str, body, timeout: float = 20.0) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "/generate", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.loads(response.read())


def test_the_tasks_answer_differently_so_a_server_that_mixed_them_up_would_fail(setup):
    _, _, pool, expected = setup
    differing = [p for p in pool if len({expected[(t, p, 6)] for t in [*TASKS, BASE]}) > 1]
    assert len(differing) >= 0.75 * len(pool)
    assert sum(bool(expected[(t, p, 6)]) for t in TASKS for p in pool) >= 0.75 * len(TASKS) * len(pool)  # not all cut to ""


@pytest.mark.parametrize("workers", [1, 2])
def test_every_answer_under_concurrent_load_equals_its_task_run_alone(setup, workers):
    model, tokenizer, pool, expected = setup
    rng = random.Random(workers)
    work = [[(rng.choice([*TASKS, BASE]), rng.choice(pool), rng.choice(LENGTHS)) for _ in range(PER_CLIENT)]
            for _ in range(CLIENTS)]
    threads_before = set(threading.enumerate())
    results = []
    lock = threading.Lock()

    def client(items) -> None:
        for task, prompt, n in items:
            status, reply = post(server.url, {"task": task, "prompt": prompt, "max_new_tokens": n})
            with lock:
                results.append((task, prompt, n, status, reply))

    start = time.perf_counter()
    with serving.make_server(model, tokenizer, port=0, max_batch_size=8, max_wait_ms=10, workers=workers) as server:
        assert server.address[0] == "127.0.0.1"
        executor = ThreadPoolExecutor(CLIENTS)
        futures = [executor.submit(client, items) for items in work]
        done, not_done = wait(futures, timeout=60)
        executor.shutdown(wait=not not_done, cancel_futures=True)
        assert not not_done, "the load did not finish within 60 s"
        for future in done:
            future.result()  # a client's own exception (a timeout) fails the test here
        stats = get(server.url, "/stats")
    seconds = time.perf_counter() - start

    assert len(results) == CLIENTS * PER_CLIENT
    wrong = [(task, prompt, n, status, reply, expected[(task, prompt, n)]) for task, prompt, n, status, reply in results
             if status != 200 or reply != {"task": task, "answer": expected[(task, prompt, n)]}]
    assert not wrong, f"{len(wrong)} of {len(results)} answers differ from the task run alone, e.g. {wrong[:3]}"
    assert stats["requests"] == len(results) and stats["errors"] == 0
    assert stats["batches"] < len(results) and stats["mean_batch_size"] > 1.5, stats  # batched, not one by one
    assert stats["max_batch_size"] <= 8 and sum(stats["batch_sizes"].values()) == stats["batches"]
    assert set(threading.enumerate()) <= threads_before, "threads left after close"
    assert seconds < 45, seconds


def test_refusals_are_400s_that_say_why_and_tasks_lists_the_adapters(setup):
    model, tokenizer, pool, expected = setup
    with serving.make_server(model, tokenizer, port=0, max_new_tokens_limit=16) as server:
        url = server.url
        status, reply = post(url, {"task": "nope", "prompt": pool[0], "max_new_tokens": 3})
        assert status == 400
        assert reply["error"].startswith("unknown task 'nope': this server has t0, t1, t2, t3, t4, __base__")
        for body, message in [
            (b"{oops", "the body is not valid JSON"),
            ([1, 2], "the body must be a JSON object"),
            ({"task": "t1"}, "'prompt' must be a non-empty string"),
            ({"task": "t1", "prompt": ""}, "'prompt' must be a non-empty string"),
            ({"task": "t1", "prompt": pool[0], "max_new_tokens": 0}, "'max_new_tokens' must be a whole number from 1 to 16"),
            ({"task": "t1", "prompt": pool[0], "max_new_tokens": 17}, "from 1 to 16"),
            ({"task": "t1", "prompt": pool[0], "max_new_tokens": True}, "from 1 to 16"),
            ({"task": "t1", "prompt": pool[0], "temperature": 1.0}, "unknown field(s) 'temperature'"),
            ({"task": 3, "prompt": pool[0]}, "'task' must be the name of a task"),
        ]:
            status, reply = post(url, body)
            assert status == 400 and message in reply["error"], (body, reply)
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "/nowhere", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
        tasks = get(url, "/tasks")
        assert tasks["tasks"] == {**headwise.adapter_memory(model), BASE: 0} and tasks["base"] == BASE
        assert all(tasks["tasks"][name] > 0 for name in TASKS)
        default = post(url, {"task": "t2", "prompt": pool[1]})  # still answering after refusals
    try:  # computed alone once no server uses the model: the default length is 8 tokens
        assert default == (200, {"task": "t2", "answer": answer_alone(model, tokenizer, "t2", pool[1], 8)})
    finally:
        model.set_adapter(TASKS[0])


def test_close_answers_what_is_queued_stops_every_thread_and_frees_the_port(setup):
    model, tokenizer, pool, expected = setup
    threads_before = set(threading.enumerate())
    server = serving.make_server(model, tokenizer, port=0, max_batch_size=4, max_wait_ms=50).start()
    url, port = server.url, server.address[1]
    assert post(url, {"task": "t3", "prompt": pool[2], "max_new_tokens": 3}) == (
        200, {"task": "t3", "answer": expected[("t3", pool[2], 3)]})
    queued = [(server.batcher.submit({"task": t, "prompt": pool[i], "max_new_tokens": 6}), t, pool[i])
              for i, t in enumerate([*TASKS, BASE, "t1", "t0", "t4"])]
    server.close()
    for future, task, prompt in queued:  # queued before close: answered, not dropped
        assert future.result(timeout=0) == expected[(task, prompt, 6)]
    with pytest.raises(serving.ShuttingDown, match="shutting down"):
        server.batcher.submit({"task": "t1", "prompt": pool[0]})
    assert set(threading.enumerate()) <= threads_before, "threads left after close"
    with pytest.raises(OSError):  # nothing listens on the port any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/tasks", timeout=5)
    server.close()  # a second close is harmless
