"""Property: after random changes, each stream contains exactly the events it may see.

Hypothesis draws users, groups, roles, anonymous sessions, histories and a
sequence of changes (history edits, notifications to users, groups and
roles, seen marks, broadcasts, entry points, group joins, logins that adopt
anonymous histories). A small model decides which audience may see what; the
events stored in `TIDINGS_EVENTS` must match it per audience, with nothing
on any other subject.

The enricher resolves a change's audience when it handles it, so a change
to a row of an anonymous session that logs in soon after may reach either
that session or its new user, and the model allows both.

The seed is printed and can be replayed with `TIDINGS_TEST_SEED=<seed>`.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import asyncpg
import httpx
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_EMAIL, Pipeline
from tests.stored_events import last_sequence, read_events
from tidings.shared.subjects import ALL_AUDIENCE, session_audience, user_audience

SEED = int(os.environ.get("TIDINGS_TEST_SEED") or random.randrange(2**32))
_examples = itertools.count()
# Events of these types must arrive once per change; other types may be folded
# by the bridge when one row changes twice in quick succession.
COUNTED_TYPES = {"notification_update", "broadcast_update"}

Event = tuple[str, str]


@dataclass
class Expectation:
    """An event that must reach one of `audiences`."""

    event: Event
    audiences: set[str]
    # The anonymous session owning the changed row, whose login adds its user.
    session: int | None = None


@dataclass
class Scenario:
    """Rows to create and changes to make, by index into the drawn rows."""

    users: int
    groups: int
    roles: int
    sessions: int
    user_groups: list[tuple[int, int]]
    user_roles: list[tuple[int, int]]
    group_roles: list[tuple[int, int]]
    # Owner of each history: ("user", i) or ("session", j).
    histories: list[tuple[str, int]]
    steps: list[tuple]


@st.composite
def scenarios(draw) -> Scenario:
    """Draw a small world and a sequence of changes in it."""
    users = draw(st.integers(2, 4))
    groups = draw(st.integers(0, 2))
    roles = draw(st.integers(0, 2))
    sessions = draw(st.integers(1, 2))

    def pairs(left: int, right: int) -> st.SearchStrategy:
        if not left or not right:
            return st.just([])
        pair = st.tuples(st.integers(0, left - 1), st.integers(0, right - 1))
        return st.lists(pair, max_size=4, unique=True)

    owner = st.one_of(
        st.tuples(st.just("user"), st.integers(0, users - 1)),
        st.tuples(st.just("session"), st.integers(0, sessions - 1)),
    )
    histories = draw(st.lists(owner, min_size=1, max_size=4))
    subset = st.lists(st.integers(0, 9), max_size=3, unique=True)
    step = st.one_of(
        st.tuples(st.just("touch"), st.integers(0, len(histories) - 1)),
        st.tuples(st.just("notify"), subset, subset, subset),
        st.tuples(st.just("seen"), st.integers(0, users - 1)),
        st.tuples(st.just("broadcast")),
        st.tuples(st.just("entry_point"), owner),
        st.tuples(st.just("join"), st.integers(0, users - 1), st.integers(0, 9)),
        st.tuples(
            st.just("login"), st.integers(0, sessions - 1), st.integers(0, users - 1)
        ),
    )
    return Scenario(
        users=users,
        groups=groups,
        roles=roles,
        sessions=sessions,
        user_groups=draw(pairs(users, groups)),
        user_roles=draw(pairs(users, roles)),
        group_roles=draw(pairs(groups, roles)),
        histories=histories,
        steps=draw(st.lists(step, min_size=1, max_size=8)),
    )


@dataclass
class World:
    """The rows of one example and the model of who may see what."""

    db: asyncpg.Pool
    client: httpx.AsyncClient
    admin_headers: dict[str, str]
    user_ids: list[int] = field(default_factory=list)
    user_keys: list[str] = field(default_factory=list)
    group_ids: list[int] = field(default_factory=list)
    role_ids: list[int] = field(default_factory=list)
    session_ids: list[int] = field(default_factory=list)
    session_keys: list[str] = field(default_factory=list)
    history_ids: list[int] = field(default_factory=list)
    history_owner: dict[int, tuple[str, int]] = field(default_factory=dict)
    logged_in: dict[int, int] = field(default_factory=dict)
    user_groups: set[tuple[int, int]] = field(default_factory=set)
    user_roles: set[tuple[int, int]] = field(default_factory=set)
    group_roles: set[tuple[int, int]] = field(default_factory=set)
    received: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    seen: set[tuple[int, str]] = field(default_factory=set)
    expected: list[Expectation] = field(default_factory=list)
    # Notification and broadcast events, counted per audience.
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def audience_of(self, owner: tuple[str, int]) -> str | None:
        """Audience of a row owned by a user or an anonymous session."""
        kind, index = owner
        if kind == "user":
            return user_audience(self.user_ids[index])
        if index in self.logged_in:
            return user_audience(self.user_ids[self.logged_in[index]])
        return session_audience(self.session_keys[index])

    def expect(self, owner: tuple[str, int], event: Event) -> None:
        """Expect `event` at the audience of `owner`, or at its later user."""
        session = owner[1] if owner[0] == "session" else None
        if session in self.logged_in:
            session = None
        self.expected.append(Expectation(event, {self.audience_of(owner)}, session))

    def expect_counted(self, audience: str, event: Event) -> None:
        """Expect `event` at `audience`, once more than so far."""
        self.expected.append(Expectation(event, {audience}))
        self.counts[audience][event] += 1

    def recipients(
        self, users: set[int], groups: set[int], roles: set[int]
    ) -> set[int]:
        """Galaxy's expansion: close groups and roles, then add their members."""
        while True:
            more_roles = {r for g, r in self.group_roles if g in groups} - roles
            more_groups = {g for g, r in self.group_roles if r in roles} - groups
            if not more_roles and not more_groups:
                break
            roles |= more_roles
            groups |= more_groups
        members = {u for u, g in self.user_groups if g in groups}
        members |= {u for u, r in self.user_roles if r in roles}
        return users | members


