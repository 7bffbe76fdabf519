"""The uploader against the real replica, in-process: chunking under the ingress limit, resume
after a kill (counting the bytes sent again), a corrupted chunk named and never loaded, retries
of transient failures with backoff, parallel canisters, and a damaged export refused."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cdk.principal import Principal
from client.agent import LocalCanister, TransportFailed
from client.upload import (
    CHUNK_BYTES,
    INGRESS_LIMIT_BYTES,
    CanisterShardTarget,
    ChunkCorrupted,
    HeldBytesDiffer,
    Retry,
    ShardFile,
    UploadError,
    UploadsFailed,
    upload_shards,
)
from replica.inprocess import CallFailed, LocalClient
from replica.network import Network

BLOB_CLASS = "tests.canisters_for_tests.shard_blob:ShardBlob"
NO_WAIT = Retry(attempts=4, initial_s=0.5, factor=2.0, max_delay_s=1.5)


class Killed(BaseException):
    """Stands for the uploading process dying: nothing after it runs, no handler sees it."""


@dataclass
class Recorder:
    """Wraps a ShardTarget: counts what is sent and injects faults at chosen calls."""

    inner: CanisterShardTarget
    sent: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) per upload_chunk delivered
    kill_after_chunks: int | None = None  # die once this many chunks were delivered, before their reply
    kill_at_load: bool = False  # die instead of calling load
    corrupt_chunk_at: int | None = None  # flip a byte of the first chunk sent at this offset
    transient_failures: list[Exception] = field(default_factory=list)  # raised by the next upload_chunk calls

    @property
    def canister_id(self) -> str:
        return self.inner.canister_id

    def upload_status(self, name):
        return self.inner.upload_status(name)

    def upload_chunk(self, name, offset, data):
        if self.transient_failures:
            raise self.transient_failures.pop(0)
        assert len(data) <= CHUNK_BYTES
        if offset == self.corrupt_chunk_at:
            data, self.corrupt_chunk_at = bytes([data[0] ^ 0xFF]) + data[1:], None
        held = self.inner.upload_chunk(name, offset, data)
        self.sent.append((offset, len(data)))
        if len(self.sent) == self.kill_after_chunks:
            raise Killed
        return held

    def upload_commit(self, name, size):
        return self.inner.upload_commit(name, size)

    def load(self):
        if self.kill_at_load:
            raise Killed
        return self.inner.load()

    @property
    def bytes_sent(self) -> int:
        return sum(n for _, n in self.sent)


@pytest.fixture
def network(tmp_path: Path) -> Network:
    return Network(tmp_path / "state")


def blob_canister(network: Network) -> tuple[LocalClient, Principal]:
    client = LocalClient(network)  # one client per canister: uploads run on parallel threads
    return client, client.install(BLOB_CLASS)


def shard_file(tmp_path: Path, label: str, size: int, seed: int = 0) -> ShardFile:
    data = hashlib.shake_256(f"{label}:{seed}".encode()).digest(size)
    path = tmp_path / f"{label}.gguf"
    path.write_bytes(data)
    return ShardFile(label, path.name, path, size, hashlib.sha256(data).hexdigest())


def recorder(network: Network) -> Recorder:
    return Recorder(CanisterShardTarget(LocalCanister(*blob_canister(network))))


def status_of(target: Recorder, shard: ShardFile):
    return target.inner.upload_status(shard.name)


def test_upload_chunks_under_the_ingress_limit_verifies_and_loads(network, tmp_path):
    shard = shard_file(tmp_path, "yblock_0", 2 * CHUNK_BYTES + 12345)
    target = recorder(network)
    (result,) = upload_shards([(shard, target)], progress=False)
    assert result.outcome == "uploaded" and result.bytes_sent == shard.size and result.chunks == 3
    assert [n for _, n in target.sent] == [CHUNK_BYTES, CHUNK_BYTES, 12345]
    assert CHUNK_BYTES + len("upload_chunk") + 300 <= INGRESS_LIMIT_BYTES  # name, offset and Candid fit beside it
    held = status_of(target, shard)
    assert held.loaded and held.held == shard.size and held.sha256 == shard.sha256
    client, canister = target.inner.canister.client, target.inner.canister.canister_id
    assert client.query(canister, "loads") == 1

    again = recorder_for_same(target)
    (rerun,) = upload_shards([(shard, again)], progress=False)
    assert rerun.outcome == "already loaded" and again.sent == [] and client.query(canister, "loads") == 1


def recorder_for_same(target: Recorder, **faults) -> Recorder:
    return Recorder(target.inner, **faults)


def test_killed_upload_resumes_sending_only_the_missing_bytes(network, tmp_path):
    shard = shard_file(tmp_path, "yblock_1", 5 * CHUNK_BYTES + 777)
    first = recorder(network)
    first.kill_after_chunks = 3
    with pytest.raises(Killed):
        upload_shards([(shard, first)], progress=False)
    held = status_of(first, shard)
    assert held.held == 3 * CHUNK_BYTES and held.sha256 is None and not held.loaded

    second = recorder_for_same(first)
    (result,) = upload_shards([(shard, second)], progress=False)
    missing = shard.size - held.held
    assert second.bytes_sent == missing == result.bytes_sent  # counted at the call, and by the uploader
    assert second.sent[0][0] == held.held  # it started where the canister was
    assert result.bytes_resumed == held.held and result.outcome == "resumed"
    final = status_of(second, shard)
    assert final.loaded and final.sha256 == shard.sha256


def test_killed_before_load_only_loads_on_the_rerun(network, tmp_path):
    shard = shard_file(tmp_path, "yblock_1", 2 * CHUNK_BYTES)
    first = recorder(network)
    first.kill_at_load = True
    with pytest.raises(Killed):
        upload_shards([(shard, first)], progress=False)
    assert status_of(first, shard).sha256 == shard.sha256  # committed, verified, not loaded
    second = recorder_for_same(first)
    (result,) = upload_shards([(shard, second)], progress=False)
    assert result.outcome == "loaded" and second.sent == [] and status_of(second, shard).loaded


def test_corrupted_chunk_is_named_and_the_shard_never_loaded(network, tmp_path):
    shard = shard_file(tmp_path, "yblock_2", 4 * CHUNK_BYTES)
    target = recorder(network)
    target.corrupt_chunk_at = CHUNK_BYTES
    with pytest.raises(UploadsFailed) as caught:
        upload_shards([(shard, target)], progress=False)
    (error,) = caught.value.errors
    assert isinstance(error, ChunkCorrupted) and error.label == "yblock_2"
    message = str(error)
    assert "shard yblock_2" in message and f"chunk 1 (bytes {CHUNK_BYTES}..{2 * CHUNK_BYTES})" in message
    assert "re-run `icllama deploy`" in message
    # The whole file went, the canister's sha256 did not match, and the chunks were sent again: the
    # canister took chunk 0 as equal to what it holds and refused chunk 1 as different.
    assert [offset for offset, _ in target.sent] == [0, CHUNK_BYTES, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES, 0]
    held = status_of(target, shard)
    assert not held.loaded and target.inner.canister.client.query(target.inner.canister.canister_id, "loads") == 0

    # The canister now holds wrong bytes it will not overwrite: a re-run says so before sending,
    # and after a reinstall (what deploy does) the shard uploads whole.
    with pytest.raises(UploadsFailed) as again:
        upload_shards([(shard, recorder_for_same(target))], progress=False)
    assert isinstance(again.value.errors[0], HeldBytesDiffer) and "reinstall" in str(again.value)
    target.inner.canister.client.install_code(target.inner.canister.canister_id, BLOB_CLASS, mode="reinstall")
    clean = recorder_for_same(target)
    (result,) = upload_shards([(shard, clean)], progress=False)
    assert result.outcome == "uploaded" and clean.bytes_sent == shard.size
    assert status_of(clean, shard).sha256 == shard.sha256


@pytest.mark.parametrize("size", [3 * CHUNK_BYTES, CHUNK_BYTES // 2], ids=["three-chunks", "one-chunk"])
def test_corrupted_first_chunk_is_named_and_replaced(network, tmp_path, size):
    """At offset 0 the canister takes a differing chunk as the start of a new file: the search for
    the bad chunk leaves it holding the file's own first chunk, so a re-run just continues."""
    shard = shard_file(tmp_path, "yblock_3", size)
    target = recorder(network)
    target.corrupt_chunk_at = 0
    with pytest.raises(UploadsFailed, match=rf"chunk 0 \(bytes 0..{min(size, CHUNK_BYTES)}\) is corrupted"):
        upload_shards([(shard, target)], progress=False)
    held = status_of(target, shard)
    assert held.held == min(size, CHUNK_BYTES) and not held.loaded
    rerun = recorder_for_same(target)
    (result,) = upload_shards([(shard, rerun)], progress=False)
    assert result.bytes_sent == size - held.held and status_of(rerun, shard).sha256 == shard.sha256


