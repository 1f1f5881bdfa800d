"""One model, many tasks: an HTTP server that batches requests for different adapters into one ``generate``.

Requests for different tasks arrive on several threads. A batcher thread collects the pending ones for a few
milliseconds (or until a batch is full), runs ONE greedy ``model.generate(..., adapter_names=[...])`` with
left padding, one task's adapter per row (``"__base__"``: the bare model), and hands each answer back to the
thread waiting for it. Every answer is what its task gives when its prompt runs alone with that adapter
active (``tests/test_serving.py`` checks it under load).

    python examples/serve_many_tasks.py                      # soft-injection adapters for 4 Function Vectors tasks
    python examples/serve_many_tasks.py --demo               # ... and send itself a few hundred requests
    python examples/serve_many_tasks.py --adapters out/tasks # serve every saved adapter of a folder, by folder name
    python examples/serve_many_tasks.py --save out/tasks     # build the task adapters, save them, then serve

The built adapters are untrained soft-injection adapters (alpha 0.5 on every head) of few-shot task
embeddings (``soft_injection.extract_task_embedding``), which needs the reference data: --data-dir or
$HEADWISE_DATA. ``--adapters DIR`` needs no data. Options: --model, --device, --dtype, --attn-implementation,
--batch-size, --max-wait-ms, --host, --port (0: any free port; the chosen one is logged).

Calling it::

    curl -s localhost:8000/tasks
    curl -s localhost:8000/generate -d '{"task": "antonym", "prompt": "Q: hot\\nA:", "max_new_tokens": 5}'
    curl -s localhost:8000/stats

``POST /generate`` takes ``{"task": name, "prompt": text, "max_new_tokens": n}`` (n optional, default 8) and
returns ``{"task": name, "answer": text}``: the greedy continuation of the prompt, at most n tokens, cut at
its first newline and stripped (as ``headwise.experiments.evaluate.greedy_answers``). A batch generates as many
tokens as its largest n and cuts every row to its own n, which gives the same tokens as generating n alone.
An unknown task, a malformed body or an out-of-range n is answered 400 with ``{"error": message}``.
``GET /tasks`` lists the tasks with the bytes each adapter holds; ``GET /stats`` counts requests and batches.

The core (:class:`Batcher`, :class:`Server`, :func:`make_server`) imports without loading anything, so a
test or another program can serve a model of its own in-process::

    with make_server(model, tokenizer, port=0) as server:   # started; closed (threads joined) on exit
        print(server.url)
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

import torch

logger = logging.getLogger("serve_many_tasks")

BASE = "__base__"  # a row on the bare model (PEFT's name, headwise.mixed.BASE)
FIELDS = ("task", "prompt", "max_new_tokens")


class RequestError(ValueError):
    """A request the server refuses (HTTP 400); the message says why."""


class ShuttingDown(RuntimeError):
    """The server is closing and takes no more requests (HTTP 503)."""


@dataclass
class _Pending:
    task: str
    ids: list[int]
    max_new_tokens: int
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    """Collects requests from any thread and answers them in mixed-adapter batches on worker threads.

    ``submit`` checks a request and returns a ``Future`` of its answer. A worker takes the first pending
    request, waits up to ``max_wait_ms`` for more (never past ``max_batch_size``), and runs them as one greedy
    ``generate`` with ``adapter_names``. ``workers`` > 1 runs that many batches at once on the same model (each
    call carries its own rows); one is right for a single accelerator.
    """

    def __init__(
        self, model, tokenizer, tasks: Sequence[str] | None = None, max_batch_size: int = 16, max_wait_ms: float = 5.0,
        max_new_tokens_limit: int = 64, default_max_new_tokens: int = 8, max_prompt_tokens: int = 1024,
        stop_at_newline: bool = True, workers: int = 1,
    ):
        if not hasattr(model, "peft_config"):
            raise ValueError("the model carries no adapters: serve a PeftModel (headwise.wrap, soft_injection.inject, "
                             "headwise.load_adapters)")
        if max_batch_size < 1 or workers < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and workers must be at least 1 and max_wait_ms at least 0")
        self.model = model.eval()  # mixed batches are for inference (refused in training mode)
        self.tokenizer = tokenizer
        loaded = list(model.peft_config)
        unknown = sorted(set(tasks or ()) - set(loaded))
        if unknown:
            raise ValueError(f"the model has no adapter {', '.join(map(repr, unknown))}; it has {', '.join(loaded)}")
        self.tasks = [*(tasks or loaded), BASE]  # fixed while serving: attaching adapters under load is unsupported
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_new_tokens_limit, self.default_max_new_tokens = max_new_tokens_limit, default_max_new_tokens
        self.max_prompt_tokens, self.stop_at_newline = max_prompt_tokens, stop_at_newline
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = next(model.parameters()).device
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        # A fast (Rust) tokenizer is not safe to call from several threads at once ("RuntimeError: Already
        # borrowed", huggingface/tokenizers#537, transformers#47085): request threads encode, workers decode.
        self._tokenizer_lock = threading.Lock()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"batcher-{i}", daemon=True) for i in range(workers)]
        self._started = False
        self._stats = {"requests": 0, "batches": 0, "max_batch_size": 0, "generate_seconds": 0.0, "errors": 0}
        self._sizes: dict[int, int] = {}

    # -- requests --------------------------------------------------------------------------------------------

    def check(self, request: Any) -> tuple[str, list[int], int]:
        """``(task, prompt ids, max_new_tokens)`` of a request body, or :class:`RequestError` saying what is wrong."""
        if not isinstance(request, dict):
            raise RequestError(f"the body must be a JSON object with {', '.join(FIELDS)}, got {type(request).__name__}")
        extra = sorted(set(request) - set(FIELDS))
        if extra:
            raise RequestError(f"unknown field(s) {', '.join(map(repr, extra))}: a request has {', '.join(FIELDS)}")
        task = request.get("task")
        if not isinstance(task, str):
            raise RequestError(f"'task' must be the name of a task (one of {', '.join(self.tasks)}), got {task!r}")
        if task not in self.tasks:
            raise RequestError(f"unknown task {task!r}: this server has {', '.join(self.tasks)} ({BASE!r} is the bare "
                               "model); GET /tasks lists them")
        prompt = request.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise RequestError(f"'prompt' must be a non-empty string, got {prompt!r}")
        n = request.get("max_new_tokens", self.default_max_new_tokens)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.max_new_tokens_limit:
            raise RequestError(f"'max_new_tokens' must be a whole number from 1 to {self.max_new_tokens_limit}, got {n!r}")
        with self._tokenizer_lock:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise RequestError("the prompt has no tokens")
        if len(ids) > self.max_prompt_tokens:
            raise RequestError(f"the prompt has {len(ids)} tokens, more than this server takes ({self.max_prompt_tokens})")
        return task, ids, n

    def submit(self, request: Any) -> Future:
        """Check a request and queue it; the returned ``Future`` gives the answer (a string)."""
        pending = _Pending(*self.check(request))
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            self._queue.put(pending)
        return pending.future

    def answer(self, task: str, prompt: str, max_new_tokens: int | None = None, timeout: float | None = None) -> str:
        """Submit one request from this thread and wait for its answer."""
        request = {"task": task, "prompt": prompt}
        if max_new_tokens is not None:
            request["max_new_tokens"] = max_new_tokens
        return self.submit(request).result(timeout)

    # -- batches ---------------------------------------------------------------------------------------------

    def _collect(self) -> tuple[list[_Pending], bool]:
        """The next batch (blocks for its first request), and whether a stop came with it."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _work(self) -> None:
        while True:
            batch, stop = self._collect()
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]  # drop requests given up on
            if batch:
                self._run(batch)
            if stop:
                self._queue.put(_STOP)  # for the next worker
                return

    def _run(self, batch: list[_Pending]) -> None:
        try:
            answers = self.generate([p.task for p in batch], [p.ids for p in batch], [p.max_new_tokens for p in batch])
        except BaseException as error:  # every waiting request hears of it; the worker lives on
            logger.exception("a batch of %d failed", len(batch))
            with self._lock:
                self._stats["errors"] += len(batch)
            for pending in batch:
                pending.future.set_exception(error)
            return
        for pending, text in zip(batch, answers):
            pending.future.set_result(text)

    @torch.no_grad()
    def generate(self, tasks: Sequence[str], prompts: Sequence[list[int]], max_new_tokens: Sequence[int]) -> list[str]:
        """One greedy mixed-adapter ``generate`` over left-padded prompt ids; each row cut to its own length."""
        width = max(len(ids) for ids in prompts)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(ids)) + ids for ids in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device)
        start = time.perf_counter()
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, adapter_names=list(tasks),
                                  max_new_tokens=max(max_new_tokens), do_sample=False, pad_token_id=self.pad_token_id)
        seconds = time.perf_counter() - start
        new = out[:, width:].tolist()
        answers = [self.decode(row[:n]) for row, n in zip(new, max_new_tokens)]
        with self._lock:
            stats = self._stats
            stats["batches"] += 1
            stats["requests"] += len(tasks)
            stats["max_batch_size"] = max(stats["max_batch_size"], len(tasks))
            stats["generate_seconds"] += seconds
            self._sizes[len(tasks)] = self._sizes.get(len(tasks), 0) + 1
        logger.debug("batch of %d (%d distinct tasks) in %.3f s", len(tasks), len(set(tasks)), seconds)
        return answers

    def decode(self, tokens: Sequence[int]) -> str:
        """The answer text of generated tokens: special tokens dropped, cut at the first newline, stripped."""
        with self._tokenizer_lock:
            text = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
        return text.split("\n")[0].strip() if self.stop_at_newline else text

    # -- life ------------------------------------------------------------------------------------------------

    def start(self) -> "Batcher":
        if not self._started:
            self._started = True
            for worker in self._workers:
                worker.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Answer what is queued, stop the workers, and fail whatever arrives later with :class:`ShuttingDown`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        for worker in self._workers:
            if worker.is_alive():
                worker.join(timeout)
        while True:  # left behind (no worker started, or one that did not stop in time)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                item.future.set_exception(ShuttingDown("the server shut down before answering"))
        alive = [w.name for w in self._workers if w.is_alive()]
        if alive:
            logger.warning("batcher threads still running after %.0f s: %s", timeout, ", ".join(alive))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self._stats)
            sizes = dict(sorted(self._sizes.items()))
        stats["mean_batch_size"] = stats["requests"] / stats["batches"] if stats["batches"] else 0.0
        stats["batch_sizes"] = sizes  # size -> how many batches had it
        return stats

    def task_memory(self) -> dict[str, int]:
        """Bytes each served adapter holds on the model (0 for the bare model)."""
        import headwise

        memory = headwise.adapter_memory(self.model, [t for t in self.tasks if t != BASE])
        return {**memory, BASE: 0}


