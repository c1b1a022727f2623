"""The engine's plan of a find in MongoDB's explain shape: the stage names drivers, shells
and tools look for (``COLLSCAN``, ``IXSCAN`` with the MongoDB index name, ``FETCH``,
``SORT``, ``LIMIT``, ``SKIP``, ``OR``), and with ``executionStats`` the counts an
``EXPLAIN ANALYZE`` measured (documents returned, index keys and documents examined, the
time). The engine's own plan stays beside them (``enginePlan``).

An update, delete or findAndModify is explained without writing (``write_explanation``):
its ``UPDATE`` or ``DELETE`` stage over the plan of the read of the documents it would
change, with the engine's plan of the write statement itself; with ``executionStats``,
that read runs (EXPLAIN ANALYZE) and the node counts what would match and change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heliosdb.services.documents import catalog
from heliosdb.services.documents.catalog import IndexSpec

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


def index_names(specs: list[IndexSpec]) -> dict[str, str]:
    """The collection's index names by the engine's names of its indexes (the expression
    index and the array index of each)."""
    names = {catalog.multikey_index_name(s.engine_name): s.name for s in specs}
    names.update({s.engine_name: s.name for s in specs})
    return names


@dataclass
class Write:
    """An update (``update`` set) or a delete to explain, as its command gives it."""

    query: dict[str, Any] | None
    update: Any = None
    sort: dict[str, Any] | None = None
    multi: bool = False
    upsert: bool = False
    array_filters: list[dict[str, Any]] | None = None

    @property
    def stage(self) -> str:
        return "DELETE" if self.update is None else "UPDATE"


def write_explanation(
    write: Write,
    read_plan: Any,
    write_plan: Any,
    sql: str,
    names: dict[str, str],
    counts: tuple[int, int] | None,
) -> dict[str, Any]:
    """``queryPlanner`` (and ``executionStats`` when ``counts``, the documents that would
    match and be modified, are given: ``read_plan`` is then EXPLAIN ANALYZE's) of a write:
    its stage over the read of its documents, ``sql`` the write statement, whose engine
    plan is ``write_plan``."""
    read = explanation(read_plan, sql, names, counts is not None)
    winning = {k: v for k, v in read["winningPlan"].items() if k not in ("sql", "enginePlan")}
    out: dict[str, Any] = {
        "winningPlan": {
            "stage": write.stage,
            "inputStage": winning,
            "sql": sql,
            "enginePlan": write_plan,
        }
    }
    if counts is not None:
        matched, modified = counts
        stage: dict[str, Any] = {"stage": write.stage, "nReturned": 0}
        if write.update is None:
            stage["nWouldDelete"] = matched
        else:
            stage.update(
                nMatched=matched,
                nWouldModify=modified,
                nWouldUpsert=int(write.upsert and not matched),
            )
        stage["inputStage"] = winning
        out["executionStats"] = {**read["executionStats"], "nReturned": 0, "executionStages": stage}
    return out
