"""SQL of the change triggers, shared by the migration and the triggers-only install.

History triggers behave like Galaxy's own (statement level, one `history_audit`
row and one `pg_notify('galaxy_history_update', <history id>)` per distinct
history per statement), so the bridge works unchanged on a Galaxy database
that already has them. Other watched tables record into `tidings_change_audit`
and notify `tidings_change` with `<kind>:<key>`. Payloads carry ids only,
because NOTIFY payloads are capped at 8000 bytes.
"""

from __future__ import annotations

from tidings.shared.subjects import AUDIENCE_KIND

HISTORY_CHANNEL = "galaxy_history_update"
CHANGE_CHANNEL = "tidings_change"

# (table, id column, trigger function) of Galaxy's history audit triggers.
HISTORY_SOURCES = [
    ("history_dataset_association", "history_id", "fn_audit_history_by_history_id"),
    (
        "history_dataset_collection_association",
        "history_id",
        "fn_audit_history_by_history_id",
    ),
    ("history", "id", "fn_audit_history_by_id"),
]

# (table, key column, kind) of the other watched tables.
CHANGE_SOURCES = [
    ("notification", "id", "notification"),
    ("interactivetool_entry_point", "id", "entry_point"),
]

# (table, key column, kind) of watched tables whose UPDATEs alone are changes,
# because another kind announces their INSERTs: recipients hear of a new
# notification through its `notification` change, once each.
UPDATE_CHANGE_SOURCES = [
    ("user_notification_association", "id", "user_notification"),
]

# (table, key column, tag, watched column, operations) of rows whose changes
# make a cached audience stale. Each records an `audience` change keyed
# `<tag>:<key>`; an UPDATE counts only when the watched column changed. The
# trigger names sort before Galaxy's `trigger_history_audit_by_id_aus`, so
# Postgres fires them first and an adoption's own history change already
# finds the new owner.
AUDIENCE_SOURCES = [
    ("history", "id", "history", "user_id", ("UPDATE",)),
    ("galaxy_session", "id", "session", "user_id", ("UPDATE",)),
    ("galaxy_session_to_history", "history_id", "history", None, ("INSERT", "DELETE")),
]