class _Handler(BaseHTTPRequestHandler):
    server_version = "headwise-serve/1"
    timeout = 60  # seconds a connection may stay silent (so a stuck client cannot hold a thread forever)
    max_body = 1 << 20

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's signature)
        logger.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        app: Server = self.server.app
        path = self.path.split("?")[0].rstrip("/")
        if path == "/tasks":
            self._reply(200, {"tasks": app.batcher.task_memory(), "base": BASE})
        elif path == "/stats":
            self._reply(200, app.batcher.stats())
        else:
            self._reply(404, {"error": f"no {path or '/'}: GET /tasks, GET /stats or POST /generate"})

    def do_POST(self) -> None:  # noqa: N802
        app: Server = self.server.app
        if self.path.split("?")[0].rstrip("/") != "/generate":
            self._reply(404, {"error": f"no {self.path}: POST /generate"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, {"error": "a request needs a Content-Length"})
            return
        if length > self.max_body:
            self._reply(413, {"error": f"the body has {length} bytes, more than {self.max_body}"})
            return
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._reply(400, {"error": f"the body is not valid JSON ({error})"})
            return
        try:
            future = app.batcher.submit(request)
        except RequestError as error:
            self._reply(400, {"error": str(error)})
            return
        except ShuttingDown as error:
            self._reply(503, {"error": str(error)})
            return
        try:
            answer = future.result(timeout=app.request_timeout)
        except FutureTimeout:
            future.cancel()
            self._reply(504, {"error": f"no answer within {app.request_timeout} s"})
            return
        except ShuttingDown as error:
            self._reply(503, {"error": str(error)})
            return
        except Exception as error:  # the batch failed: the model's message, not a traceback
            self._reply(500, {"error": f"{type(error).__name__}: {error}"})
            return
        self._reply(200, {"task": request["task"], "answer": answer})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every request thread: nothing is left running after close
    block_on_close = True


class Server:
    """The HTTP front (``ThreadingHTTPServer``: one thread per request) and its :class:`Batcher`.

    ``start()`` serves from a background thread, ``serve_forever()`` from this one; ``close()`` stops
    accepting, answers what is queued, and joins every thread it started. A context manager starts and closes.
    """

    def __init__(self, batcher: Batcher, host: str = "127.0.0.1", port: int = 0, request_timeout: float = 120.0):
        self.batcher = batcher
        self.request_timeout = request_timeout
        self.httpd = _HTTPServer((host, port), _Handler)
        self.httpd.app = self
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> "Server":
        """Serve from a background thread; returns at once."""
        self.batcher.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="http-server", daemon=True)
            self._thread.start()
            logger.info("serving %d tasks on %s", len(self.batcher.tasks), self.url)
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until Ctrl-C, then close."""
        self.batcher.start()
        logger.info("serving %d tasks on %s (Ctrl-C stops)", len(self.batcher.tasks), self.url)
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            logger.info("stopping")
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self.httpd.shutdown()  # stop accepting (waits for serve_forever to return)
            self._thread.join()
        self.batcher.close()  # answer what is queued; later submissions get 503
        self.httpd.server_close()  # join the request threads (each has its answer or its error by now)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def make_server(model, tokenizer, host: str = "127.0.0.1", port: int = 0, max_batch_size: int = 16,
                max_wait_ms: float = 5.0, request_timeout: float = 120.0, **batcher_kwargs) -> Server:
    """A :class:`Server` for ``model`` (a PeftModel holding the task adapters), not yet started: ``start()``, or
    use it as a context manager. ``port=0`` takes any free port (``server.url`` says which);
    ``batcher_kwargs`` go to :class:`Batcher` (``tasks``, ``max_new_tokens_limit``, ``workers``, ...)."""
    batcher = Batcher(model, tokenizer, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, **batcher_kwargs)
    return Server(batcher, host, port, request_timeout)


# -- the script -------------------------------------------------------------------------------------------------

DEFAULT_TASKS = ("antonym", "english-french", "country-capital", "present-past")


def build_task_adapters(model, tokenizer, tasks: Sequence[str], data_dir=None, n_prompts: int = 8, n_shots: int = 5):
    """One untrained soft-injection adapter per Function Vectors task, named after it, from a few-shot task
    embedding; returns the PeftModel and ``{task: held-out pairs}`` for the demo."""
    from headwise.experiments.data import load_word_pairs
    from soft_injection import SoftInjectionConfig, extract_task_embedding, inject

    held_out, peft_model = {}, model
    for name in tasks:
        task = load_word_pairs(name, test=40, seed=0, data_dir=data_dir)
        embedding = extract_task_embedding(model, tokenizer, task.train, n_prompts=n_prompts, n_shots=n_shots)
        config = SoftInjectionConfig(heads="all", n_prompts=n_prompts, n_shots=n_shots)
        peft_model = inject(peft_model, embedding, config, adapter_name=name)
        held_out[name] = task.test
        logger.info("built adapter %r from %d %d-shot prompts", name, n_prompts, n_shots)
    return peft_model.eval(), held_out


def post(url: str, body: dict, timeout: float = 60.0) -> tuple[int, dict]:
    """POST JSON, return (status, JSON reply) for any status."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def run_demo(server: Server, queries: dict[str, list[dict]], n_requests: int, clients: int, max_new_tokens: int) -> None:
    """Send ``n_requests`` from ``clients`` threads; print throughput, batching and a few answers."""
    from headwise.experiments.data import few_shot_prompt

    rng = random.Random(0)
    work = []
    for _ in range(n_requests):
        task = rng.choice(list(queries))
        pair = rng.choice(queries[task])
        work.append((task, pair))
    results: list[tuple[str, dict, int, dict]] = []
    lock = threading.Lock()

    def client(part: list) -> None:
        for task, pair in part:
            status, reply = post(server.url + "/generate", {"task": task, "prompt": few_shot_prompt(pair["input"]),
                                                            "max_new_tokens": max_new_tokens})
            with lock:
                results.append((task, pair, status, reply))

    threads = [threading.Thread(target=client, args=(work[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    stats = server.batcher.stats()
    failed = [r for r in results if r[2] != 200]
    print(f"{len(results)} requests from {clients} clients in {seconds:.1f} s: {len(results) / seconds:.1f} requests/s, "
          f"{stats['batches']} batches, mean batch size {stats['mean_batch_size']:.1f} (max {stats['max_batch_size']}), "
          f"{len(failed)} failed")
    hits: dict[str, list[bool]] = {}
    for task, pair, status, reply in results:
        if status == 200 and task != BASE and pair["output"]:
            hits.setdefault(task, []).append(reply["answer"].lower() == pair["output"].lower())
    for task, marks in sorted(hits.items()):
        print(f"  {task:20s} exact match {sum(marks) / len(marks):.2f} over {len(marks)} requests")
    for task, pair, status, reply in results[:6]:
        print(f"  [{task}] {pair['input']!r} -> {reply.get('answer', reply.get('error'))!r} (expected {pair['output']!r})")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="bundled name, Hub id or folder of the base model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--attn-implementation", default="sdpa", choices=["eager", "sdpa", "flash_attention_2"])
    parser.add_argument("--adapters", type=Path, help="serve every saved adapter in this folder (named by subfolder)")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="Function Vectors tasks to build adapters for")
    parser.add_argument("--data-dir", help="reference data folder (default: $HEADWISE_DATA)")
    parser.add_argument("--save", type=Path, help="save the built adapters here (one subfolder each; serve later with --adapters)")
    parser.add_argument("--batch-size", type=int, default=16, help="most requests in one generate")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--demo", action="store_true", help="send the server a few hundred requests, print throughput, exit")
    parser.add_argument("--requests", type=int, default=300, help="--demo: how many requests")
    parser.add_argument("--clients", type=int, default=8, help="--demo: how many client threads")
    parser.add_argument("--max-new-tokens", type=int, default=6, help="--demo: tokens per answer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import headwise
    from headwise.experiments.data import FUNCTION_VECTORS_TASKS, load_word_pairs

    base, tokenizer = headwise.load_base_model(args.model, dtype=getattr(torch, args.dtype),
                                               attn_implementation=args.attn_implementation)
    base.to(args.device).eval()
    tasks = [t for t in args.tasks.split(",") if t]
    if args.adapters:
        model, queries = headwise.load_adapters(base, args.adapters).eval(), {}
    else:
        model, queries = build_task_adapters(base, tokenizer, tasks, args.data_dir)
        if args.save:
            model.save_pretrained(args.save)
            logger.info("saved %d adapters under %s", len(model.peft_config), args.save)
    memory = headwise.adapter_memory(model)
    logger.info("%d adapters, %.1f KB each on average", len(memory), sum(memory.values()) / len(memory) / 1024)
    server = make_server(model, tokenizer, args.host, 0 if args.demo else args.port, args.batch_size, args.max_wait_ms)
    if not args.demo:
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does: queued requests answered first
        server.serve_forever()
        return
    known = {name for names in FUNCTION_VECTORS_TASKS.values() for name in names}
    for name in sorted((set(model.peft_config) - set(queries)) & known):  # loaded adapters named after a Function Vectors task
        try:
            queries[name] = load_word_pairs(name, test=40, seed=0, data_dir=args.data_dir).test
        except Exception as error:  # noqa: BLE001 (no data here: it gets plain prompts below)
            logger.info("no demo queries for %r (%s)", name, error)
    plain = [{"input": word, "output": ""} for word in ("hot", "big", "walk", "France", "apple")]  # nothing to score
    queries = {name: queries.get(name) or plain for name in model.peft_config}
    queries[BASE] = [pair for pairs in list(queries.values()) for pair in pairs[:10]]
    with server:
        run_demo(server, queries, args.requests, args.clients, args.max_new_tokens)


if __name__ == "__main__":
    main()
