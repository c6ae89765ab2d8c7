"""SQL of the PostgreSQL store: the versioned schema and one statement per operation.

Times are microseconds since the epoch taken from the server's ``clock_timestamp()``, so
lease expiry never depends on a client clock. Fencing tokens live in the lease row, which
is kept (owner cleared) on release, so they survive restarts and only ever grow. A new
token is ``max(previous + 1, the server's clock in µs)`` (a hybrid logical clock): after
a failover to a standby that missed the last acquisitions, the new primary's clock is
already past the tokens it never saw, so none is handed out twice (see
docs/choices.md, "PostgreSQL").

The slots of a semaphore name live in one row with its token counter (minted the same way)
and its line of waiters (arrays of owners, tokens and expiries; of waiters, arrivals and
expiries), so that each slot operation is one statement that reads and writes the latest
version of that row (``ON CONFLICT DO UPDATE`` and ``UPDATE`` lock it and re-evaluate on
the newest committed version): two concurrent acquisitions can never both count the same
free slot.

Nothing relies on session state (no session advisory locks, no temp tables, no
``SET``), so the store works behind a transaction-pooling PgBouncer (protocol-level
prepared statements need PgBouncer 1.21+ with ``max_prepared_statements``, or the store
option ``prepared_statements=False``; LISTEN does not work there: ``wakeups="poll"``
and :data:`POLL_CHANGES`) — except the opt-in ``handoff="advisory"``, whose blocked
acquisitions queue in the server on a session-level advisory lock
(:data:`QUEUE_FUNCTIONS`) and so need a direct connection.
"""

from __future__ import annotations

from ..contract.records import RECENT_RUNS_KEPT

SCHEMA_VERSION = 5

#: Serialises concurrent first-time schema creation (transaction-scoped, PgBouncer-safe).
SCHEMA_LOCK_KEY = 0x636C7573  # "clus"

