"""Reading llama-bench's SQL printer output without trusting it.

llama-bench writes `CREATE TABLE IF NOT EXISTS llama_bench (...)` and one
`INSERT INTO llama_bench (...) VALUES ('...', ...);` per test (older builds named the table `test`;
both are read). The text is loaded into a private in-memory SQLite database under a statement
grammar, an authorizer, limits and a step budget (see `records`), and the table read back.
"""

from __future__ import annotations

import re
import sqlite3

from .llamabench_spec import SQL_TABLES_READ

# Bounds on untrusted SQL: text size, VM instructions, one string/blob, one statement.
MAX_SQL_CHARS = 32 * 1024 * 1024
SQL_STEPS_BASE = 2_000_000
SQL_STEPS_PER_CHAR = 50
_SQL_LIMITS = {"SQLITE_LIMIT_ATTACHED": 0, "SQLITE_LIMIT_LENGTH": 1_000_000,
               "SQLITE_LIMIT_SQL_LENGTH": 1_000_000, "SQLITE_LIMIT_COLUMN": 256,
               "SQLITE_LIMIT_EXPR_DEPTH": 64, "SQLITE_LIMIT_COMPOUND_SELECT": 2,
               "SQLITE_LIMIT_TRIGGER_DEPTH": 1}

_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
# The statement shapes llama-bench (and sqlite3's .dump of its table) print, and nothing else:
# plain `name TYPE` columns (no DEFAULT / CHECK / AS SELECT), one row of literal VALUES.
_ID = r'(?:\w+|"\w+")'
_LIT = r"(?:'[^']*(?:''[^']*)*'|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|NULL)"
_SQL_GRAMMAR = (
    ("create", re.compile(rf"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_ID}\s*\(\s*{_ID}(?:\s+\w+)?"
                          rf"(?:\s*,\s*{_ID}(?:\s+\w+)?)*\s*\)\s*;?\s*\Z", re.I)),
    ("insert", re.compile(rf"INSERT\s+INTO\s+{_ID}\s*(?:\(\s*{_ID}(?:\s*,\s*{_ID})*\s*\))?\s*VALUES\s*"
                          rf"\(\s*{_LIT}(?:\s*,\s*{_LIT})*\s*\)\s*;?\s*\Z", re.I)),
    ("transaction", re.compile(r"(?:BEGIN|COMMIT|END)(?:\s+TRANSACTION)?\s*;?\s*\Z", re.I)),
)


_SQL_SPECIAL = re.compile(r"['\";]|--|/\*")


def statements(text: str) -> list[str]:
    """Split a script at the semicolons outside quotes and comments (one linear scan)."""
    out, start, i, n = [], 0, 0, len(text)
    while (m := _SQL_SPECIAL.search(text, i)) is not None:
        tok, i = m.group(), m.end()
        if tok in ("'", '"'):
            j = text.find(tok, i)
            while j != -1 and text.startswith(tok, j + 1):  # '' inside a string is a quote
                j = text.find(tok, j + 2)
            i = n if j == -1 else j + 1
        elif tok == "--":
            j = text.find("\n", i)
            i = n if j == -1 else j + 1
        elif tok == "/*":
            j = text.find("*/", i)
            i = n if j == -1 else j + 2
        else:
            out.append(text[start:i])
            start = i
    if text[start:].strip():
        out.append(text[start:])
    return out


def records(text: str, max_steps: int | None = None) -> list[dict]:
    """Load llama-bench SQL into a private in-memory database and read the table back.

    Nothing in the text is trusted: each statement must have the shape llama-bench prints
    (CREATE TABLE of plain `name TYPE` columns, INSERT INTO ... VALUES of one row of literals,
    or BEGIN/COMMIT); then an authorizer allows only creating and inserting into llama_bench/test in the
    main database (no ATTACH, VACUUM INTO, PRAGMA, functions, sub-selects, reads, drops, triggers);
    sqlite limits forbid attached databases and cap string and statement sizes; a progress handler
    aborts after a bounded number of VM steps. Any refusal raises ValueError (no partial result)."""
    if len(text) > MAX_SQL_CHARS:
        raise ValueError(f"llama-bench sql: {len(text)} characters is over the limit of {MAX_SQL_CHARS}")
    budget = max_steps if max_steps is not None else SQL_STEPS_BASE + SQL_STEPS_PER_CHAR * len(text)
    stride = 16  # sqlite counts per statement run; llama-bench's INSERTs take ~50 steps
    state = {"steps": 0, "creating": False, "reading": False, "created": []}

    def progress() -> int:
        state["steps"] += stride
        return 1 if state["steps"] > budget else 0

    def authorize(action, arg1, arg2, db, _trigger) -> int:
        if action == sqlite3.SQLITE_TRANSACTION:
            return sqlite3.SQLITE_OK
        if state["reading"]:
            ok = action == sqlite3.SQLITE_SELECT or (
                action == sqlite3.SQLITE_READ and db == "main" and arg1 in SQL_TABLES_READ)
            return sqlite3.SQLITE_OK if ok else sqlite3.SQLITE_DENY
        if db not in ("main", None):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_CREATE_TABLE and arg1 in SQL_TABLES_READ and state["creating"]:
            state["created"].append(arg1)
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_INSERT and arg1 in SQL_TABLES_READ and db == "main":
            return sqlite3.SQLITE_OK
        # CREATE TABLE writes its own schema row; only then may sqlite_master be touched.
        if state["creating"] and arg1 in ("sqlite_master", "sqlite_schema") and db == "main" and action in (
                sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_READ):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for name, value in _SQL_LIMITS.items():
            conn.setlimit(getattr(sqlite3, name), value)
        conn.set_authorizer(authorize)
        conn.set_progress_handler(progress, stride)
        for n, stmt in enumerate(statements(text), 1):
            head = stmt[_LEADING_COMMENTS.match(stmt).end():]
            if not head.strip(" \t\r\n;"):
                continue
            kind = next((k for k, rx in _SQL_GRAMMAR if len(head) <= _SQL_LIMITS["SQLITE_LIMIT_SQL_LENGTH"]
                         and rx.match(head)), None)
            if kind is None:
                raise ValueError(f"llama-bench sql: statement {n} refused (only CREATE TABLE of plain columns "
                                 f"and INSERT INTO ... VALUES of literals): {head[:80]!r}")
            state["creating"] = kind == "create"
            try:
                conn.execute(stmt)
            except sqlite3.Error as e:
                why = "step budget exceeded" if state["steps"] > budget else str(e)
                raise ValueError(f"llama-bench sql: statement {n} refused ({why}): {head[:80]!r}") from None
            finally:
                state["creating"] = False
        state["reading"] = True
        out: list[dict] = []
        for name in dict.fromkeys(state["created"]):
            try:
                cur = conn.execute(f"SELECT * FROM {name}")  # name is one of SQL_TABLES_READ
                cols = [d[0] for d in cur.description]
                out.extend(dict(zip(cols, r)) for r in cur.fetchall())
            except sqlite3.Error as e:
                raise ValueError(f"llama-bench sql: reading table {name} failed ({e})") from None
        return out
    finally:
        conn.close()
