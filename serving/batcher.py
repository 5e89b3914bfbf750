"""Server-side batching: concurrent requests to one signature merged into one model call.

The queue follows TF-Serving's SharedBatchScheduler (tensorflow/core/kernels/batching_util/
shared_batch_scheduler.h) as its BatchingSession uses it:
- one queue per signature of a loaded version (and per shape after the batch axis): requests to
  different versions never share a batch, so a request is answered by the version it was sent to,
  even if a newer version replaces it while the request waits;
- a queue is a row of batches, the last one open. A request joins the open batch if it fits in
  its limit (`max_batch_size` rows; `max_execution_batch_size` when splitting), else the open batch
  is closed and a new one opened. With
  `max_enqueued_batches` batches in the queue (the open one counted, those running not), a request
  that does not fit is refused: UNAVAILABLE, "The batch scheduling queue to which this task was
  submitted is full; ..." (HTTP 503);
- `num_batch_threads` threads take closed batches, or the open one once it is full or its oldest
  request has waited `batch_timeout_micros`, round-robin over the queues;
- a request larger than `max_batch_size` is refused (INVALID_ARGUMENT, "Task size N is larger than
  maximum input batch size M"), as TF-Serving does; with `enable_large_batch_splitting` a request
  up to `max_batch_size` is split over batches of `max_execution_batch_size` rows and its rows are
  put back together;
- a batch is padded up to the next of `allowed_batch_sizes` with copies of its last request's first
  row, as TF-Serving does.

Each request is checked against its signature (names, dtypes, shapes, value ranges) before it joins
a batch, so a bad request fails alone, with its own message. What only the model can find (say, an
image that does not decode) fails the merged call: then each request of that batch is run alone, so
its neighbours still get their answers and only the bad one gets the error."""

import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError

import numpy as np

from coophash_keras.serving.errors import ServingError, invalid

log = logging.getLogger("coophash.serving")


def run_alone(signature, inputs, output_filter=None):
    """One request on its own: Batcher.run's contract without batching."""
    return signature.run(inputs, output_filter)


class _Request:
    """One caller's request; its rows may travel in several pieces (large batch splitting)."""

    __slots__ = ("future", "parts", "remaining", "lock")

    def __init__(self, num_parts):
        self.future = Future()
        self.parts = [None] * num_parts
        self.remaining = num_parts
        self.lock = threading.Lock()

    def part_done(self, index, outputs):
        with self.lock:
            if self.future.done():
                return
            self.parts[index] = outputs
            self.remaining -= 1
            if self.remaining:
                return
        # the caller may cancel (a REST client gone, shutdown) between done() above and here
        with contextlib.suppress(InvalidStateError):
            if len(self.parts) == 1:
                self.future.set_result(self.parts[0])
            else:
                self.future.set_result({k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]})

    def fail(self, exc):
        with self.lock:
            if self.future.done():
                return
        with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
            self.future.set_exception(exc)


class _Piece:
    __slots__ = ("request", "index", "inputs", "size")

    def __init__(self, request, index, inputs, size):
        self.request, self.index, self.inputs, self.size = request, index, inputs, size


class _Queue:
    """The batches of one (signature, shapes after the batch axis); the last one is open."""

    def __init__(self, key, signature):
        self.key, self.signature = key, signature
        self.batches = deque([[]])
        self.sizes = deque([0])
        self.open_since = 0.0  # time.monotonic() of the open batch's first piece
        self.running = 0

    def empty(self):
        return self.running == 0 and len(self.batches) == 1 and not self.batches[0]

    def start_new_batch(self):
        self.batches.append([])
        self.sizes.append(0)

    def add(self, piece, now):
        if not self.batches[-1]:
            self.open_since = now
        self.batches[-1].append(piece)
        self.sizes[-1] += piece.size


