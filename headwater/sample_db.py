"""The sample source database of the demo and the end-to-end tests: customers, orders and
order lines with foreign keys, the column types that matter, NULLs among them; and a
workload of inserts, updates (a primary-key change among them) and deletes."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

SCHEMA_SQL = """
CREATE TABLE customers (
    id          integer PRIMARY KEY,
    external_id bigint NOT NULL,
    name        text NOT NULL,
    email       varchar(120),
    balance     numeric(12,2) NOT NULL DEFAULT 0,
    active      boolean NOT NULL DEFAULT true,
    signup_date date,
    created_at  timestamptz NOT NULL DEFAULT now(),
    profile     jsonb,
    token       uuid,
    avatar      bytea
);
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    status      varchar(20) NOT NULL,
    total       numeric(12,2),
    ordered_at  timestamptz NOT NULL,
    notes       text
);
CREATE TABLE order_lines (
    order_id bigint NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    line_no  integer NOT NULL,
    sku      text NOT NULL,
    qty      integer NOT NULL,
    price    numeric(12,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
"""

# Deterministic data (setseed) so two runs of the demo load the same rows.
DATA_SQL = """
SELECT setseed(0.42);
INSERT INTO customers
SELECT g, 1000000000000 + g, 'customer ' || g,
       CASE WHEN g %% 7 = 0 THEN NULL ELSE 'c' || g || '@example.com' END,
       round((random() * 10000)::numeric, 2), g %% 5 <> 0,
       CASE WHEN g %% 11 = 0 THEN NULL ELSE date '2020-01-01' + (g %% 1500) END,
       timestamptz '2021-01-01 00:00:00+00' + g * interval '37 minutes 13.123456 seconds',
       CASE WHEN g %% 3 = 0 THEN NULL
            ELSE jsonb_build_object('tier', g %% 4, 'tags', jsonb_build_array('a', g)) END,
       CASE WHEN g %% 13 = 0 THEN NULL ELSE md5(g::text)::uuid END,
       CASE WHEN g %% 2 = 0 THEN decode(md5(g::text), 'hex') ELSE NULL END
FROM generate_series(1, %(customers)s) g;
INSERT INTO orders
SELECT g, 1 + (g * 7919) %% %(customers)s, (ARRAY['new','paid','shipped','done'])[1 + g %% 4],
       CASE WHEN g %% 17 = 0 THEN NULL ELSE round((random() * 500)::numeric, 2) END,
       timestamptz '2022-06-01 12:00:00+00' + g * interval '11 minutes',
       CASE WHEN g %% 5 = 0 THEN 'note for order ' || g ELSE NULL END
FROM generate_series(1, %(orders)s) g;
INSERT INTO order_lines
SELECT o, l, 'SKU-' || ((o * l) %% 997), 1 + (o + l) %% 9, round((random() * 100)::numeric, 2)
FROM generate_series(1, %(orders)s) o, generate_series(1, 1 + o %% 3) l;
ANALYZE customers; ANALYZE orders; ANALYZE order_lines;
"""


def create_sample(conn: psycopg.Connection[Any], customers: int) -> None:
    """Create and fill the sample tables in the connected (empty) database."""
    orders = customers * 2
    conn.execute(SCHEMA_SQL)
    for statement in DATA_SQL.split(";\n"):
        if statement.strip():
            conn.execute(statement, {"customers": customers, "orders": orders})


def recreate_database(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop (forcibly) and create database `name` through an autocommit admin connection."""
    ident = sql.Identifier(name)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))


@dataclass
class WorkloadCounts:
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    key_changes: int = 0

    @property
    def total(self) -> int:
        return self.inserts + self.updates + self.deletes


class Workload:
    """Writes a mix of changes to the sample tables, one small transaction each."""

    def __init__(self, conn: psycopg.Connection[Any], seed: int = 7) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        row = conn.execute("SELECT max(id) FROM customers").fetchone()
        self.customers = int(row[0]) if row and row[0] else 0
        row = conn.execute("SELECT max(id) FROM orders").fetchone()
        self.next_order = (int(row[0]) if row and row[0] else 0) + 1
        self.counts = WorkloadCounts()
        self.new_orders: list[int] = []

    def insert_order(self) -> int:
        order_id = self.next_order
        self.next_order += 1
        customer = self.rng.randint(1, self.customers)
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO orders VALUES (%s, %s, 'new', %s, now(), %s)",
                (order_id, customer, self.rng.randint(1, 99999) / 100, None),
            )
            self.conn.execute(
                "INSERT INTO order_lines VALUES (%s, 1, 'SKU-NEW', 2, 9.99)", (order_id,)
            )
        self.new_orders.append(order_id)
        self.counts.inserts += 2
        return order_id

    def update_customer(self) -> None:
        customer = self.rng.randint(1, self.customers)
        self.conn.execute(
            """UPDATE customers SET balance = balance + 1.25, email = %s,
                   profile = jsonb_set(coalesce(profile, '{}'), '{visits}', to_jsonb(%s::int)),
                   avatar = NULL
               WHERE id = %s""",
            (f"updated{customer}@example.org", self.rng.randint(1, 1000), customer),
        )
        self.counts.updates += 1

    def change_line_key(self) -> None:
        """An UPDATE of a primary-key column: the target must move the row, not copy it."""
        row = self.conn.execute(
            "SELECT order_id, line_no FROM order_lines WHERE line_no < 100 ORDER BY order_id "
            "OFFSET %s LIMIT 1",
            (self.rng.randint(0, 50),),
        ).fetchone()
        if row:
            self.conn.execute(
                "UPDATE order_lines SET line_no = line_no + 100 "
                "WHERE order_id = %s AND line_no = %s",
                row,
            )
            self.counts.updates += 1
            self.counts.key_changes += 1

    def delete_new_order(self) -> None:
        """Delete an order inserted by this workload (after the snapshot), with its lines."""
        if self.new_orders:
            order_id = self.new_orders.pop(self.rng.randrange(len(self.new_orders)))
            self.conn.execute("DELETE FROM orders WHERE id = %s", (order_id,))
            self.counts.deletes += 2

    def delete_old_line(self) -> None:
        row = self.conn.execute(
            "SELECT order_id, line_no FROM order_lines ORDER BY order_id DESC OFFSET %s LIMIT 1",
            (self.rng.randint(0, 200),),
        ).fetchone()
        if row:
            self.conn.execute("DELETE FROM order_lines WHERE order_id = %s AND line_no = %s", row)
            self.counts.deletes += 1

    def step(self) -> None:
        """One random change; the mix covers every kind the task must carry."""
        choice = self.rng.random()
        if choice < 0.35:
            self.insert_order()
        elif choice < 0.70:
            self.update_customer()
        elif choice < 0.80:
            self.change_line_key()
        elif choice < 0.90:
            self.delete_new_order()
        else:
            self.delete_old_line()

    def run(self, changes: int, pause_s: float = 0.0) -> WorkloadCounts:
        """Write about `changes` changes, always including each kind at least once, with
        `pause_s` between them."""
        self.insert_order()
        self.change_line_key()
        self.insert_order()
        self.delete_new_order()
        self.update_customer()
        self.delete_old_line()
        while self.counts.total < changes:
            self.step()
            if pause_s:
                time.sleep(pause_s)
        return self.counts
