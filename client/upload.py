"""Uploading shard files into canisters: chunked, parallel, resumable, verified.

Every canister that holds a shard (yblock and head) has the same upload methods
(canisters/yblock/shard_store.py): `upload_chunk(name, offset, blob)` appends, `upload_status`
(a query) says how many bytes it holds, `upload_commit(name, size)` returns the sha256 the
canister computed over the bytes it holds, and `load` reads the committed file.

For each shard the uploader
1. checks the local file against the manifest's sha256 (nothing is sent from a damaged export);
2. asks the canister what it holds and verifies those bytes by their sha256 (`upload_commit` at
   the held size), then sends only the rest: this is the resume;
3. sends chunks of at most CHUNK_BYTES, so each update call stays under the 2 MiB ingress limit;
4. calls `load` only once the canister's sha256 of the whole file (`upload_commit`) equals the
   manifest's. If it does not, it finds the corrupted chunk by sending the chunks again, which the
   canister compares with what it holds, and the error names the shard and that chunk.
A chunk costs one update call, so one round: verifying after every chunk would cost a second
round per chunk and halve the upload rate, for a failure that the final check also catches.

Calls that fail transiently (reject code 2 SYS_TRANSIENT, HTTP 5xx or 429, a lost connection)
are retried with exponential backoff for about 6 seconds, then the upload gives up and says why
(a network that is gone, or one that cannot write its state, does not come back by waiting);
retrying is safe because every upload method is idempotent (a chunk sent twice is compared with
the bytes held and changes nothing). Several canisters upload in parallel, one thread per shard,
under one progress bar counting bytes per second. Ctrl-C stops every upload at once: the
threads are daemons, and a waiting retry ends with the interrupt.

The calls go through client.agent's canisters, over HTTP with icp-py-core or in-process with
replica.inprocess.LocalClient (`CanisterShardTarget`), so `icllama deploy` and the in-process
pipeline share this one implementation.

Run standalone as `python -m client.upload .icllama/local/shards/MODEL/manifest.json` after a
deploy (see --help): it uploads into the canisters of `.icllama/<network>/canister_ids.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

from client.errors import UserError

INGRESS_LIMIT_BYTES = 2 * 1024 * 1024
# Room for the method name, the Candid header, the shard name (at most 255 bytes), the offset
# and the blob's length, so that a whole upload_chunk message is at most INGRESS_LIMIT_BYTES.
CALL_OVERHEAD_BYTES = 1024
CHUNK_BYTES = INGRESS_LIMIT_BYTES - CALL_OVERHEAD_BYTES
READ_BYTES = 8 * 1024 * 1024

T = TypeVar("T")


# --- what is uploaded where ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardFile:
    label: str  # the canister's name in dfx.json ("yblock_2"), for messages
    name: str  # the name the canister stores the file under (the file's name)
    path: Path
    size: int
    sha256: str  # from the export's manifest


@dataclass(frozen=True)
class HeldUpload:
    """What a canister holds of a shard (its upload_status)."""

    held: int
    sha256: str | None  # of the held bytes, if committed at this size
    loaded: bool


class UploadRefused(Exception):
    """The canister answered an upload method with its `err` variant; the text says why."""


class ShardTarget(Protocol):
    """One canister's upload methods, whatever the transport."""

    canister_id: str

    def upload_status(self, name: str) -> HeldUpload: ...

    def upload_chunk(self, name: str, offset: int, data: bytes) -> int:
        """Returns the bytes held afterwards; raises UploadRefused."""

    def upload_commit(self, name: str, size: int) -> str:
        """Returns the sha256 (hex) of the `size` bytes held; raises UploadRefused."""

    def load(self) -> Any:
        """Loads the committed shard; raises UploadRefused."""


@dataclass(frozen=True)
class Retry:
    """Backoff for transient failures: delays initial, initial*factor, ... capped at max_delay."""

    attempts: int = 6  # 0.25 + 0.5 + 1 + 2 + 2 = 5.75 s of waiting in all
    initial_s: float = 0.25
    factor: float = 2.0
    max_delay_s: float = 2.0

    def delays(self) -> list[float]:
        return [min(self.initial_s * self.factor**i, self.max_delay_s) for i in range(self.attempts - 1)]


@dataclass(frozen=True)
class UploadResult:
    label: str
    canister_id: str
    size: int
    bytes_sent: int  # blob bytes sent in upload_chunk calls (resends after retries included)
    bytes_resumed: int  # bytes the canister already held and verified, not sent again
    chunks: int
    retries: int
    seconds: float
    outcome: str  # "uploaded", "resumed", "already loaded" or "loaded" (committed earlier, loaded now)


class UploadError(UserError):
    """An upload failed; the message names the shard (and the chunk) and what to do."""

    def __init__(self, message: str, label: str | None = None):
        super().__init__(message)
        self.label = label


