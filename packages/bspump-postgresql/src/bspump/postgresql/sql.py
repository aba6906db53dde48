"""Building SQL text from configured names: identifiers are always quoted, values always parameters."""

from __future__ import annotations

from collections.abc import Sequence


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (``my"table`` -> ``"my""table"``)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``, or ``"table"`` when no schema is given (the search path decides)."""
    return f"{quote_ident(schema)}.{quote_ident(table)}" if schema else quote_ident(table)


def split_table(name: str, schema: str = "") -> tuple[str, str]:
    """``(schema, table)`` from a ``table`` setting that may be written ``schema.table``."""
    if not schema and "." in name:
        first, _, rest = name.partition(".")
        return first, rest
    return schema, name


def parse_names(text: str) -> list[str]:
    """A comma-separated list of names, blanks removed."""
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def upsert_statement(table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of one row; the non-key columns take the new values."""
    names = ", ".join(map(quote_ident, columns))
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    conflict = ", ".join(map(quote_ident, keys))
    updates = [f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns if c not in keys]
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT ({conflict}) {action}"


def delete_statement(table: str, keys: Sequence[str]) -> str:
    """``DELETE`` of the row whose key columns equal the parameters."""
    condition = " AND ".join(f"{quote_ident(k)} = ${i}" for i, k in enumerate(keys, 1))
    return f"DELETE FROM {table} WHERE {condition}"