class Batcher:
    """Runs signatures on merged batches of concurrent requests; see the module docstring.

    Args:
        params: a coophash_keras.serving.batching_config.BatchingParameters.
    """

    def __init__(self, params):
        self.params = params
        self._timeout = params.batch_timeout_micros / 1e6
        self._queues = {}  # (signature, shapes) -> _Queue; a queue goes once it is empty
        self._order = deque()  # round-robin order of the queues' keys
        self._cond = threading.Condition()
        self._stopping = False
        # for the log line at stop (and benchmarks): batches and rows run, and the seconds the batch
        # threads spent running them (the model calls, and any one-by-one reruns of a failed batch)
        self.batches_run = self.rows_run = 0
        self.batch_seconds = 0.0
        self._threads = [
            threading.Thread(target=self._thread_loop, name=f"{params.thread_pool_name}_{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self):
        """Let the threads finish what is queued, then end."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.batches_run:
            log.info(
                "batching: %d batches, %d rows, %.1f rows per batch on average, %.2f ms per batch",
                *(self.batches_run, self.rows_run, self.rows_run / self.batches_run),
                self.batch_seconds / self.batches_run * 1e3,
            )

    # ------------------------------------------------------------------------------ callers
    def run(self, signature, inputs, output_filter=None):
        """Signature.run's contract (inputs by name -> outputs by name, ServingError on a bad
        request), answered from a merged batch. Blocks the calling thread until its rows are back."""
        return self.submit(signature, inputs, output_filter).result()

    def submit(self, signature, inputs, output_filter=None):
        """-> a concurrent.futures.Future of the outputs. Bad requests raise here, before queueing."""
        signature.check_output_filter(output_filter)
        arrays = signature.check(inputs)
        sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(sizes) != 1 or None in sizes:
            raise invalid(
                "Batching session Run() input tensors must have equal 0th-dimension size, got "
                + ", ".join(f"{k}: {list(a.shape)}" for k, a in sorted(arrays.items()))
            )
        (size,) = sizes
        if size == 0:  # nothing to merge: answer at once, as the model would
            return _done(signature.call(arrays, output_filter))
        key = (signature, tuple(sorted((k, a.shape[1:], a.dtype.str) for k, a in arrays.items())))
        request = self._schedule(key, signature, arrays, size)
        if not output_filter:
            return request.future
        filtered = Future()

        def pick(done):
            exc = done.exception()
            if exc is not None:
                filtered.set_exception(exc)
            else:
                filtered.set_result({k: done.result()[k] for k in output_filter})

        request.future.add_done_callback(pick)
        return filtered

    def _schedule(self, key, signature, arrays, size):
        p = self.params
        if size > p.max_batch_size:
            raise invalid(f"Task size {size} is larger than maximum input batch size {p.max_batch_size}")
        limit = p.batch_size_limit
        with self._cond:
            if self._stopping:
                raise ServingError("UNAVAILABLE", "the server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key, signature)
                self._order.append(key)
            open_size = queue.sizes[-1]
            if p.enable_large_batch_splitting:
                capacity = (p.max_enqueued_batches - len(queue.batches)) * limit + (limit - open_size)
                if size > capacity:
                    raise ServingError(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted is full; task size is "
                        f"{size} but scheduling capacity is only {capacity} (num_enqueued_batches="
                        f"{len(queue.batches)}, max_enqueued_batches={p.max_enqueued_batches}, "
                        f"open_batch_size={open_size}, max_execution_batch_size={limit})",
                    )
                room = limit - open_size
                cuts = [min(size, room)] if room > 0 else []
                while sum(cuts) < size:
                    cuts.append(min(limit, size - sum(cuts)))
            else:
                if open_size + size > limit and len(queue.batches) >= p.max_enqueued_batches:
                    raise ServingError(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted is full; currently "
                        f"{len(queue.batches)} batches enqueued and max_enqueued_batches is {p.max_enqueued_batches}",
                    )
                cuts = [size]
            request = _Request(len(cuts))
            now, start = time.monotonic(), 0
            for index, cut in enumerate(cuts):
                part = arrays if cut == size else {k: a[start : start + cut] for k, a in arrays.items()}
                if queue.sizes[-1] + cut > limit:
                    queue.start_new_batch()
                queue.add(_Piece(request, index, part, cut), now)
                start += cut
            self._cond.notify()
        return request

    # ------------------------------------------------------------------------ batch threads
    def _thread_loop(self):
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    queue, batch, wait = self._next_batch(now)
                    if batch is not None:
                        break
                    if self._stopping:
                        if not self._queues:
                            return
                        wait = 0.01  # a batch still runs elsewhere; its queue goes when it is done
                    self._cond.wait(wait)
            start = time.perf_counter()
            try:
                self._process(queue.signature, batch)
            finally:
                with self._cond:
                    self.batch_seconds += time.perf_counter() - start
                    self.batches_run += 1
                    self.rows_run += sum(piece.size for piece in batch)
                    queue.running -= 1
                    self._drop_if_empty(queue)

    def _next_batch(self, now):
        """-> (queue, batch, None) for the next batch to run (round-robin over the queues), or
        (None, None, seconds to wait) when none is ready."""
        wait = None
        for _ in range(len(self._order)):
            key = self._order[0]
            self._order.rotate(-1)
            queue = self._queues[key]
            if len(queue.batches) == 1:  # only the open batch: ready if full, timed out or stopping
                if not queue.batches[0]:
                    continue
                due = queue.open_since + self._timeout
                if queue.sizes[0] < self.params.batch_size_limit and now < due and not self._stopping:
                    wait = due - now if wait is None else min(wait, due - now)
                    continue
                queue.start_new_batch()
            queue.sizes.popleft()
            queue.running += 1
            return queue, queue.batches.popleft(), None
        return None, None, wait

    def _drop_if_empty(self, queue):
        if queue.empty() and self._queues.get(queue.key) is queue:
            del self._queues[queue.key]
            self._order.remove(queue.key)

    def _process(self, signature, pieces):
        try:
            outputs = self._call(signature, pieces)
        except ServingError as exc:
            if len(pieces) == 1:
                pieces[0].request.fail(exc)
                return
            # Something only the model could find (e.g. an image that does not decode) failed the
            # merged call: run each request alone, so that only the bad one fails.
            log.debug("a batch of %d requests failed (%s): running them one by one", len(pieces), exc.message)
            for piece in pieces:
                self._process(signature, [piece])
            return
        except Exception as exc:  # a bug of ours: every caller still gets an answer
            log.exception("batch failed")
            for piece in pieces:
                piece.request.fail(ServingError("INTERNAL", f"Internal error: {exc}"))
            return
        start = 0
        for piece in pieces:
            piece.request.part_done(piece.index, {k: v[start : start + piece.size] for k, v in outputs.items()})
            start += piece.size

    def _call(self, signature, pieces):
        """Merged inputs (padded to an allowed batch size) -> the signature's outputs."""
        total = sum(p.size for p in pieces)
        padded = self.params.padded_size(total)
        names = pieces[0].inputs
        if len(pieces) == 1 and padded == total:
            merged = pieces[0].inputs
        else:
            merged = {}
            for name in names:
                parts = [p.inputs[name] for p in pieces]
                if padded > total:
                    parts.append(np.repeat(parts[-1][:1], padded - total, axis=0))
                merged[name] = np.concatenate(parts)
        outputs = signature.call(merged)
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != padded:
                raise ServingError(
                    "INTERNAL", f"output '{name}' has shape {list(value.shape)}: no batch axis of {padded} rows"
                )
        return outputs


def _done(value):
    future = Future()
    future.set_result(value)
    return future