class HeldBytesDiffer(UploadError):
    """Found before sending: the canister holds (or has loaded) bytes of another file. They
    cannot be resumed and the canister refuses to overwrite them, so it must be reinstalled
    (deploy does that and uploads again)."""


class ChunkCorrupted(UploadError):
    """A chunk arrived different from the file (the canister's sha256 disagrees after it)."""


class UploadsFailed(UploadError):
    """Some shards failed: `errors` has one UploadError per failed shard, `results` the others'."""

    def __init__(self, errors: list[UploadError], results: list[UploadResult]):
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors
        self.results = results


# --- the upload of one shard ---------------------------------------------------------------------------
@dataclass
class _Progress:
    bar: Any
    lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, n: int) -> None:
        with self.lock:
            self.bar.update(n)


def _file_digests(path: Path, prefix: int) -> tuple[Any, str]:
    """(sha256 state after the first `prefix` bytes, hex sha256 of the whole file)."""
    hasher = hashlib.sha256()
    at_prefix = hasher.copy() if prefix == 0 else None
    with open(path, "rb") as f:
        position = 0
        while True:
            want = READ_BYTES if at_prefix is not None else min(READ_BYTES, prefix - position)
            block = f.read(want)
            if not block:
                break
            hasher.update(block)
            position += len(block)
            if at_prefix is None and position == prefix:
                at_prefix = hasher.copy()
    if at_prefix is None:
        raise UploadError(f"{path} has {position} bytes, fewer than the {prefix} its canister holds")
    return at_prefix, hasher.hexdigest()


def _chunk(offset: int, size: int) -> str:
    return f"chunk {offset // CHUNK_BYTES} (bytes {offset}..{offset + size})"