def test_transient_failures_are_retried_with_backoff(network, tmp_path):
    shard = shard_file(tmp_path, "yblock_3", CHUNK_BYTES + 10)
    target = recorder(network)
    target.transient_failures = [
        CallFailed(2, "the canister's queue is full", "IC0208"),
        TransportFailed("http://127.0.0.1:4943", 503, "busy"),
        TransportFailed("http://127.0.0.1:4943", None, "connection refused"),
    ]
    slept: list[float] = []
    (result,) = upload_shards([(shard, target)], progress=False, retry=NO_WAIT, sleep=slept.append)
    assert result.retries == 3 and slept == [0.5, 1.0, 1.5]
    assert result.bytes_sent == shard.size and status_of(target, shard).loaded


def test_persistent_or_permanent_failures_name_the_shard_and_chunk(network, tmp_path):
    shard = shard_file(tmp_path, "yblock_4", CHUNK_BYTES + 10)
    target = recorder(network)
    target.transient_failures = [CallFailed(2, "still busy", None)] * NO_WAIT.attempts
    with pytest.raises(UploadError, match=r"yblock_4.*chunk 0 \(bytes 0..\d+\) still failed after 4 attempts"):
        upload_shards([(shard, target)], progress=False, retry=NO_WAIT, sleep=lambda s: None)
    permanent = recorder(network)
    permanent.transient_failures = [CallFailed(5, "trapped", "IC0503")]
    slept: list[float] = []
    with pytest.raises(UploadError, match=r"yblock_4.*upload_chunk of chunk 0 .* failed: IC0503"):
        upload_shards([(shard, permanent)], progress=False, retry=NO_WAIT, sleep=slept.append)
    assert slept == []  # a trap is not worth retrying


