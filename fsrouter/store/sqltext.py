"""SQL text that SQLite (>= 3.24) and PostgreSQL share, for the statements written once per Store."""
from __future__ import annotations

# SQLite allows 32766 bound parameters per statement since 3.32; stay well below it.
MAX_PARAMS = 30000


def names(columns) -> str:
    return ", ".join(f'"{column.column_name}"' for column in columns)


def values(param: str, width: int, rows: int) -> str:
    """The parameter marks of a multi-row VALUES: (?, ?), (?, ?) ..."""
    return ", ".join(["(" + ", ".join([param] * width) + ")"] * rows)


def upsert_sql(table: str, columns, conflict: list[str], param: str, rows: int = 1) -> str:
    marks_of_rows = values(param, len(columns), rows)
    updates = ", ".join(f'"{c.column_name}" = EXCLUDED."{c.column_name}"' for c in columns
                        if c.column_name not in conflict)
    targets = ", ".join(f'"{name}"' for name in conflict)
    return (f"INSERT INTO {table} ({names(columns)}) VALUES {marks_of_rows} "
            f"ON CONFLICT ({targets}) DO UPDATE SET {updates}")


def marks(param: str, count: int) -> str:
    """`count` parameter marks, comma-separated (an IN list)."""
    return ", ".join([param] * count)


def chunks(items, size: int):
    """`items` in lists of at most `size`, for statements under the parameter limit. peewee's
    chunked() pads every chunk to `size` and pops the padding one item at a time: about a
    millisecond for a one-row write when `size` is 6,000."""
    items = items if isinstance(items, list) else list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]
