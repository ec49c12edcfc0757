"""ETL pipeline: extract >> transform >> load, data flowing by parameter name.

Each task names its input after the task that produces it: ``transform(extract)`` receives
the return value of ``extract``, ``load(transform)`` that of ``transform``. A parameter that
matches no task (``table`` below) is looked up among the run's channel keys, here seeded
with ``initial_channel`` (``graflow run`` leaves it unset: ``load`` then takes its default).

Run: python examples/pipeline.py
Or:  graflow run examples/pipeline.py --processes 2 --set table=orders
"""

from __future__ import annotations

import csv
import io
import sqlite3
from typing import Any

from graflow import task, workflow
from graflow.core.workflow import WorkflowContext

ORDERS_CSV = """\
order_id,region,sku,quantity,unit_price,status
1001,north,KB-01,2,49.90,shipped
1002,south,MS-17,1,19.50,shipped
1003,north,MN-27,1,229.00,cancelled
1004,east,KB-01,3,49.90,shipped
1005,south,HD-05,2,89.00,shipped
1006,east,MS-17,4,19.50,pending
1007,north,HD-05,1,89.00,shipped
1008,west,MN-27,2,229.00,cancelled
"""


def build() -> WorkflowContext:
    """The pipeline's workflow (``graflow graph examples/pipeline.py`` draws it)."""
    with workflow("orders_etl") as wf:

        @task
        def extract() -> list[dict[str, str]]:
            rows = list(csv.DictReader(io.StringIO(ORDERS_CSV)))
            print(f"extract:   {len(rows)} rows read")
            return rows

        @task
        def transform(extract: list[dict[str, str]]) -> dict[str, Any]:
            valid = [row for row in extract if row["status"] != "cancelled"]
            revenue: dict[str, float] = {}
            for row in valid:
                amount = int(row["quantity"]) * float(row["unit_price"])
                revenue[row["region"]] = round(revenue.get(row["region"], 0.0) + amount, 2)
            rejected = len(extract) - len(valid)
            print(f"transform: {len(valid)} orders kept, {rejected} cancelled dropped")
            return {"revenue": revenue, "orders": len(valid), "rejected": rejected}

        @task
        def load(transform: dict[str, Any], table: str = "revenue") -> dict[str, Any]:
            db = sqlite3.connect(":memory:")
            with db:
                db.execute(f"CREATE TABLE {table} (region TEXT PRIMARY KEY, revenue REAL)")
                db.executemany(
                    f"INSERT INTO {table} VALUES (?, ?)", sorted(transform["revenue"].items())
                )
            rows = db.execute(
                f"SELECT region, revenue FROM {table} ORDER BY revenue DESC"
            ).fetchall()
            (total,) = db.execute(f"SELECT ROUND(SUM(revenue), 2) FROM {table}").fetchone()
            db.close()
            print(f"load:      {len(rows)} rows written to table {table!r}")
            return {
                "revenue": dict(rows),
                "total": total,
                "orders": transform["orders"],
                "rejected": transform["rejected"],
            }

        extract >> transform >> load
    return wf


def main() -> dict[str, Any]:
    """Run the pipeline; return the loaded revenue per region and the run's totals."""
    summary: dict[str, Any] = build().execute(initial_channel={"table": "revenue_by_region"})
    return summary


if __name__ == "__main__":
    result = main()
    print("Revenue by region:")
    for region, revenue in result["revenue"].items():
        print(f"  {region:<6} {revenue:>8.2f}")
    print(f"Total revenue: {result['total']:.2f} from {result['orders']} orders")