def test_parallel_uploads_finish_despite_one_failure(network, tmp_path, capsys):
    shards = [shard_file(tmp_path, f"yblock_{i}", CHUNK_BYTES * 2 + i) for i in range(3)]
    targets = [recorder(network) for _ in shards]
    targets[1].transient_failures = [CallFailed(5, "trapped", "IC0503")]
    with pytest.raises(UploadsFailed) as caught:
        upload_shards(list(zip(shards, targets, strict=True)), parallel=3, progress=True)
    assert [e.label for e in caught.value.errors] == ["yblock_1"]
    for shard, target in zip(shards, targets, strict=True):
        assert status_of(target, shard).loaded == (shard.label != "yblock_1")
    progress = capsys.readouterr().err
    assert "upload" in progress and "B/s" in progress


def test_damaged_export_is_refused_before_sending(network, tmp_path):
    shard = shard_file(tmp_path, "head", CHUNK_BYTES)
    with open(shard.path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    target = recorder(network)
    with pytest.raises(UploadError, match="head.*is not the manifest's.*export the shards again"):
        upload_shards([(shard, target)], progress=False)
    assert target.sent == []


def test_canister_holding_another_file_is_not_overwritten(network, tmp_path):
    first = shard_file(tmp_path, "yblock_5", CHUNK_BYTES // 2, seed=1)
    target = recorder(network)
    upload_shards([(first, target)], progress=False)
    other = shard_file(tmp_path, "yblock_5", CHUNK_BYTES // 2, seed=2)
    with pytest.raises(UploadsFailed, match="has loaded other bytes.*reinstall"):
        upload_shards([(other, recorder_for_same(target))], progress=False)
