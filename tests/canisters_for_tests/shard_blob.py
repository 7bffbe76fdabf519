"""Holds one uploaded file of any bytes, through the shard canisters' own upload methods
(ShardHolder); `load` only marks it loaded, so uploader tests need no model."""

from __future__ import annotations

from typing import Any

from canisters.yblock.shard_store import ShardHolder, ShardNotReady
from cdk import query, update


class ShardBlob(ShardHolder):
    DID = "shard_blob.did"
    KIND = "shard blob"

    def init(self) -> None:
        self.load_count = 0
        self.restore_upload()

    def post_upgrade(self) -> None:
        self.init()

    @update
    def load(self) -> dict[str, Any]:
        try:
            data = self.committed_bytes()
        except ShardNotReady as e:
            return {"err": str(e)}
        self.mark_loaded()
        self.load_count += 1
        return {"ok": {"name": self.upload.name, "sha256": self.upload.sha256, "bytes": len(data)}}

    @query
    def loads(self) -> int:
        return self.load_count
