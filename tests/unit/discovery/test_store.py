"""The etcd discovery registry's v2-keys semantics, tested directly."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.discovery.store import DiscoveryStore, KeysError


def test_discovery_store_semantics():
    async def scenario():
        store = DiscoveryStore()
        token = store.new_token(2)
        base = f"/discovery/{token}"
        assert store.get(f"{base}/_config/size")["node"]["value"] == "2"
        status, body = store.put(f"{base}/aa", "n1=http://a:2380", prev_exist=False)
        assert status == 201 and body["action"] == "create"
        with pytest.raises(KeysError) as dup:
            store.put(f"{base}/aa", "again", prev_exist=False)
        assert dup.value.code == 105 and dup.value.status == 412
        waiter = asyncio.create_task(store.wait(base, store.index + 1, True, 5))
        await asyncio.sleep(0)
        store.put(f"{base}/bb", "n2=http://b:2380", prev_exist=False)
        event = await waiter
        assert event["node"]["key"] == f"{base}/bb"
        listing = store.get(base)["node"]["nodes"]
        assert [n["key"] for n in listing] == [f"{base}/aa", f"{base}/bb"]   # _config hidden
        with pytest.raises(KeysError) as missing:
            store.get("/discovery/nope")
        assert missing.value.code == 100
        copy = DiscoveryStore()
        copy.restore(store.dump())
        assert copy.get(base) == store.get(base)
        with pytest.raises(ValueError):
            store.new_token(0)
    asyncio.run(scenario())
