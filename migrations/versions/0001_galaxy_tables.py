"""Galaxy-shaped tables that Tidings reads and watches.

Table and column names follow Galaxy's model, so the trigger migration also
applies to a real Galaxy database. Timestamps are `timestamp without time
zone` holding UTC, as in Galaxy.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE galaxy_user (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    email varchar(255) NOT NULL UNIQUE,
    username varchar(255) UNIQUE,
    password varchar(255) NOT NULL DEFAULT '',
    last_password_change timestamp,
    external boolean NOT NULL DEFAULT false,
    deleted boolean NOT NULL DEFAULT false,
    purged boolean NOT NULL DEFAULT false,
    active boolean NOT NULL DEFAULT true,
    activation_token varchar(64),
    disk_usage numeric(15, 0)
);
CREATE INDEX ix_galaxy_user_deleted ON galaxy_user (deleted);

CREATE TABLE history (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    user_id integer REFERENCES galaxy_user (id),
    name varchar(255),
    hid_counter integer NOT NULL DEFAULT 1,
    deleted boolean NOT NULL DEFAULT false,
    purged boolean NOT NULL DEFAULT false,
    importing boolean NOT NULL DEFAULT false,
    genome_build varchar(40),
    importable boolean NOT NULL DEFAULT false,
    slug text,
    published boolean NOT NULL DEFAULT false,
    archived boolean NOT NULL DEFAULT false,
    preferred_object_store_id varchar(255)
);
CREATE INDEX ix_history_user_id ON history (user_id);
CREATE INDEX ix_history_update_time ON history (update_time);

CREATE TABLE galaxy_session (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    user_id integer REFERENCES galaxy_user (id),
    remote_host varchar(255),
    remote_addr varchar(255),
    referer text,
    current_history_id integer REFERENCES history (id),
    session_key varchar(255) UNIQUE,
    is_valid boolean NOT NULL DEFAULT false,
    prev_session_id integer,
    last_action timestamp,
    disk_usage numeric(15, 0)
);
CREATE INDEX ix_galaxy_session_user_id ON galaxy_session (user_id);

CREATE TABLE galaxy_session_to_history (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    session_id integer REFERENCES galaxy_session (id),
    history_id integer REFERENCES history (id)
);
CREATE INDEX ix_galaxy_session_to_history_session_id
    ON galaxy_session_to_history (session_id);
CREATE INDEX ix_galaxy_session_to_history_history_id
    ON galaxy_session_to_history (history_id);

CREATE TABLE api_keys (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    user_id integer REFERENCES galaxy_user (id),
    key varchar(32) UNIQUE,
    deleted boolean NOT NULL DEFAULT false
);
CREATE INDEX ix_api_keys_user_id ON api_keys (user_id);

CREATE TABLE history_dataset_association (
    id serial PRIMARY KEY,
    history_id integer REFERENCES history (id),
    dataset_id integer,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    hid integer,
    name varchar(255),
    info varchar(255),
    blurb varchar(255),
    peek text,
    extension varchar(64),
    state varchar(64),
    deleted boolean NOT NULL DEFAULT false,
    visible boolean NOT NULL DEFAULT true,
    purged boolean NOT NULL DEFAULT false
);
CREATE INDEX ix_hda_history_id ON history_dataset_association (history_id);
CREATE INDEX ix_hda_update_time ON history_dataset_association (update_time);

CREATE TABLE history_dataset_collection_association (
    id serial PRIMARY KEY,
    collection_id integer,
    history_id integer REFERENCES history (id),
    name varchar(255),
    hid integer,
    visible boolean NOT NULL DEFAULT true,
    deleted boolean NOT NULL DEFAULT false,
    implicit_output_name varchar(255),
    job_id integer,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX ix_hdca_history_id ON history_dataset_collection_association (history_id);
CREATE INDEX ix_hdca_update_time
    ON history_dataset_collection_association (update_time);

CREATE TABLE history_audit (
    history_id integer NOT NULL REFERENCES history (id),
    update_time timestamp NOT NULL,
    PRIMARY KEY (history_id, update_time)
);
CREATE INDEX ix_history_audit_update_time ON history_audit (update_time);

CREATE TABLE galaxy_group (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    name varchar(255) UNIQUE,
    deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE role (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    name varchar(255),
    description text,
    type varchar(40),
    deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE user_group_association (
    id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES galaxy_user (id),
    group_id integer NOT NULL REFERENCES galaxy_group (id),
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (user_id, group_id)
);

CREATE TABLE user_role_association (
    id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES galaxy_user (id),
    role_id integer NOT NULL REFERENCES role (id),
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (user_id, role_id)
);

CREATE TABLE group_role_association (
    id serial PRIMARY KEY,
    group_id integer NOT NULL REFERENCES galaxy_group (id),
    role_id integer NOT NULL REFERENCES role (id),
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (group_id, role_id)
);

CREATE TABLE notification (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    publication_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    expiration_time timestamp
        DEFAULT ((now() AT TIME ZONE 'UTC') + interval '6 months'),
    source varchar(32),
    category varchar(64),
    variant varchar(16),
    content text,
    dispatched boolean NOT NULL DEFAULT false,
    galaxy_url varchar(255)
);
CREATE INDEX ix_notification_category ON notification (category);
CREATE INDEX ix_notification_publication_time ON notification (publication_time);

CREATE TABLE user_notification_association (
    id serial PRIMARY KEY,
    user_id integer REFERENCES galaxy_user (id),
    notification_id integer REFERENCES notification (id),
    seen_time timestamp,
    deleted boolean NOT NULL DEFAULT false,
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX ix_una_user_id ON user_notification_association (user_id);
CREATE INDEX ix_una_notification_id ON user_notification_association (notification_id);

CREATE TABLE job (
    id serial PRIMARY KEY,
    create_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    update_time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    history_id integer REFERENCES history (id),
    tool_id varchar(255),
    tool_version text,
    state varchar(64),
    session_id integer REFERENCES galaxy_session (id),
    user_id integer REFERENCES galaxy_user (id)
);
CREATE INDEX ix_job_user_id ON job (user_id);

CREATE TABLE interactivetool_entry_point (
    id serial PRIMARY KEY,
    job_id integer REFERENCES job (id),
    name text,
    token text,
    tool_port integer,
    host text,
    port integer,
    protocol text,
    entry_url text,
    requires_domain boolean DEFAULT true,
    requires_path_in_url boolean DEFAULT false,
    requires_path_in_header_named text,
    info text,
    configured boolean DEFAULT false,
    deleted boolean DEFAULT false,
    created_time timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    modified_time timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    label text
);
CREATE INDEX ix_itep_job_id ON interactivetool_entry_point (job_id);
"""

DROP_ORDER = [
    "interactivetool_entry_point",
    "job",
    "user_notification_association",
    "notification",
    "group_role_association",
    "user_role_association",
    "user_group_association",
    "role",
    "galaxy_group",
    "history_audit",
    "history_dataset_collection_association",
    "history_dataset_association",
    "api_keys",
    "galaxy_session_to_history",
    "galaxy_session",
    "history",
    "galaxy_user",
]


def upgrade() -> None:
    # asyncpg runs one statement per call.
    for statement in TABLES.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in DROP_ORDER:
        op.execute(f"DROP TABLE IF EXISTS {table}")