#: The slots of semaphores (schema version 5).
_SEMAPHORES = """CREATE TABLE IF NOT EXISTS clustersync_semaphores (
    ns text NOT NULL,
    name text NOT NULL,
    token bigint NOT NULL,
    owners text[] NOT NULL,
    tokens bigint[] NOT NULL,
    expires bigint[] NOT NULL,
    waiters text[] NOT NULL DEFAULT '{}',
    arrivals bigint[] NOT NULL DEFAULT '{}',
    wexpires bigint[] NOT NULL DEFAULT '{}',
    waiters_until_us bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, name)
)"""

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS clustersync_schema (
        version integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS clustersync_leases (
        ns text NOT NULL,
        name text NOT NULL,
        owner text,
        token bigint NOT NULL,
        expires_us bigint NOT NULL,
        waiters_until_us bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (ns, name)
    )""",
    """CREATE TABLE IF NOT EXISTS clustersync_recurring (
        ns text NOT NULL,
        key text NOT NULL,
        schedule text NOT NULL DEFAULT '',
        paused boolean NOT NULL DEFAULT false,
        triggered boolean NOT NULL DEFAULT false,
        last_started_us bigint,
        last_finished_us bigint,
        last_outcome text,
        last_error text,
        PRIMARY KEY (ns, key)
    )""",
    """CREATE TABLE IF NOT EXISTS clustersync_recurring_instances (
        ns text NOT NULL,
        key text NOT NULL,
        instance text NOT NULL,
        next_run_us bigint,
        expires_us bigint NOT NULL,
        PRIMARY KEY (ns, key, instance)
    )""",
    """CREATE TABLE IF NOT EXISTS clustersync_jobs (
        ns text NOT NULL,
        key text NOT NULL,
        run_at_us bigint NOT NULL,
        props text NOT NULL,
        due_us bigint NOT NULL,
        owner text,
        claim bigint NOT NULL DEFAULT 0,
        attempts integer NOT NULL DEFAULT 0,
        attempt_due_us bigint,
        claimed_us bigint,
        scheduled_by text NOT NULL DEFAULT '',
        trace text NOT NULL DEFAULT '',
        PRIMARY KEY (ns, key)
    )""",
    """CREATE TABLE IF NOT EXISTS clustersync_failed_jobs (
        ns text NOT NULL,
        key text NOT NULL,
        run_at_us bigint NOT NULL,
        props text NOT NULL,
        attempts integer NOT NULL,
        last_error text NOT NULL,
        failed_at_us bigint NOT NULL,
        PRIMARY KEY (ns, key)
    )""",
    """CREATE TABLE IF NOT EXISTS clustersync_runs (
        id bigserial PRIMARY KEY,
        ns text NOT NULL,
        kind text NOT NULL,
        key text NOT NULL,
        due_us bigint,
        started_us bigint,
        finished_us bigint NOT NULL,
        outcome text NOT NULL,
        error text,
        owner text NOT NULL,
        attempt integer NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS clustersync_runs_ns ON clustersync_runs (ns, id)",
    _SEMAPHORES,
    "CREATE INDEX IF NOT EXISTS clustersync_jobs_due ON clustersync_jobs (ns, due_us)",
    "CREATE INDEX IF NOT EXISTS clustersync_jobs_run_at ON clustersync_jobs (ns, run_at_us, key)",
    # Listing by key range in byte order (LIST_JOBS_PAGE). An index, not a schema version:
    # older versions of clustersync keep working on a store that has it.
    'CREATE INDEX IF NOT EXISTS clustersync_jobs_key ON clustersync_jobs (ns, key COLLATE "C")',
]

#: Statements that bring a store of the previous version to the version of the key.
MIGRATIONS: dict[int, list[str]] = {
    2: [
        "ALTER TABLE clustersync_leases"
        " ADD COLUMN IF NOT EXISTS waiters_until_us bigint NOT NULL DEFAULT 0"
    ],
    # Recurring jobs gain a registry (pause, trigger, last outcome, instances).
    3: [
        "INSERT INTO clustersync_recurring (ns, key, last_finished_us)"
        " SELECT ns, key, last_finished_us FROM clustersync_job_metadata"
        " ON CONFLICT (ns, key) DO NOTHING",
        "DROP TABLE clustersync_job_metadata",
    ],
    # One-shot jobs count their attempts, keep who scheduled them and their trace context
    # (the tables of failed jobs and recent runs are created by SCHEMA).
    4: [
        "ALTER TABLE clustersync_jobs ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0",
        "ALTER TABLE clustersync_jobs ADD COLUMN IF NOT EXISTS attempt_due_us bigint",
        "ALTER TABLE clustersync_jobs ADD COLUMN IF NOT EXISTS claimed_us bigint",
        "ALTER TABLE clustersync_jobs ADD COLUMN IF NOT EXISTS scheduled_by text NOT NULL"
        " DEFAULT ''",
        "ALTER TABLE clustersync_jobs ADD COLUMN IF NOT EXISTS trace text NOT NULL DEFAULT ''",
    ],
    # Semaphores.
    5: [_SEMAPHORES],
}

_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

#: A failed acquire marks the lease as waited for until the expiry it saw plus 5 s (a
#: waiter retries by that expiry at the latest), rewriting the mark only when it would
#: end less than 1 s after the current expiry; a release notifies only while marked.
WAITER_GRACE_US = 5_000_000
WAITER_MARGIN_US = 1_000_000

NOW = f"SELECT {_NOW}"

# The recent runs: each run adds a row; rows beyond the newest RECENT_RUNS_KEPT of the
# namespace (as the statement started) are deleted by the same statement.
_TRIM_RUNS = f"""trimmed AS (
    DELETE FROM clustersync_runs WHERE ns = %(ns)s AND id <= (
        SELECT id FROM clustersync_runs WHERE ns = %(ns)s ORDER BY id DESC
        LIMIT 1 OFFSET {RECENT_RUNS_KEPT - 1})
)"""

# The lease is taken if free (ON CONFLICT … WHERE expired); otherwise ``waiting`` marks it
# as waited for. The row lock taken by ON CONFLICT orders this against a release. Tokens:
# see the module docstring (a fresh name starts at the clock, as on Redis).
_TAKE_LEASE = """INSERT INTO clustersync_leases AS l (ns, name, owner, token, expires_us)
    SELECT %(ns)s, %(name)s, %(owner)s, now.us, now.us + %(ttl_us)s FROM now
    ON CONFLICT (ns, name) DO UPDATE
        SET owner = excluded.owner,
            -- The owner of the live lease retrying its acquisition keeps its token; a
            -- new token is max(previous + 1, the clock): excluded.token is now.us.
            token = CASE WHEN l.owner = excluded.owner
                AND l.expires_us > excluded.expires_us - %(ttl_us)s
                THEN l.token ELSE GREATEST(l.token + 1, excluded.token) END,
            expires_us = excluded.expires_us
        WHERE l.owner IS NULL OR l.owner = excluded.owner
            OR l.expires_us <= excluded.expires_us - %(ttl_us)s
    RETURNING token"""

ACQUIRE = f"""
WITH now AS (SELECT {_NOW} AS us),
old AS (SELECT expires_us, owner FROM clustersync_leases WHERE ns = %(ns)s AND name = %(name)s),
ins AS (
    {_TAKE_LEASE}
),
waiting AS (
    UPDATE clustersync_leases SET waiters_until_us = expires_us + {WAITER_GRACE_US}
    WHERE ns = %(ns)s AND name = %(name)s AND NOT EXISTS (SELECT 1 FROM ins)
        AND owner IS NOT NULL AND waiters_until_us < expires_us + {WAITER_MARGIN_US}
)
SELECT (SELECT token FROM ins), (SELECT old.expires_us - now.us FROM old, now)
"""

RENEW = f"""
UPDATE clustersync_leases SET expires_us = {_NOW} + %(ttl_us)s
WHERE ns = %(ns)s AND name = %(name)s AND owner = %(owner)s AND token = %(token)s
    AND expires_us > {_NOW}
"""

# The waiter mark is left in place (it ends by itself): the UPDATE returns the newest
# committed mark, so a waiter that marked the row just before is always notified.
RELEASE = f"""
WITH released AS (
    UPDATE clustersync_leases SET owner = NULL, expires_us = 0
    WHERE ns = %(ns)s AND name = %(name)s AND owner = %(owner)s AND token = %(token)s
        AND expires_us > {_NOW}
    RETURNING name, waiters_until_us
),
told AS (
    SELECT pg_notify(%(channel)s, 'lease:' || name) FROM released
    WHERE waiters_until_us > {_NOW}
)
SELECT (SELECT count(*) FROM told) FROM released
"""

BREAK = f"""
WITH broken AS (
    UPDATE clustersync_leases SET owner = NULL, expires_us = 0
    WHERE ns = %(ns)s AND name = %(name)s AND owner IS NOT NULL AND expires_us > {_NOW}
    RETURNING name, waiters_until_us
),
told AS (
    SELECT pg_notify(%(channel)s, 'lease:' || name) FROM broken
    WHERE waiters_until_us > {_NOW}
)
SELECT (SELECT count(*) FROM told) FROM broken
"""

LIST_LEASES = f"""
WITH now AS (SELECT {_NOW} AS us)
SELECT name, owner, token, expires_us - now.us FROM clustersync_leases, now
WHERE ns = %(ns)s AND owner IS NOT NULL AND expires_us > now.us ORDER BY name
"""

READ_LEASE = f"""
WITH now AS (SELECT {_NOW} AS us)
SELECT owner, token, expires_us - now.us FROM clustersync_leases, now
WHERE ns = %(ns)s AND name = %(name)s AND owner IS NOT NULL AND expires_us > now.us
"""

# -- slots --------------------------------------------------------------------------------
# One row per semaphore name: the counter ``token`` and the slots as parallel arrays,
# ordered by token. Every statement rewrites the arrays from the row version it locked
# (expired slots dropped on the way).

# The live slots of the locked row ``s``, with the caller's own live slot (if any)
# extended: owners, tokens, expiries, whether the caller holds one, how many, the
# earliest expiry.
_LIVE_SLOTS = """(
    SELECT coalesce(array_agg(o ORDER BY t), '{}') AS owners,
        coalesce(array_agg(t ORDER BY t), '{}') AS tokens,
        coalesce(array_agg(CASE WHEN o = %(owner)s THEN now.us + %(ttl_us)s ELSE e END
            ORDER BY t), '{}') AS expires,
        coalesce(bool_or(o = %(owner)s), false) AS mine,
        count(*) AS n,
        min(e) AS earliest
    FROM unnest(s.owners, s.tokens, s.expires) AS u(o, t, e)
    WHERE e > now.us
)"""

# The caller's live place in the line of the locked row ``s`` (NULLs: none).
_MY_PLACE = """(
    SELECT max(a) AS arrival, max(x) AS expiry
    FROM unnest(s.waiters, s.arrivals, s.wexpires) AS q(w, a, x)
    WHERE w = %(owner)s AND x > now.us
)"""

# The other live waiters of the locked row ``s`` (in line order), and how many of them
# are ahead of the caller (all, if it has no place), with the earliest expiry of those.
_OTHER_WAITERS = """(
    SELECT coalesce(array_agg(w ORDER BY a, w), '{}') AS waiters,
        coalesce(array_agg(a ORDER BY a, w), '{}') AS arrivals,
        coalesce(array_agg(x ORDER BY a, w), '{}') AS wexpires,
        count(*) FILTER (WHERE me.arrival IS NULL OR (a, w) < (me.arrival, %(owner)s::text))
            AS ahead,
        min(x) FILTER (WHERE me.arrival IS NULL OR (a, w) < (me.arrival, %(owner)s::text))
            AS earliest
    FROM unnest(s.waiters, s.arrivals, s.wexpires) AS q(w, a, x)
    WHERE x > now.us AND w <> %(owner)s
)"""

# The caller's arrival in the line of the updated row ``s`` (NULL: not in it).
_ARRIVAL = "s.arrivals[array_position(s.waiters, %(owner)s::text)]"

# Takes a slot if the live slots plus the waiters ahead of the caller are fewer than
# ``limit`` (or refreshes the caller's own slot); else the caller takes or keeps its
# place in the line (``wait_us`` > 0; renewed once less than half of it is left) and the
# name is marked as waited for until the earliest expiry plus the grace. Returns the
# caller's token (NULL: refused) and the µs until the earliest live slot or waiter ahead
# of the caller expires.
ACQUIRE_SLOT = f"""
WITH now AS (SELECT {_NOW} AS us)
INSERT INTO clustersync_semaphores AS s (ns, name, token, owners, tokens, expires)
SELECT %(ns)s, %(name)s, now.us, ARRAY[%(owner)s::text], ARRAY[now.us],
    ARRAY[now.us + %(ttl_us)s] FROM now
ON CONFLICT (ns, name) DO UPDATE SET
    (token, owners, tokens, expires, waiters, arrivals, wexpires, waiters_until_us) = (
    SELECT CASE WHEN pick.taken = 1 THEN GREATEST(s.token + 1, now.us) ELSE s.token END,
        live.owners || CASE WHEN pick.taken = 1 THEN ARRAY[%(owner)s::text] ELSE '{{}}' END,
        live.tokens || CASE WHEN pick.taken = 1 THEN ARRAY[GREATEST(s.token + 1, now.us)]
            ELSE '{{}}' END,
        live.expires || CASE WHEN pick.taken = 1 THEN ARRAY[now.us + %(ttl_us)s]
            ELSE '{{}}' END,
        line.waiters || CASE WHEN pick.queued THEN ARRAY[%(owner)s::text] ELSE '{{}}' END,
        line.arrivals || CASE WHEN pick.queued THEN ARRAY[coalesce(me.arrival, now.us)]
            ELSE '{{}}' END,
        line.wexpires || CASE WHEN NOT pick.queued THEN '{{}}'::bigint[]
            WHEN %(wait_us)s > 0 AND (me.expiry IS NULL OR me.expiry - now.us < %(wait_us)s / 2)
            THEN ARRAY[now.us + %(wait_us)s] ELSE ARRAY[me.expiry] END,
        CASE WHEN pick.taken = 0 AND NOT live.mine
            THEN greatest(s.waiters_until_us, least(live.earliest, line.earliest)
                + {WAITER_GRACE_US})
            ELSE s.waiters_until_us END
    FROM now, LATERAL {_LIVE_SLOTS} AS live, LATERAL {_MY_PLACE} AS me,
        LATERAL {_OTHER_WAITERS} AS line,
        LATERAL (
            SELECT CASE WHEN NOT live.mine AND live.n + line.ahead < %(limit)s THEN 1 ELSE 0
                END AS taken
        ) AS t,
        LATERAL (
            SELECT t.taken, t.taken = 0 AND NOT live.mine
                AND (%(wait_us)s > 0 OR me.arrival IS NOT NULL) AS queued
        ) AS pick
)
RETURNING s.tokens[array_position(s.owners, %(owner)s::text)],
    least(
        (SELECT min(e) FROM unnest(s.expires) AS e),
        (SELECT min(x) FROM unnest(s.waiters, s.arrivals, s.wexpires) AS q(w, a, x)
            WHERE w <> %(owner)s AND ({_ARRIVAL} IS NULL OR (a, w) < ({_ARRIVAL}, %(owner)s::text)))
    ) - (SELECT us FROM now)
"""

RENEW_SLOT = f"""
WITH now AS (SELECT {_NOW} AS us)
UPDATE clustersync_semaphores AS s SET (owners, tokens, expires) = (
    SELECT live.owners, live.tokens, live.expires FROM now, LATERAL {_LIVE_SLOTS} AS live
)
FROM now
WHERE s.ns = %(ns)s AND s.name = %(name)s
    AND s.tokens[array_position(s.owners, %(owner)s::text)] = %(token)s
    AND s.expires[array_position(s.owners, %(owner)s::text)] > now.us
"""

# The slots of the locked row ``s`` that stay: live, and not ended by this statement.
_KEPT_SLOTS = """(
    SELECT coalesce(array_agg(o ORDER BY t), '{}'), coalesce(array_agg(t ORDER BY t), '{}'),
        coalesce(array_agg(e ORDER BY t), '{}')
    FROM unnest(s.owners, s.tokens, s.expires) AS u(o, t, e)
    WHERE e > now.us AND NOT (%s)
)"""
_KEPT_RELEASED = _KEPT_SLOTS % "o = %(owner)s AND t = %(token)s"
_KEPT_UNBROKEN = _KEPT_SLOTS % "(%(token)s::bigint IS NULL OR t = %(token)s::bigint)"

_NOTIFY_WAITERS = """
told AS (
    SELECT pg_notify(%(channel)s, 'lease:' || name) FROM ended
    WHERE waiters_until_us > (SELECT us FROM now)
)"""

RELEASE_SLOT = f"""
WITH now AS (SELECT {_NOW} AS us),
ended AS (
    UPDATE clustersync_semaphores AS s
    SET (owners, tokens, expires) = {_KEPT_RELEASED}
    FROM now
    WHERE s.ns = %(ns)s AND s.name = %(name)s
        AND s.tokens[array_position(s.owners, %(owner)s::text)] = %(token)s
        AND s.expires[array_position(s.owners, %(owner)s::text)] > now.us
    RETURNING s.name, s.waiters_until_us
),{_NOTIFY_WAITERS}
SELECT (SELECT count(*) FROM told) FROM ended
"""

LEAVE_SLOT_QUEUE = f"""
WITH now AS (SELECT {_NOW} AS us),
ended AS (
    UPDATE clustersync_semaphores AS s SET (waiters, arrivals, wexpires) = (
        SELECT coalesce(array_agg(w ORDER BY a, w), '{{}}'),
            coalesce(array_agg(a ORDER BY a, w), '{{}}'),
            coalesce(array_agg(x ORDER BY a, w), '{{}}')
        FROM unnest(s.waiters, s.arrivals, s.wexpires) AS q(w, a, x)
        WHERE x > now.us AND w <> %(owner)s
    )
    FROM now
    WHERE s.ns = %(ns)s AND s.name = %(name)s
        AND s.wexpires[array_position(s.waiters, %(owner)s::text)] > now.us
    RETURNING s.name, s.waiters_until_us
),{_NOTIFY_WAITERS}
SELECT (SELECT count(*) FROM told) FROM ended
"""

# Returns how many slots it ended (counted in the statement's snapshot: exact unless a
# concurrent statement changed the slots meanwhile; only operators call this).
BREAK_SLOTS = f"""
WITH now AS (SELECT {_NOW} AS us),
doomed AS (
    SELECT count(*) AS n FROM clustersync_semaphores AS s, now,
        unnest(s.owners, s.tokens, s.expires) AS u(o, t, e)
    WHERE s.ns = %(ns)s AND s.name = %(name)s AND e > now.us
        AND (%(token)s::bigint IS NULL OR t = %(token)s::bigint)
),
ended AS (
    UPDATE clustersync_semaphores AS s
    SET (owners, tokens, expires) = {_KEPT_UNBROKEN}
    FROM now
    WHERE s.ns = %(ns)s AND s.name = %(name)s AND EXISTS (
        SELECT 1 FROM unnest(s.owners, s.tokens, s.expires) AS u(o, t, e)
        WHERE e > now.us AND (%(token)s::bigint IS NULL OR t = %(token)s::bigint)
    )
    RETURNING s.name, s.waiters_until_us
),{_NOTIFY_WAITERS}
SELECT doomed.n, (SELECT count(*) FROM told) FROM ended, doomed
"""

LIST_SLOTS = f"""
WITH now AS (SELECT {_NOW} AS us)
SELECT o, t, e - now.us FROM clustersync_semaphores AS s, now,
    unnest(s.owners, s.tokens, s.expires) AS u(o, t, e)
WHERE s.ns = %(ns)s AND s.name = %(name)s AND e > now.us
ORDER BY t
"""

GET_METADATA = f"""
SELECT r.last_finished_us, coalesce(r.paused, false), coalesce(r.triggered, false), {_NOW}
FROM (SELECT 1) AS one
LEFT JOIN clustersync_recurring r ON r.ns = %(ns)s AND r.key = %(key)s
"""

_HELD = f"""EXISTS (
    SELECT 1 FROM clustersync_leases WHERE ns = %(ns)s AND name = %(lease)s
        AND owner = %(owner)s AND token = %(token)s AND expires_us > {_NOW}
)"""

#: Registrations expired this long ago are deleted (crashed instances never unregister).
EXPIRED_INSTANCES_KEPT_US = 3_600_000_000

REGISTER_RECURRING = f"""
WITH job AS (
    INSERT INTO clustersync_recurring (ns, key, schedule) VALUES (%(ns)s, %(key)s, %(schedule)s)
    ON CONFLICT (ns, key) DO UPDATE SET schedule = excluded.schedule
),
purge AS (
    DELETE FROM clustersync_recurring_instances WHERE ns = %(ns)s AND key = %(key)s
        AND expires_us < {_NOW} - {EXPIRED_INSTANCES_KEPT_US}
)
INSERT INTO clustersync_recurring_instances (ns, key, instance, next_run_us, expires_us)
VALUES (%(ns)s, %(key)s, %(instance)s, %(next_run_us)s, {_NOW} + %(ttl_us)s)
ON CONFLICT (ns, key, instance) DO UPDATE
    SET next_run_us = excluded.next_run_us, expires_us = excluded.expires_us
"""

UNREGISTER_RECURRING = """
DELETE FROM clustersync_recurring_instances
WHERE ns = %(ns)s AND key = %(key)s AND instance = %(instance)s
"""

START_RUN = f"""
INSERT INTO clustersync_recurring AS r (ns, key, last_started_us)
SELECT %(ns)s, %(key)s, {_NOW} WHERE {_HELD}
ON CONFLICT (ns, key) DO UPDATE SET last_started_us = excluded.last_started_us, triggered = false
    WHERE NOT r.paused OR r.triggered
"""

SET_FINISHED = f"""
WITH finished AS (
    INSERT INTO clustersync_recurring (ns, key, last_finished_us, last_outcome, last_error)
    SELECT %(ns)s, %(key)s, {_NOW}, %(outcome)s, %(error)s WHERE {_HELD}
    ON CONFLICT (ns, key) DO UPDATE SET last_finished_us = excluded.last_finished_us,
        last_outcome = excluded.last_outcome, last_error = excluded.last_error
    RETURNING last_started_us, last_finished_us
),
run AS (
    INSERT INTO clustersync_runs
        (ns, kind, key, due_us, started_us, finished_us, outcome, error, owner, attempt)
    SELECT %(ns)s, 'recurring', %(key)s, NULL, last_started_us, last_finished_us,
        %(outcome)s, %(error)s, %(owner)s, 1 FROM finished
),
{_TRIM_RUNS}
SELECT count(*) FROM finished
"""

CONTROL_RECURRING = """
WITH changed AS (
    UPDATE clustersync_recurring
    SET paused = CASE WHEN %(action)s = 'trigger' THEN paused ELSE %(action)s = 'pause' END,
        triggered = triggered OR %(action)s = 'trigger'
    WHERE ns = %(ns)s AND key = %(key)s
    RETURNING key
),
told AS (SELECT pg_notify(%(channel)s, 'job:' || key) FROM changed)
SELECT (SELECT count(*) FROM told) FROM changed
"""

LIST_RECURRING = f"""
WITH now AS (SELECT {_NOW} AS us)
SELECT r.key, r.schedule, r.paused, r.triggered, r.last_started_us, r.last_finished_us,
    r.last_outcome, r.last_error,
    (SELECT min(i.next_run_us) FROM clustersync_recurring_instances i, now
        WHERE i.ns = r.ns AND i.key = r.key AND i.expires_us > now.us),
    (SELECT count(*) FROM clustersync_recurring_instances i, now
        WHERE i.ns = r.ns AND i.key = r.key AND i.expires_us > now.us)
FROM clustersync_recurring r WHERE r.ns = %(ns)s ORDER BY r.key COLLATE "C"
"""

# The notification says when the earliest new job is due ("jobs@<µs from now>", see
# backends.base.JOBS_DUE_PREFIX), so schedulers that wake up before then anyway skip it.
_JOBS_DUE = f"'jobs@' || (%(first_us)s - {_NOW})"

# A plain INSERT (no ON CONFLICT): one duplicate makes the whole statement fail, so a
# batch is stored all or nothing in one round trip. The notification is sent on commit.
_FAILED_AMONG = """blocked AS (
    SELECT 1 FROM clustersync_failed_jobs WHERE ns = %(ns)s AND key = ANY(%(keys)s::text[])
    LIMIT 1
)"""

PUT_JOBS = f"""
WITH {_FAILED_AMONG},
new AS (
    INSERT INTO clustersync_jobs
        (ns, key, run_at_us, props, due_us, attempt_due_us, scheduled_by, trace)
    SELECT %(ns)s, k, r, p, r, r, b, t
    FROM unnest(%(keys)s::text[], %(run_ats)s::bigint[], %(props)s::text[], %(bys)s::text[],
        %(traces)s::text[]) AS u(k, r, p, b, t)
    WHERE NOT EXISTS (SELECT 1 FROM blocked)
    RETURNING 1
)
SELECT count(*), (SELECT pg_notify(%(channel)s, {_JOBS_DUE}) WHERE EXISTS (SELECT 1 FROM new))
FROM new
"""

# One job: VALUES plans and runs faster than unnest of one-element arrays.
PUT_JOB = f"""
WITH {_FAILED_AMONG},
new AS (
    INSERT INTO clustersync_jobs
        (ns, key, run_at_us, props, due_us, attempt_due_us, scheduled_by, trace)
    SELECT %(ns)s, %(key)s, %(first_us)s, %(prop)s, %(first_us)s, %(first_us)s, %(by)s,
        %(trace)s
    WHERE NOT EXISTS (SELECT 1 FROM blocked)
    RETURNING 1
)
SELECT count(*), (SELECT pg_notify(%(channel)s, {_JOBS_DUE}) WHERE EXISTS (SELECT 1 FROM new))
FROM new
"""

# The slow path of storing jobs, after a plain INSERT met a duplicate key (or a failed
# job): in one transaction, store the jobs whose keys are free, then read every key of the
# batch; the caller rolls back unless each stored job is identical to the batch's (a retry).
PUT_JOBS_IF_ABSENT = """
INSERT INTO clustersync_jobs
    (ns, key, run_at_us, props, due_us, attempt_due_us, scheduled_by, trace)
SELECT %(ns)s, k, r, p, r, r, b, t
FROM unnest(%(keys)s::text[], %(run_ats)s::bigint[], %(props)s::text[], %(bys)s::text[],
    %(traces)s::text[]) AS u(k, r, p, b, t)
ON CONFLICT (ns, key) DO NOTHING
"""
STORED_JOBS = """
SELECT key, run_at_us, props FROM clustersync_jobs
WHERE ns = %(ns)s AND key = ANY(%(keys)s::text[])
"""
FAILED_AMONG = """
SELECT key FROM clustersync_failed_jobs WHERE ns = %(ns)s AND key = ANY(%(keys)s::text[])
"""
NOTIFY_JOBS = f"SELECT pg_notify(%(channel)s, {_JOBS_DUE})"

# The rows locked by the CTE are updated by their ctid (a Tid Scan): joining back on
# (ns, key) let the planner scan every row of the namespace when its statistics were
# stale (e.g. right after a large schedule_many): 3 s per claim with 1M pending jobs.
CLAIM_DUE = f"""
WITH now AS (SELECT {_NOW} AS us),
due AS (
    SELECT ctid FROM clustersync_jobs
    WHERE ns = %(ns)s AND due_us <= (SELECT us FROM now)
    ORDER BY due_us, key LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE clustersync_jobs AS j
    SET owner = %(owner)s, claim = j.claim + 1, attempts = j.attempts + 1,
        claimed_us = (SELECT us FROM now), due_us = (SELECT us FROM now) + %(ttl_us)s
    WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM due))
    RETURNING j.key, j.run_at_us, j.props, j.claim, j.attempts,
        coalesce(j.attempt_due_us, j.run_at_us), j.claimed_us, j.scheduled_by, j.trace
)
SELECT key, run_at_us, props, claim, attempts, coalesce, claimed_us, scheduled_by, trace
FROM claimed ORDER BY run_at_us, key
"""

RENEW_CLAIMS = f"""
UPDATE clustersync_jobs AS j SET due_us = {_NOW} + %(ttl_us)s
FROM unnest(%(keys)s::text[], %(claims)s::bigint[]) AS t(k, c)
WHERE j.ns = %(ns)s AND j.key = t.k AND j.claim = t.c AND j.owner = %(owner)s
    AND j.due_us > {_NOW}
RETURNING j.key
"""

_CLAIMED = """claimed AS (
    SELECT * FROM clustersync_jobs
    WHERE ns = %(ns)s AND key = %(key)s AND owner = %(owner)s AND claim = %(claim)s
    FOR UPDATE
)"""

COMPLETE = f"""
WITH {_CLAIMED},
done AS (
    DELETE FROM clustersync_jobs j USING claimed c WHERE j.ns = c.ns AND j.key = c.key
    RETURNING c.attempt_due_us, c.claimed_us, c.attempts
),
run AS (
    INSERT INTO clustersync_runs
        (ns, kind, key, due_us, started_us, finished_us, outcome, error, owner, attempt)
    SELECT %(ns)s, 'once', %(key)s, attempt_due_us, claimed_us, {_NOW}, %(outcome)s,
        %(error)s, %(owner)s, attempts FROM done
),
{_TRIM_RUNS}
SELECT count(*) FROM done
"""

RETRY_JOB = f"""
WITH {_CLAIMED},
again AS (
    UPDATE clustersync_jobs j SET owner = NULL, due_us = {_NOW} + %(delay_us)s,
        attempt_due_us = {_NOW} + %(delay_us)s,
        attempts = j.attempts - CASE WHEN %(count)s THEN 0 ELSE 1 END
    FROM claimed c WHERE j.ns = c.ns AND j.key = c.key
    RETURNING c.attempt_due_us, c.claimed_us, c.attempts
),
run AS (
    INSERT INTO clustersync_runs
        (ns, kind, key, due_us, started_us, finished_us, outcome, error, owner, attempt)
    SELECT %(ns)s, 'once', %(key)s, attempt_due_us, claimed_us, {_NOW}, 'retry', %(error)s,
        %(owner)s, attempts FROM again WHERE %(count)s
),
{_TRIM_RUNS},
told AS (SELECT pg_notify(%(channel)s, 'jobs') FROM again)
SELECT count(*), (SELECT count(*) FROM told) FROM again
"""

FAIL_JOB = f"""
WITH {_CLAIMED},
done AS (
    DELETE FROM clustersync_jobs j USING claimed c WHERE j.ns = c.ns AND j.key = c.key
    RETURNING c.run_at_us, c.props, c.attempt_due_us, c.claimed_us, c.attempts
),
failed AS (
    INSERT INTO clustersync_failed_jobs
        (ns, key, run_at_us, props, attempts, last_error, failed_at_us)
    SELECT %(ns)s, %(key)s, run_at_us, props, attempts, %(error)s, {_NOW} FROM done
),
run AS (
    INSERT INTO clustersync_runs
        (ns, kind, key, due_us, started_us, finished_us, outcome, error, owner, attempt)
    SELECT %(ns)s, 'once', %(key)s, attempt_due_us, claimed_us, {_NOW}, 'error', %(error)s,
        %(owner)s, attempts FROM done
),
{_TRIM_RUNS}
SELECT count(*) FROM done
"""

LIST_FAILED = """
SELECT key, run_at_us, props, attempts, last_error, failed_at_us FROM clustersync_failed_jobs
WHERE ns = %(ns)s ORDER BY key COLLATE "C"
"""

RETRY_FAILED = f"""
WITH gone AS (
    DELETE FROM clustersync_failed_jobs WHERE ns = %(ns)s AND key = %(key)s
    RETURNING run_at_us, props
),
back AS (
    INSERT INTO clustersync_jobs (ns, key, run_at_us, props, due_us, attempt_due_us)
    SELECT %(ns)s, %(key)s, run_at_us, props, {_NOW}, {_NOW} FROM gone
),
told AS (SELECT pg_notify(%(channel)s, 'jobs') FROM gone)
SELECT count(*), (SELECT count(*) FROM told) FROM gone
"""

RECENT_RUNS = """
SELECT kind, key, due_us, started_us, finished_us, outcome, error, owner, attempt
FROM clustersync_runs WHERE ns = %(ns)s ORDER BY id DESC LIMIT %(limit)s
"""

CANCEL = f"""
WITH gone AS (
    DELETE FROM clustersync_jobs WHERE ns = %(ns)s AND key = %(key)s RETURNING owner, due_us
),
failed AS (
    DELETE FROM clustersync_failed_jobs WHERE ns = %(ns)s AND key = %(key)s RETURNING 1
),
told AS (SELECT pg_notify(%(channel)s, 'jobs') FROM gone)
SELECT coalesce((SELECT owner IS NULL OR due_us <= {_NOW} FROM gone), false)
    OR EXISTS (SELECT 1 FROM failed),
    (SELECT count(*) FROM told)
"""

LIST_JOBS = f"""
SELECT key, run_at_us, props FROM clustersync_jobs
WHERE ns = %(ns)s AND (owner IS NULL OR due_us <= {_NOW})
ORDER BY run_at_us, key
"""

# ORDER BY … LIMIT 1 always reads one entry of the (ns, due_us) index; min() was planned as
# a scan of the whole namespace when its statistics were stale.
NEXT_DELAY = f"""
SELECT (SELECT due_us FROM clustersync_jobs WHERE ns = %(ns)s ORDER BY due_us LIMIT 1) - {_NOW}
"""


# Key order is byte order (COLLATE "C"), the same in every store, served by the index
# clustersync_jobs_key (the primary key follows the database's collation, which is not
# byte order in most locales). The bounds are index conditions, so a page costs its rows
# wherever it starts: ``low`` is the prefix (``>=``) or the last key of the previous page
# (``>``), ``high`` the end of the prefix's range (none for the empty prefix).
def list_jobs_page_sql(*, after: bool, bounded: bool) -> str:
    """The statement of one page of pending jobs in key order (see above)."""
    low = ">" if after else ">="
    high = 'AND key COLLATE "C" < %(high)s::text' if bounded else ""
    return f"""
WITH now AS (SELECT {_NOW} AS us)
SELECT key, run_at_us, props, owner IS NULL OR due_us <= now.us FROM clustersync_jobs, now
WHERE ns = %(ns)s AND key COLLATE "C" {low} %(low)s::text {high}
ORDER BY key COLLATE "C" LIMIT %(limit)s
"""


LIST_JOBS_PAGE = {
    (after, bounded): list_jobs_page_sql(after=after, bounded=bounded)
    for after in (False, True)
    for bounded in (False, True)
}

COUNT_JOBS = "SELECT count(*) FROM clustersync_jobs WHERE ns = %(ns)s"

# ``wakeups="poll"`` (no LISTEN, e.g. behind a transaction-pooling PgBouncer): one
# statement reports what waiters of this process may be waiting for — the earliest due
# time of the jobs (from the (ns, due_us) index), which of the watched leases (names a
# waiter of this process was refused) are free, and the recurring jobs paused or
# triggered (few rows: the primary key's range of the namespace).
POLL_CHANGES = f"""
WITH now AS (SELECT {_NOW} AS us)
SELECT now.us,
    (SELECT due_us FROM clustersync_jobs WHERE ns = %(ns)s ORDER BY due_us LIMIT 1),
    ARRAY(SELECT name FROM clustersync_leases
        WHERE ns = %(ns)s AND name = ANY(%(names)s::text[])
            AND (owner IS NULL OR expires_us <= now.us)),
    ARRAY(SELECT key FROM clustersync_recurring WHERE ns = %(ns)s AND paused),
    ARRAY(SELECT key FROM clustersync_recurring WHERE ns = %(ns)s AND triggered)
FROM now
"""


# -- the advisory queue (handoff="advisory") -------------------------------------------------
#
# A blocked acquisition waits in the server's lock queue: on a connection of its own it
# takes a session-level advisory lock on the name (for at most p_wait_ms), then the lease
# row exactly as ACQUIRE does, in one call. The release frees the row, then the advisory
# lock, in one call; the next waiter's backend wakes at once and takes the row (its
# INSERT waits for the release's commit, then sees the row free). The row stays the truth
# for ownership, tokens and expiry: a waiter whose wait ran out (a holder paused past its
# expiry keeps its advisory lock) still tries the row, and holders through the pool
# (non-blocking acquires, jobs) and through the queue exclude each other by the row alone.
# Functions, not a schema version: versions of clustersync without them keep working on
# a store that has them. Their name carries their own version.


def _in_function(statement: str) -> str:
    """A statement of this module with its parameters read from the function's arguments."""
    for name in ("ns", "name", "owner", "token", "ttl_us", "channel"):
        statement = statement.replace(f"%({name})s", f"p_{name}")
    return statement.strip()


#: Releases the lease of an owner whatever its token (a waiter leaving the queue after a
#: call whose answer it never saw: the lease may be its own).
RELEASE_OWNED = RELEASE.replace("AND token = %(token)s", "")

QUEUE_ACQUIRE = "SELECT * FROM clustersync_queue_acquire_v1(%s, %s, %s, %s, %s, %s)"
QUEUE_RELEASE = "SELECT clustersync_queue_release_v1(%s, %s, %s, %s, %s, %s)"
QUEUE_WITHDRAW = "SELECT clustersync_queue_withdraw_v1(%s, %s, %s, %s, %s)"

#: The lease taken, if it is free or expired (ACQUIRE without marking waiters).
TAKE_LEASE = f"WITH now AS (SELECT {_NOW} AS us) {_TAKE_LEASE}"


def _unlocking(verb: str, token_arg: str, release: str) -> str:
    """A queue function that frees the lease with ``release`` (True if it did), then
    the advisory lock of the caller's session."""
    return f"""CREATE OR REPLACE FUNCTION clustersync_queue_{verb}_v1(
    p_ns text, p_name text, p_owner text, {token_arg}p_channel text, p_key bigint)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    notified bigint;
BEGIN
    {_in_function(release)} INTO notified;
    PERFORM pg_advisory_unlock(p_key);
    RETURN notified IS NOT NULL;
END
$fn$"""


# The acquire function, on the path of a handoff: the waiter's backend wakes in
# pg_advisory_lock and takes the row with the one statement TAKE_LEASE (the whole ACQUIRE,
# which marks waiters and reads the remaining life, only if the row is held without the
# queue). A free advisory lock is taken without the subtransaction of the timed wait.
QUEUE_FUNCTIONS = [
    f"""CREATE OR REPLACE FUNCTION clustersync_queue_acquire_v1(
    p_ns text, p_name text, p_owner text, p_ttl_us bigint, p_key bigint, p_wait_ms integer,
    OUT locked boolean, OUT lease_token bigint, OUT remaining_us bigint, OUT waited boolean)
LANGUAGE plpgsql AS $fn$
BEGIN
    locked := pg_try_advisory_lock(p_key);
    waited := NOT locked;
    IF NOT locked THEN
        PERFORM set_config('lock_timeout', p_wait_ms::text, true);
        BEGIN
            PERFORM pg_advisory_lock(p_key);
            locked := true;
        EXCEPTION WHEN lock_not_available THEN
            locked := false;
        END;
        PERFORM set_config('lock_timeout', '0', true);
    END IF;
    {_in_function(TAKE_LEASE)} INTO lease_token;
    IF lease_token IS NULL THEN
        {_in_function(ACQUIRE)} INTO lease_token, remaining_us;
    END IF;
END
$fn$""",
    _unlocking("release", "p_token bigint, ", RELEASE),
    _unlocking("withdraw", "", RELEASE_OWNED),
]
