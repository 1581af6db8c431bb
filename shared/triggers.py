"""SQL of the change triggers, shared by the migration and the triggers-only install.

History triggers behave like Galaxy's own (statement level, one `history_audit`
row and one `pg_notify('galaxy_history_update', <history id>)` per distinct
history per statement), so the bridge works unchanged on a Galaxy database
that already has them. Other watched tables record into `tidings_change_audit`
and notify `tidings_change` with `<kind>:<key>`. Payloads carry ids only,
because NOTIFY payloads are capped at 8000 bytes.
"""

from __future__ import annotations

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
    ]
    for table, id_field, function in HISTORY_SOURCES:
        for op in ("INSERT", "UPDATE"):
            label = f"history_audit_by_{id_field}"
            parts += _trigger(table, label, op, f"{function}()")
    for table, key_column, kind in CHANGE_SOURCES:
        for op in ("INSERT", "UPDATE"):
            call = f"tidings_record_change('{kind}', '{key_column}')"
            parts += _trigger(table, f"tidings_{kind}", op, call)
    return parts


def remove_statements() -> list[str]:
    """Statements that drop every trigger and function `install_statements` makes."""
    return [
        "DROP FUNCTION IF EXISTS fn_audit_history_by_history_id() CASCADE",
        "DROP FUNCTION IF EXISTS fn_audit_history_by_id() CASCADE",
        "DROP FUNCTION IF EXISTS tidings_record_change() CASCADE",
    ]