async def _build(world: World, scenario: Scenario, example: int) -> None:
    db = world.db
    for i in range(scenario.users):
        key = secrets.token_hex(16)
        user_id = await db.fetchval(
            "INSERT INTO galaxy_user (email) VALUES ($1) RETURNING id",
            f"e{example}u{i}@example.org",
        )
        await db.execute(
            "INSERT INTO api_keys (user_id, key) VALUES ($1, $2)", user_id, key
        )
        world.user_ids.append(user_id)
        world.user_keys.append(key)
    for i in range(scenario.groups):
        world.group_ids.append(
            await db.fetchval(
                "INSERT INTO galaxy_group (name) VALUES ($1) RETURNING id",
                f"e{example}g{i}",
            )
        )
    for i in range(scenario.roles):
        world.role_ids.append(
            await db.fetchval(
                "INSERT INTO role (name) VALUES ($1) RETURNING id", f"e{example}r{i}"
            )
        )
    for user, group in scenario.user_groups:
        await _join(world, user, group)
    for user, role in scenario.user_roles:
        world.user_roles.add((user, role))
        await db.execute(
            "INSERT INTO user_role_association (user_id, role_id) VALUES ($1, $2)",
            world.user_ids[user],
            world.role_ids[role],
        )
    for group, role in scenario.group_roles:
        world.group_roles.add((group, role))
        await db.execute(
            "INSERT INTO group_role_association (group_id, role_id) VALUES ($1, $2)",
            world.group_ids[group],
            world.role_ids[role],
        )
    for _ in range(scenario.sessions):
        key = secrets.token_hex(16)
        world.session_ids.append(
            await db.fetchval(
                "INSERT INTO galaxy_session (session_key, is_valid) VALUES ($1, true)"
                " RETURNING id",
                key,
            )
        )
        world.session_keys.append(key)
    for kind, index in scenario.histories:
        user_id = world.user_ids[index] if kind == "user" else None
        history_id = await db.fetchval(
            "INSERT INTO history (user_id, name) VALUES ($1, 'h') RETURNING id", user_id
        )
        if kind == "session":
            await db.execute(
                "INSERT INTO galaxy_session_to_history (session_id, history_id)"
                " VALUES ($1, $2)",
                world.session_ids[index],
                history_id,
            )
        world.history_ids.append(history_id)
        world.history_owner[history_id] = (kind, index)


async def _join(world: World, user: int, group: int) -> None:
    if (user, group) in world.user_groups:
        return
    world.user_groups.add((user, group))
    await world.db.execute(
        "INSERT INTO user_group_association (user_id, group_id) VALUES ($1, $2)",
        world.user_ids[user],
        world.group_ids[group],
    )


async def _touch(world: World, index: int) -> None:
    history_id = world.history_ids[index]
    await world.db.execute(
        "UPDATE history SET name = name || '.' WHERE id = $1", history_id
    )
    world.expect(world.history_owner[history_id], ("history_update", str(history_id)))


async def _notify(world: World, users: list[int], groups: list[int], roles: list[int]):
    users = [u for u in users if u < len(world.user_ids)]
    groups = [g for g in groups if g < len(world.group_ids)]
    roles = [r for r in roles if r < len(world.role_ids)]
    body = {
        "recipients": {
            "user_ids": [world.user_ids[u] for u in users],
            "group_ids": [world.group_ids[g] for g in groups],
            "role_ids": [world.role_ids[r] for r in roles],
        },
        "notification": {
            "source": "admin",
            "category": "message",
            "variant": "info",
            "content": {"category": "message", "subject": "S", "message": "M"},
        },
    }
    response = await world.client.post(
        "/notifications", json=body, headers=world.admin_headers
    )
    recipients = world.recipients(set(users), set(groups), set(roles))
    if not recipients:
        assert response.status_code == 400, response.text
        return
    assert response.status_code == 200, response.text
    notification_id = response.json()["notification"]["id"]
    assert response.json()["total_notifications_sent"] == len(recipients)
    for user in recipients:
        world.received[user].append(notification_id)
        event = ("notification_update", notification_id)
        world.expect_counted(user_audience(world.user_ids[user]), event)


