"""A model's worker process: `python -m voxbus.manager.worker_main --fd N --parent PID`.

The manager starts one per loaded model instance and talks to it over the socket pair whose end
is fd N (voxbus/manager/worker_protocol.py). This process is the only kind that imports a model
library: a segfault, an abort or the OOM killer here costs this model's running request, never
the manager or the other models.

One thread loads the model and runs one job at a time (a llama.cpp context is not thread-safe,
and faster-whisper's lazy segments are consumed where the model runs). It reads the next job
straight off the socket, and between a generation's tokens it looks for a waiting Cancel without
blocking: no reader thread, so no thread hand-off on every job.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

from voxbus.manager import worker_protocol as wp
from voxbus.manager.backends import backend_class
from voxbus.manager.backends.base import (
    Backend, BackendError, ContextTooLong, LlmBackend, LoadSpec, SttBackend, TtsBackend,
)
from voxbus.manager.conversations import ConversationStore

log = logging.getLogger("voxbus.worker")


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the manager goes, even if it goes without closing the socket."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent:  # the manager died before the line above ran
        os._exit(1)


def _load(msg: wp.Load, channel: wp.BlockingChannel) -> Backend:
    spec = LoadSpec(
        model_id=msg.model_id, path=Path(msg.path), config_path=Path(msg.config_path) if msg.config_path else None,
        quantization=msg.quantization, device=msg.device, n_gpu_layers=msg.n_gpu_layers, threads=msg.threads,
        options=dict(msg.options), fingerprint=msg.fingerprint, cache_dir=Path(msg.cache_dir) if msg.cache_dir else None,
    )
    backend = backend_class(msg.backend)()
    backend.load(spec)
    if isinstance(backend, LlmBackend) and msg.conversations and (loader := backend.snapshot_loader()) is not None:
        conf = dict(msg.conversations)
        spill_dir = conf.pop("spill_dir", None)

        def on_event(event: str, conversation: str, nbytes: int, reason: str) -> None:
            channel.send(wp.Cache(event=event, conversation=conversation, bytes=nbytes, reason=reason))

        backend.conversations = ConversationStore(
            **conf, load=loader, on_event=on_event, spill_dir=Path(spill_dir).expanduser() if spill_dir else None)
    return backend


def _loaded(backend: Backend) -> wp.Loaded:
    out = wp.Loaded(pid=os.getpid(), footprint_hint=backend.footprint_hint())
    if isinstance(backend, SttBackend):
        out.sample_rate = backend.sample_rate
        if hasattr(backend, "transcribe_batch"):
            out.batch_max_seconds = float(getattr(backend, "batch_max_seconds", 0.0))
    if isinstance(backend, TtsBackend):
        out.voices = backend.voices()
        out.sample_rate = backend.output_rate()
    return out


def _transcripts(results) -> list[wp.Transcript]:
    return [wp.Transcript(segments=[wp.Segment(s.start, s.end, s.text, [wp.Word(w.word, w.start, w.end, w.probability)
                                                                           for w in s.words]) for s in r.segments],
                          language=r.language, duration=r.duration) for r in results]


class Runner:
    def __init__(self, backend: Backend, channel: wp.BlockingChannel) -> None:
        self.backend = backend
        self.channel = channel
        self.stop = False  # a Stop (or the manager's end of the socket) arrived during a job

    def serve(self) -> None:
        """Run jobs as they come until Stop or end of stream."""
        while not self.stop:
            msg = self.channel.recv()
            if msg is None or isinstance(msg, wp.Stop):
                return
            if not isinstance(msg, wp.Cancel):  # a Cancel that came after its job had finished
                self.run(msg)

    def cancelled(self, job: int) -> bool:
        """Between tokens: take every frame already waiting; True once this job is to stop."""
        stop = self.stop
        while not stop and self.channel.waiting():
            msg = self.channel.recv()
            if msg is None or isinstance(msg, wp.Stop):
                self.stop = stop = True
            elif isinstance(msg, wp.Cancel) and msg.job == job:
                stop = True
        return stop

    def run(self, job: wp.Job) -> None:
        started = time.perf_counter()
        try:
            out = self._call(job)
        except ContextTooLong as exc:
            self.channel.send(wp.Failed(job=job.job, kind="context_length", message=str(exc)))
            return
        except BackendError as exc:
            self.channel.send(wp.Failed(job=job.job, kind="bad_input", message=str(exc)))
            return
        except Exception as exc:  # a library failure: this request fails, the worker serves on
            log.exception("job %d failed", job.job)
            self.channel.send(wp.Failed(job=job.job, kind="failed", message=f"{type(exc).__name__}: {exc}"))
            return
        out.infer_ms = (time.perf_counter() - started) * 1000
        self.channel.send(out)

    def _call(self, job: wp.Job) -> wp.Result:
        b = self.backend
        match job:
            case wp.Transcribe(audios=audios, language=language, options=options, batch=batch):
                arrays = [np.frombuffer(a, dtype=np.float32) for a in audios]
                if batch:
                    results = b.transcribe_batch(arrays, language, options)
                else:
                    results = [b.transcribe(arrays[0], language, options)]
                return wp.Result(job=job.job, infer_ms=0, transcripts=_transcripts(results))
            case wp.Synthesize(text=text, voice=voice, options=options):
                res = b.synthesize(text, voice, options, lambda: self.channel.send(wp.Progress(job=job.job)))
                return wp.Result(job=job.job, infer_ms=0, audio=np.asarray(res.audio, dtype=np.float32).tobytes(),
                                 sample_rate=res.sample_rate)
            case wp.Generate():
                n = job.job

                def on_text(text: str) -> None:
                    self.channel.send(wp.Text(job=n, text=text))

                stopped = False

                def cancelled() -> bool:
                    nonlocal stopped
                    stopped = stopped or self.cancelled(n)
                    return stopped

                res = b.generate(job.prompt, job.messages, job.options, on_text, cancelled, job.conversation)
                return wp.Result(job=n, infer_ms=0, text=res.text, prompt_tokens=res.prompt_tokens,
                                 completion_tokens=res.completion_tokens, cached_tokens=res.cached_tokens,
                                 finish_reason=res.finish_reason)
        raise BackendError(f"unknown job {type(job).__name__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxbus-worker")
    parser.add_argument("--fd", type=int, help="this end of the socket pair to the manager")
    parser.add_argument("--parent", type=int, help="the manager's pid")
    parser.add_argument("--probe-cuda", metavar="BACKEND", help="print 1 if the backend's library can use CUDA, else 0")
    args = parser.parse_args(argv)
    if args.probe_cuda:
        sys.stdout.write(f"{int(backend_class(args.probe_cuda).supports_cuda())}\n")
        return 0
    if args.fd is None or args.parent is None:
        parser.error("--fd and --parent are required")
    _die_with_parent(args.parent)
    # Ctrl-C in a terminal reaches the whole process group: the manager ends its workers itself,
    # after they have saved their state, so the worker must not die of it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()  # a native crash leaves its Python stack on stderr: the crash event shows it
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    channel = wp.BlockingChannel(socket.socket(fileno=args.fd))
    first = channel.recv()
    if not isinstance(first, wp.Load):
        log.error("expected a Load message, got %r", first)
        return 2
    try:
        backend = _load(first, channel)
    except BackendError as exc:
        channel.send(wp.Failed(kind="bad_input", message=str(exc)))
        return 1
    except Exception as exc:
        log.exception("loading %s failed", first.model_id)
        channel.send(wp.Failed(kind="failed", message=f"{type(exc).__name__}: {exc}"))
        return 1
    channel.send(_loaded(backend))
    try:
        Runner(backend, channel).serve()
    except (OSError, ValueError, msgspec.DecodeError) as exc:
        log.error("manager channel broken: %s", exc)
    try:
        backend.unload()  # an LLM spills its conversation states here, when spilling is on
    except Exception:
        log.exception("unloading failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
