#!/usr/bin/env python3
"""Probe which pymilvus ``MilvusClient`` calls and index types work against a Milvus server.

    python tools/milvus/compat_probe.py --uri http://127.0.0.1:PORT [--token root:Milvus]
    python tools/milvus/compat_probe.py --start          # starts a throw-away server itself

Prints one line per check (OK / FAIL with the server's message) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pymilvus import DataType, MilvusClient

DIM = 8
INDEX_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("FLAT", {}),
    ("IVF_FLAT", {"nlist": 16}),
    ("IVF_SQ8", {"nlist": 16}),
    ("IVF_PQ", {"nlist": 16, "m": 4, "nbits": 8}),
    ("HNSW", {"M": 8, "efConstruction": 64}),
    ("SCANN", {"nlist": 16}),
    ("HNSW_SQ", {"M": 8, "efConstruction": 64, "sq_type": "SQ8"}),
    ("BRUTE_FORCE", {}),
    ("AUTOINDEX", {}),
    ("DISKANN", {}),
    ("GPU_CAGRA", {}),
]


def _schema(client: MilvusClient):
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("n", DataType.INT64)
    return schema


def probe(uri: str, token: str | None) -> dict[str, str]:
    client = MilvusClient(uri=uri, token=token or "")
    results: dict[str, str] = {}

    def check(name: str, fn: Callable[[], Any]) -> Any:
        try:
            out = fn()
            results[name] = "OK"
            print(f"OK    {name}")
            return out
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).replace("\n", " ")[:200]
            results[name] = f"FAIL: {msg}"
            print(f"FAIL  {name}: {msg}")
            return None

    rng = np.random.default_rng(0)
    rows = [{"id": f"r{i}", "vec": rng.standard_normal(DIM).astype("float32").tolist(), "n": i}
            for i in range(200)]
    col = "probe_main"
    if client.has_collection(col):
        client.drop_collection(col)
    ip = client.prepare_index_params()
    ip.add_index(field_name="vec", index_type="HNSW", metric_type="COSINE",
                 params={"M": 8, "efConstruction": 64})
    check("get_server_version", lambda: client.get_server_version())
    check("create_collection(schema, index_params)",
          lambda: client.create_collection(col, schema=_schema(client), index_params=ip))
    check("describe_collection", lambda: client.describe_collection(col))
    check("list_indexes/describe_index",
          lambda: client.describe_index(col, client.list_indexes(col)[0]))
    check("get_load_state", lambda: client.get_load_state(col))
    check("insert", lambda: client.insert(col, rows[:100]))
    check("upsert", lambda: client.upsert(col, rows))
    hits = check("search(consistency_level=Strong)",
                 lambda: client.search(col, data=[rows[5]["vec"]], limit=3, anns_field="vec",
                                       output_fields=["n"], consistency_level="Strong",
                                       search_params={"metric_type": "COSINE",
                                                      "params": {"ef": 32}}))
    if hits is not None:
        top = hits[0][0]
        results["search_top_hit"] = f"id={top['id']} distance={top['distance']:.4f} keys={sorted(top)}"
        print("      top hit:", results["search_top_hit"])
    check("search(filter)", lambda: client.search(col, data=[rows[5]["vec"]], limit=3,
                                                  filter="n < 3", consistency_level="Strong"))
    check("query(filter)", lambda: client.query(col, filter='id in ["r1","r2"]',
                                                output_fields=["n"], consistency_level="Strong"))
    check("query(ids=)", lambda: client.query(col, ids=["r1"], output_fields=["n", "vec"]))
    check("get(ids)", lambda: client.get(col, ids=["r1", "r2"]))
    check("query(count(*))", lambda: client.query(col, filter="", output_fields=["count(*)"],
                                                  consistency_level="Strong"))

    def iterate() -> int:
        it = client.query_iterator(col, batch_size=50, filter='id != ""', output_fields=["n"])
        total = 0
        while batch := it.next():
            total += len(batch)
        it.close()
        assert total == 200, total
        return total

    check("query_iterator", iterate)

    def search_iterate() -> int:
        it = client.search_iterator(col, data=[rows[0]["vec"]], batch_size=20, limit=60,
                                    anns_field="vec", search_params={"metric_type": "COSINE"})
        total = 0
        while batch := it.next():
            total += len(batch)
        it.close()
        return total

    check("search_iterator", search_iterate)
    check("delete(ids)", lambda: client.delete(col, ids=["r1"]))
    check("delete(filter)", lambda: client.delete(col, filter='id in ["r2"]'))
    check("flush", lambda: client.flush(col))
    check("get_collection_stats", lambda: client.get_collection_stats(col))
    check("release_collection/load_collection",
          lambda: (client.release_collection(col), client.load_collection(col)))
    check("list_collections", lambda: client.list_collections())
    check("create_collection(quick, dimension=)",
          lambda: client.create_collection("probe_quick", dimension=DIM, metric_type="COSINE"))
    check("drop_collection", lambda: (client.drop_collection(col),
                                      client.drop_collection("probe_quick")))

    for index_type, params in INDEX_TYPES:
        name = f"probe_idx_{index_type.lower()}"
        if client.has_collection(name):
            client.drop_collection(name)

        def run(index_type: str = index_type, params: dict[str, Any] = params,
                name: str = name) -> None:
            ipx = client.prepare_index_params()
            ipx.add_index(field_name="vec", index_type=index_type, metric_type="COSINE",
                          params=params)
            client.create_collection(name, schema=_schema(client), index_params=ipx)
            client.insert(name, rows)
            res = client.search(name, data=[rows[7]["vec"]], limit=1, consistency_level="Strong")
            assert res[0][0]["id"] == "r7", res

        check(f"index {index_type}", run)
        if client.has_collection(name):
            client.drop_collection(name)
    client.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri")
    ap.add_argument("--token")
    ap.add_argument("--start", action="store_true")
    args = ap.parse_args()
    if args.start:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from server import MilvusServer  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as d, MilvusServer(Path(d)) as srv:
            t = time.monotonic()
            res = probe(srv.uri, srv.token)
            print(f"probe took {time.monotonic() - t:.1f}s")
    else:
        res = probe(args.uri, args.token)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