@dataclass
class _ShardUpload:
    shard: ShardFile
    target: ShardTarget
    retry: Retry
    sleep: Callable[[float], None]
    gave_up: threading.Event  # set once any shard has given up on the network: the others stop retrying
    retries: int = 0

    def fail(self, kind: type[UploadError], message: str) -> UploadError:
        where = f"shard {self.shard.label} ({self.shard.name} -> canister {self.target.canister_id})"
        return kind(f"{where}: {message}", self.shard.label)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        from client.agent import is_transient

        delays = self.retry.delays()
        for attempt in range(len(delays) + 1):
            try:
                return fn()
            except UploadRefused as e:
                raise self.fail(UploadError, f"{what} was refused: {e}") from None
            except Exception as e:
                if not is_transient(e):
                    raise self.fail(UploadError, f"{what} failed: {e}") from None
                if attempt == len(delays) or self.gave_up.is_set():
                    self.gave_up.set()
                    raise self.fail(UploadError, f"{what} still failed after {attempt + 1} attempts ({e}); "
                                    "re-run the upload when the network is healthy: it resumes") from None
                self.retries += 1
                self.sleep(delays[attempt])
        raise AssertionError("unreachable")

    def status(self) -> HeldUpload:
        return self.call("upload_status", lambda: self.target.upload_status(self.shard.name))

    def run(self, held: HeldUpload, progress: _Progress) -> UploadResult:
        shard, start = self.shard, time.perf_counter()
        if held.loaded:
            if held.sha256 == shard.sha256 and held.held == shard.size:
                return self._result(0, 0, 0, start, "already loaded")
            raise self.fail(HeldBytesDiffer, f"the canister has loaded other bytes (sha256 {held.sha256}) than the "
                            f"manifest's {shard.sha256}; reinstall the canister to upload this shard")
        if held.held > shard.size:
            raise self.fail(HeldBytesDiffer, f"the canister holds {held.held} bytes, more than the file's "
                            f"{shard.size}: it holds another file; reinstall the canister to upload this one")
        prefix, file_sha256 = _file_digests(shard.path, held.held)
        if file_sha256 != shard.sha256:
            raise self.fail(UploadError, f"the file's sha256 {file_sha256} is not the manifest's {shard.sha256}; "
                            "the export is damaged: export the shards again (nothing was sent)")
        if held.held and (held.sha256 or self._commit(held.held)) != prefix.hexdigest():
            raise self.fail(HeldBytesDiffer, f"the {held.held} bytes the canister holds differ from the file's in "
                            f"{self._locate(held.held)}; they cannot be resumed and the canister does not overwrite "
                            "them: reinstall the canister and upload again (`icllama deploy` does both)")
        sent, chunks = self._send(held.held, progress)
        if sent and self._commit(shard.size) != shard.sha256:
            raise self.fail(ChunkCorrupted, f"{self._locate(shard.size)} is corrupted: the canister's sha256 of the "
                            f"file differs from the manifest's {shard.sha256}. The shard was not loaded; re-run "
                            "`icllama deploy`, which reinstalls that canister and uploads the shard again")
        self.call("load", self.target.load)
        outcome = "loaded" if sent == 0 else "resumed" if held.held else "uploaded"
        return self._result(sent, held.held, chunks, start, outcome)

    def _commit(self, size: int) -> str:
        """The canister's sha256 of the `size` bytes it holds."""
        return self.call(f"upload_commit at {size} bytes", lambda: self.target.upload_commit(self.shard.name, size))

    def _send(self, offset: int, progress: _Progress) -> tuple[int, int]:
        """Sends the file from `offset` on, in order; returns (bytes sent, chunks sent)."""
        shard, sent, chunks = self.shard, 0, 0
        with open(shard.path, "rb") as f:
            f.seek(offset)
            while offset < shard.size:
                data = f.read(CHUNK_BYTES)
                chunk = _chunk(offset, len(data))
                held = self.call(f"upload_chunk of {chunk}",
                                 lambda d=data, o=offset: self.target.upload_chunk(shard.name, o, d))
                if held != offset + len(data):
                    raise self.fail(UploadError, f"after {chunk} the canister holds {held} bytes, not "
                                    f"{offset + len(data)}; re-run the upload to resume from what it holds")
                sent += len(data)
                chunks += 1
                offset = held
                progress.advance(len(data))
        return sent, chunks

    def _locate(self, limit: int) -> str:
        """The first chunk below `limit` whose bytes in the canister differ from the file's. Found by
        sending the file's chunks again: the canister compares a chunk with the bytes it holds at
        its offset and refuses one that differs, except at offset 0, where a differing chunk starts
        the file over (it then holds fewer bytes, and exactly the file's first chunk)."""
        def compare(offset: int, data: bytes) -> int | UploadRefused:
            try:
                return self.target.upload_chunk(self.shard.name, offset, data)
            except UploadRefused as refusal:
                return refusal

        with open(self.shard.path, "rb") as f:
            for offset in range(0, limit, CHUNK_BYTES):
                data = f.read(min(CHUNK_BYTES, limit - offset))
                answer = self.call(f"upload_chunk of {_chunk(offset, len(data))} (comparing)",
                                   lambda o=offset, d=data: compare(o, d))
                if isinstance(answer, UploadRefused) or (offset == 0 and answer < limit):
                    return _chunk(offset, len(data))
        if self._commit(limit) == _file_digests(self.shard.path, limit)[0].hexdigest():
            return _chunk(0, min(CHUNK_BYTES, limit))  # a one-chunk file: its chunk 0 was replaced
        raise self.fail(UploadError, f"the canister's sha256 of its {limit} bytes differs from the file's, yet each "
                        "chunk compares equal; reinstall the canister and upload again")

    def _result(self, sent: int, resumed: int, chunks: int, start: float, outcome: str) -> UploadResult:
        return UploadResult(self.shard.label, self.target.canister_id, self.shard.size, sent, resumed, chunks,
                            self.retries, time.perf_counter() - start, outcome)


