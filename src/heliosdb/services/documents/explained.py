"""The engine's plan of a find in MongoDB's explain shape: the stage names drivers, shells
and tools look for (``COLLSCAN``, ``IXSCAN`` with the MongoDB index name, ``FETCH``,
``SORT``, ``LIMIT``, ``SKIP``, ``OR``), and with ``executionStats`` the counts an
``EXPLAIN ANALYZE`` measured (documents returned, index keys and documents examined, the
time). The engine's own plan stays beside them (``enginePlan``)."""

from __future__ import annotations

from typing import Any

# engine plan nodes that read the collection's rows, and the ones that only read an index
_HEAP = ("Seq Scan", "Bitmap Heap Scan", "Index Scan", "Tid Scan", "Tid Range Scan")
_INDEX = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
_NAMES = {
    "Limit": "LIMIT",
    "Sort": "SORT",
    "Incremental Sort": "SORT",
    "Append": "OR",
    "Merge Append": "SORT_MERGE",
    "BitmapOr": "OR",
    "BitmapAnd": "AND_SORTED",
    "Unique": "DISTINCT",
    "Aggregate": "GROUP",
    "Result": "PROJECTION_DEFAULT",
}


class Stages:
    """Turns engine plan nodes into MongoDB stages; ``index_names`` maps the engine's
    index names to the collection's (its primary key is ``_id_``)."""

    def __init__(self, index_names: dict[str, str], analyzed: bool) -> None:
        self.index_names = index_names
        self.analyzed = analyzed
        self.keys = 0  # index entries read (analyzed)
        self.docs = 0  # rows read from the collection (analyzed)

    def stage(self, node: dict[str, Any]) -> dict[str, Any]:
        kind = node.get("Node Type", "")
        children = [
            self.stage(c)
            for c in node.get("Plans", [])
            if c.get("Parent Relationship") != "InitPlan"
        ]
        if kind in _INDEX:
            scan = self._counted({"stage": "IXSCAN", **self._index(node)}, node)
            if self.analyzed:
                self.keys += self._rows(node)
            if kind == "Index Scan":  # reads the rows too
                fetch = self._counted({"stage": "FETCH", "inputStage": scan}, node)
                if self.analyzed:
                    self.docs += self._rows(node) + int(node.get("Rows Removed by Filter", 0))
                return fetch
            return scan
        if kind == "Seq Scan":
            if self.analyzed:
                self.docs += self._rows(node) + int(node.get("Rows Removed by Filter", 0))
            return self._counted({"stage": "COLLSCAN", "direction": "forward"}, node)
        if kind == "Bitmap Heap Scan":
            if self.analyzed:
                self.docs += self._rows(node) + int(node.get("Rows Removed by Index Recheck", 0))
            out: dict[str, Any] = {"stage": "FETCH"}
        elif kind == "Limit" and children:
            out = {"stage": "LIMIT"}
        else:
            out = {"stage": _NAMES.get(kind, kind.upper().replace(" ", "_"))}
        if len(children) == 1:
            out["inputStage"] = children[0]
        elif children:
            out["inputStages"] = children
        return self._counted(out, node)

    def _index(self, node: dict[str, Any]) -> dict[str, Any]:
        engine_name = node.get("Index Name", "")
        name = self.index_names.get(engine_name)
        if name is None:  # the table's primary key (``<table>_pkey``) is the _id index
            name = "_id_" if engine_name.endswith("_pkey") else engine_name
        out: dict[str, Any] = {"indexName": name}
        if "Index Cond" in node:
            out["indexBounds"] = node["Index Cond"]
        out["direction"] = "backward" if node.get("Scan Direction") == "Backward" else "forward"
        return out

    def _rows(self, node: dict[str, Any]) -> int:
        return int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1) or 1)

    def _counted(self, stage: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
        if self.analyzed:
            stage["nReturned"] = self._rows(node)
            stage["executionTimeMillisEstimate"] = round(float(node.get("Actual Total Time", 0)))
        return stage


def explanation(plan: Any, sql: str, index_names: dict[str, str], analyzed: bool) -> dict[str, Any]:
    """``queryPlanner`` (and ``executionStats`` when ``analyzed``) from the engine's
    ``EXPLAIN (FORMAT JSON)`` output."""
    top = plan[0] if isinstance(plan, list) and plan else {}
    root = top.get("Plan", {}) if isinstance(top, dict) else {}
    stages = Stages(index_names, analyzed)
    winning = stages.stage(root) if root else {"stage": "EOF"}
    out: dict[str, Any] = {
        "winningPlan": {**winning, "sql": sql, "enginePlan": plan},
    }
    if analyzed:
        out["executionStats"] = {
            "executionSuccess": True,
            "nReturned": stages._rows(root) if root else 0,
            "executionTimeMillis": round(float(top.get("Execution Time", 0))),
            "totalKeysExamined": stages.keys,
            "totalDocsExamined": stages.docs,
            "executionStages": winning,
        }
    return out