def _history_function(name: str, id_field: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO history_audit (history_id, update_time)
    SELECT ids.history_id, clock_timestamp() AT TIME ZONE 'UTC'
    FROM (SELECT DISTINCT {id_field} AS history_id FROM new_table
          WHERE {id_field} IS NOT NULL) AS ids
    ON CONFLICT DO NOTHING;
    PERFORM pg_notify('{HISTORY_CHANNEL}', ids.history_id::text)
    FROM (SELECT DISTINCT {id_field} AS history_id FROM new_table
          WHERE {id_field} IS NOT NULL) AS ids;
    RETURN NULL;
END;
$$;
"""


CHANGE_AUDIT_TABLE = [
    """
CREATE TABLE IF NOT EXISTS tidings_change_audit (
    id bigserial PRIMARY KEY,
    kind varchar(64) NOT NULL,
    key varchar(255) NOT NULL,
    change_time timestamp NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC')
)""",
    """
CREATE INDEX IF NOT EXISTS ix_tidings_change_audit_change_time
    ON tidings_change_audit (change_time)""",
    # The bridge reads the newest audit time of given keys.
    """
CREATE INDEX IF NOT EXISTS ix_tidings_change_audit_kind_key
    ON tidings_change_audit (kind, key, change_time)""",
]

CHANGE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION tidings_record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text := TG_ARGV[0];
    key_column text := TG_ARGV[1];
    changed record;
BEGIN
    FOR changed IN EXECUTE format(
        'SELECT DISTINCT %I::text AS key FROM new_table WHERE %I IS NOT NULL',
        key_column, key_column)
    LOOP
        INSERT INTO tidings_change_audit (kind, key) VALUES (kind, changed.key);
        PERFORM pg_notify('{CHANGE_CHANNEL}', kind || ':' || changed.key);
    END LOOP;
    RETURN NULL;
END;
$$;
"""


AUDIENCE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION tidings_record_stale_audience() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tag text := TG_ARGV[0];
    key_column text := TG_ARGV[1];
    watched_column text := TG_ARGV[2];
    query text;
    changed record;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        query := format(
            'SELECT DISTINCT n.%1$I::text AS key FROM new_table AS n '
            'JOIN old_table AS o ON o.id = n.id '
            'WHERE n.%2$I IS DISTINCT FROM o.%2$I AND n.%1$I IS NOT NULL',
            key_column, watched_column);
    ELSIF TG_OP = 'DELETE' THEN
        query := format(
            'SELECT DISTINCT %1$I::text AS key FROM old_table WHERE %1$I IS NOT NULL',
            key_column);
    ELSE
        query := format(
            'SELECT DISTINCT %1$I::text AS key FROM new_table WHERE %1$I IS NOT NULL',
            key_column);
    END IF;
    FOR changed IN EXECUTE query LOOP
        INSERT INTO tidings_change_audit (kind, key)
        VALUES ('{AUDIENCE_KIND}', tag || ':' || changed.key);
        PERFORM pg_notify(
            '{CHANGE_CHANNEL}', '{AUDIENCE_KIND}:' || tag || ':' || changed.key);
    END LOOP;
    RETURN NULL;
END;
$$;
"""

_TRANSITION_TABLES = {
    "INSERT": "REFERENCING NEW TABLE AS new_table",
    "UPDATE": "REFERENCING OLD TABLE AS old_table NEW TABLE AS new_table",
    "DELETE": "REFERENCING OLD TABLE AS old_table",
}


def _audience_trigger(
    table: str, key_column: str, tag: str, watched: str | None, op: str
) -> list[str]:
    name = f"trigger_audience_{tag}_a{op[0].lower()}s"
    call = f"tidings_record_stale_audience('{tag}', '{key_column}', '{watched or ''}')"
    return [
        f"DROP TRIGGER IF EXISTS {name} ON {table}",
        f"""CREATE TRIGGER {name} AFTER {op} ON {table}
    {_TRANSITION_TABLES[op]}
    FOR EACH STATEMENT EXECUTE FUNCTION {call}""",
    ]


def _trigger(table: str, label: str, op: str, call: str) -> list[str]:
    name = f"trigger_{label}_a{op[0].lower()}s"
    return [
        f"DROP TRIGGER IF EXISTS {name} ON {table}",
        f"""CREATE TRIGGER {name} AFTER {op} ON {table}
    REFERENCING NEW TABLE AS new_table
    FOR EACH STATEMENT EXECUTE FUNCTION {call}""",
    ]


def install_statements() -> list[str]:
    """Statements that install every trigger; running them again changes nothing."""
    parts = [
        _history_function("fn_audit_history_by_history_id", "history_id"),
        _history_function("fn_audit_history_by_id", "id"),
        *CHANGE_AUDIT_TABLE,
        CHANGE_FUNCTION,
        AUDIENCE_FUNCTION,
    ]
    for table, id_field, function in HISTORY_SOURCES:
        for op in ("INSERT", "UPDATE"):
            label = f"history_audit_by_{id_field}"
            parts += _trigger(table, label, op, f"{function}()")
    for table, key_column, kind in CHANGE_SOURCES:
        for op in ("INSERT", "UPDATE"):
            call = f"tidings_record_change('{kind}', '{key_column}')"
            parts += _trigger(table, f"tidings_{kind}", op, call)
    for table, key_column, kind in UPDATE_CHANGE_SOURCES:
        call = f"tidings_record_change('{kind}', '{key_column}')"
        parts += _trigger(table, f"tidings_{kind}", "UPDATE", call)
    for table, key_column, tag, watched, operations in AUDIENCE_SOURCES:
        for op in operations:
            parts += _audience_trigger(table, key_column, tag, watched, op)
    return parts


def remove_statements() -> list[str]:
    """Statements that drop every trigger and function `install_statements` makes."""
    return [
        "DROP FUNCTION IF EXISTS fn_audit_history_by_history_id() CASCADE",
        "DROP FUNCTION IF EXISTS fn_audit_history_by_id() CASCADE",
        "DROP FUNCTION IF EXISTS tidings_record_change() CASCADE",
        "DROP FUNCTION IF EXISTS tidings_record_stale_audience() CASCADE",
    ]