def upload_shards(jobs: Sequence[tuple[ShardFile, ShardTarget]], parallel: int = 4, progress: bool = True,
                  retry: Retry = Retry(), sleep: Callable[[float], None] | None = None) -> list[UploadResult]:
    """Uploads, verifies and loads every shard, `parallel` canisters at a time. Shards that fail
    do not stop the others; their errors are raised together at the end, each naming its shard.
    `sleep` waits between retries (default: a wait that a KeyboardInterrupt ends at once)."""
    interrupted = threading.Event()

    def wait(seconds: float) -> None:
        if interrupted.wait(seconds):
            raise UploadError("interrupted", "")

    gave_up = threading.Event()
    uploads = [_ShardUpload(shard, target, retry, sleep or wait, gave_up) for shard, target in jobs]
    helds = [u.status() for u in uploads]
    remaining = sum(0 if h.loaded else max(u.shard.size - h.held, 0) for u, h in zip(uploads, helds, strict=True))
    results: list[UploadResult | None] = [None] * len(uploads)
    errors: list[UploadError] = []
    with tqdm(total=remaining, unit="B", unit_scale=True, unit_divisor=1024, desc="upload", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        shared = _Progress(bar)

        pending = list(range(len(uploads)))
        crashed: list[BaseException] = []

        def worker() -> None:
            while pending and not interrupted.is_set():
                try:
                    i = pending.pop(0)
                except IndexError:
                    return
                try:
                    results[i] = uploads[i].run(helds[i], shared)
                except UploadError as e:
                    errors.append(e)
                except BaseException as e:  # noqa: BLE001 - raised again in the calling thread
                    crashed.append(e)
                    interrupted.set()

        # Daemon threads, so that Ctrl-C in the main thread ends the process without waiting for
        # calls in flight (ThreadPoolExecutor's workers would be joined at exit).
        workers = [threading.Thread(target=worker, name=f"upload-{n}", daemon=True)
                   for n in range(max(1, min(parallel, len(uploads))))]
        for thread in workers:
            thread.start()
        try:
            for thread in workers:
                while thread.is_alive():
                    thread.join(0.2)
        except BaseException:
            interrupted.set()
            raise
        if crashed:
            raise crashed[0]
    done = [r for r in results if r is not None]
    if errors:
        raise UploadsFailed(errors, done)
    return done


# --- transports ----------------------------------------------------------------------------------------
def _ok(reply: dict[str, Any], method: str) -> Any:
    if "err" in reply:
        raise UploadRefused(reply["err"])
    if "ok" not in reply:
        raise UploadRefused(f"{method} replied {reply!r}, neither ok nor err")
    return reply["ok"]


@dataclass(frozen=True)
class CanisterShardTarget:
    """The upload methods of a canister reached through client.agent (over HTTP or in-process)."""

    canister: Any  # client.agent.Canister

    @property
    def canister_id(self) -> str:
        return self.canister.canister_id.to_text()

    def upload_status(self, name: str) -> HeldUpload:
        reply = self.canister.query("upload_status", name)
        return HeldUpload(int(reply["held"]), reply["sha256"], bool(reply["loaded"]))

    def upload_chunk(self, name: str, offset: int, data: bytes) -> int:
        return int(_ok(self.canister.update("upload_chunk", name, offset, data), "upload_chunk"))

    def upload_commit(self, name: str, size: int) -> str:
        return _ok(self.canister.update("upload_commit", name, size), "upload_commit")

    def load(self) -> Any:
        return _ok(self.canister.update("load"), "load")


# --- python -m client.upload ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from client.agent import RemoteCanisters, connect, resolve_network
    from client.commands.deploy import dfx_json_path
    from client.deploy import CanisterIds, read_dfx
    from client.identity import IdentityStore
    from sharding.export import ExportError, read_export

    parser = argparse.ArgumentParser(
        prog="python -m client.upload",
        description="Upload exported shards into their deployed canisters: resumed from what each canister "
                    "holds, verified by sha256, then loaded.")
    parser.add_argument("manifest", type=Path, help="the export's manifest.json")
    parser.add_argument("--network", default="local", help="`local` (default) or the URL of an IC HTTP interface")
    parser.add_argument("--identity", help="identity name or PEM path: a controller of the canisters")
    parser.add_argument("--state-dir", type=Path,
                        help="where <network>/canister_ids.json is (default: .icllama, or the state directory of "
                             "the local network running elsewhere)")
    parser.add_argument("--canister-ids", type=Path,
                        help="a canister_ids.json to read the ids from instead (its `local` entries for a URL)")
    parser.add_argument("--dfx-json", type=Path,
                        help="names each canister's .did (default: ./dfx.json if it exists, else the one "
                             "`icllama deploy` wrote, <state dir>/<network>/dfx.json)")
    parser.add_argument("--parallel", type=int, default=4, help="canisters uploading at once (default 4)")
    parser.add_argument("--only", action="append", default=[], help="upload only this canister (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    try:
        export = read_export(args.manifest)
        target = resolve_network(args.network, args.state_dir, args.dfx_json or Path("dfx.json"))
        print(f"uploading to {target.describe()}", file=sys.stderr)
        ids_file = (CanisterIds(args.canister_ids, "local") if args.canister_ids
                    else CanisterIds.of(target.state_dir, target.name))
        dfx_json = dfx_json_path(args.dfx_json, target)
        ids, entries = ids_file.read(), read_dfx(dfx_json)
        canisters = RemoteCanisters(connect(target.url, IdentityStore.from_environment().resolve(args.identity)))
        jobs = []
        for f in export.files:
            if args.only and f.shard not in args.only:
                continue
            if f.shard not in ids or f.shard not in entries:
                raise UserError(f"{f.shard} has no canister in {ids_file.path} "
                                f"or no entry in {dfx_json}; deploy first (`icllama deploy`)")
            canister = canisters.canister(ids[f.shard], entries[f.shard].did)
            jobs.append((ShardFile(f.shard, f.file, export.directory / f.file, f.size, f.sha256),
                         CanisterShardTarget(canister)))
        results = upload_shards(jobs, parallel=args.parallel)
    except (UserError, ExportError) as e:
        print(f"upload: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("upload: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    else:
        for r in results:
            print(f"{r.label:10} {r.canister_id}  {r.outcome:14} {r.bytes_sent:>12,} B sent  "
                  f"{r.bytes_resumed:>12,} B resumed  {r.retries} retries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