async def _mark_seen(world: World, user: int) -> None:
    unseen = [n for n in world.received[user] if (user, n) not in world.seen]
    if not unseen:
        return
    notification_id = unseen[-1]
    response = await world.client.put(
        f"/notifications/{notification_id}",
        json={"seen": True},
        headers={"x-api-key": world.user_keys[user]},
    )
    assert response.status_code == 204, response.text
    world.seen.add((user, notification_id))
    event = ("notification_update", notification_id)
    world.expect_counted(user_audience(world.user_ids[user]), event)


async def _broadcast(world: World) -> None:
    body = {
        "source": "admin",
        "variant": "info",
        "content": {"category": "broadcast", "subject": "S", "message": "M"},
    }
    response = await world.client.post(
        "/notifications/broadcast", json=body, headers=world.admin_headers
    )
    assert response.status_code == 200, response.text
    event = ("broadcast_update", response.json()["notification"]["id"])
    world.expect_counted(ALL_AUDIENCE, event)


async def _entry_point(world: World, owner: tuple[str, int]) -> None:
    kind, index = owner
    if kind == "user":
        columns, value = "user_id", world.user_ids[index]
    else:
        columns, value = "session_id", world.session_ids[index]
    job_id = await world.db.fetchval(
        f"INSERT INTO job ({columns}, state) VALUES ($1, 'running') RETURNING id", value
    )
    entry_point = await world.db.fetchval(
        "INSERT INTO interactivetool_entry_point (job_id, name) VALUES ($1, 'e')"
        " RETURNING id",
        job_id,
    )
    world.expect(owner, ("entry_point_update", str(entry_point)))


async def _login(world: World, session: int, user: int) -> None:
    """Log an anonymous session in, adopting its anonymous histories, as Galaxy does."""
    if session in world.logged_in:
        return
    session_id, user_id = world.session_ids[session], world.user_ids[user]
    adopted = [h for h, o in world.history_owner.items() if o == ("session", session)]
    async with world.db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE galaxy_session SET user_id = $2 WHERE id = $1", session_id, user_id
        )
        await conn.execute(
            "UPDATE history SET user_id = $2 WHERE id = ANY($1::integer[])",
            adopted,
            user_id,
        )
    world.logged_in[session] = user
    for expectation in world.expected:
        if expectation.session == session:
            expectation.audiences.add(user_audience(user_id))
    for history_id in adopted:
        world.history_owner[history_id] = ("user", user)
        world.expect(("user", user), ("history_update", str(history_id)))


async def _apply(world: World, step: tuple) -> None:
    kind, *args = step
    if kind == "touch":
        await _touch(world, *args)
    elif kind == "notify":
        await _notify(world, *args)
    elif kind == "seen":
        await _mark_seen(world, *args)
    elif kind == "broadcast":
        await _broadcast(world)
    elif kind == "entry_point":
        await _entry_point(world, *args)
    elif kind == "join":
        user, group = args
        if world.group_ids:
            await _join(world, user, group % len(world.group_ids))
    else:
        await _login(world, *args)


@seed(SEED)
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
async def test_streams_hold_only_their_events(pipeline: Pipeline, scenario: Scenario):
    """Each audience's subject contains exactly the events its model allows."""
    print(f"isolation property seed {SEED} (replay: TIDINGS_TEST_SEED={SEED})")
    note(repr(scenario))
    example = next(_examples)
    db = pipeline.db
    admin_key = await db.fetchval(
        "SELECT k.key FROM api_keys AS k JOIN galaxy_user AS u ON u.id = k.user_id"
        " WHERE u.email = $1",
        ADMIN_EMAIL,
    )
    if admin_key is None:
        admin_key = secrets.token_hex(16)
        admin_id = await db.fetchval(
            "INSERT INTO galaxy_user (email) VALUES ($1) RETURNING id", ADMIN_EMAIL
        )
        await db.execute(
            "INSERT INTO api_keys (user_id, key) VALUES ($1, $2)", admin_id, admin_key
        )
    async with httpx.AsyncClient(base_url=pipeline.api_url) as client:
        world = World(db, client, {"x-api-key": admin_key})
        await _build(world, scenario, example)
        await pipeline.settle()
        start = await last_sequence(pipeline.settings.nats_url)

        for step in scenario.steps:
            await _apply(world, step)
        await pipeline.settle()

    events = await read_events(pipeline.settings.nats_url, ">", start)
    barrier = await db.fetchval(
        "SELECT id FROM galaxy_user WHERE email = 'barrier@example.org'"
    )
    stored = {
        (e.audience, (e.event_type, e.ids[0]))
        for e in events
        if e.audience != user_audience(barrier)
    }
    allowed = {(a, x.event) for x in world.expected for a in x.audiences}
    assert stored <= allowed, "events reached audiences that may not see them"
    for expectation in world.expected:
        reached = {(a, expectation.event) for a in expectation.audiences} & stored
        assert reached, f"{expectation} reached none of its audiences"
    counted = defaultdict(Counter)
    for event in events:
        if event.event_type in COUNTED_TYPES:
            counted[event.audience][(event.event_type, event.ids[0])] += 1
    assert counted == world.counts
