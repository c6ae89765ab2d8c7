"""SQL of the PostgreSQL store: the versioned schema and one statement per operation.

Times are microseconds since the epoch taken from the server's ``clock_timestamp()``, so
lease expiry never depends on a client clock. Fencing tokens live in the lease row, which
is kept (owner cleared) on release, so they survive restarts and only ever grow.
Nothing relies on session state (no session advisory locks, no temp tables, no
``SET``), so the store works behind a transaction-pooling PgBouncer (protocol-level
prepared statements need PgBouncer 1.22+, or the store option
``prepared_statements=False``).
"""

from __future__ import annotations

SCHEMA_VERSION = 3

#: Serialises concurrent first-time schema creation (transaction-scoped, PgBouncer-safe).
SCHEMA_LOCK_KEY = 0x636C7573  # "clus"

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
        PRIMARY KEY (ns, key)
    )""",
    "CREATE INDEX IF NOT EXISTS clustersync_jobs_due ON clustersync_jobs (ns, due_us)",
    "CREATE INDEX IF NOT EXISTS clustersync_jobs_run_at ON clustersync_jobs (ns, run_at_us, key)",
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
}

_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

#: A failed acquire marks the lease as waited for until the expiry it saw plus 5 s (a
#: waiter retries by that expiry at the latest), rewriting the mark only when it would
#: end less than 1 s after the current expiry; a release notifies only while marked.
WAITER_GRACE_US = 5_000_000
WAITER_MARGIN_US = 1_000_000

NOW = f"SELECT {_NOW}"

# The lease is taken if free (ON CONFLICT … WHERE expired); otherwise ``waiting`` marks it
# as waited for. The row lock taken by ON CONFLICT orders this against a release.
ACQUIRE = f"""
WITH now AS (SELECT {_NOW} AS us),
old AS (SELECT expires_us, owner FROM clustersync_leases WHERE ns = %(ns)s AND name = %(name)s),
ins AS (
    INSERT INTO clustersync_leases AS l (ns, name, owner, token, expires_us)
    SELECT %(ns)s, %(name)s, %(owner)s, 1, now.us + %(ttl_us)s FROM now
    ON CONFLICT (ns, name) DO UPDATE
        SET owner = excluded.owner,
            -- The owner of the live lease retrying its acquisition keeps its token.
            token = CASE WHEN l.owner = excluded.owner
                AND l.expires_us > excluded.expires_us - %(ttl_us)s
                THEN l.token ELSE l.token + 1 END,
            expires_us = excluded.expires_us
        WHERE l.owner IS NULL OR l.owner = excluded.owner
            OR l.expires_us <= excluded.expires_us - %(ttl_us)s
    RETURNING token
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
INSERT INTO clustersync_recurring (ns, key, last_finished_us, last_outcome, last_error)
SELECT %(ns)s, %(key)s, {_NOW}, %(outcome)s, %(error)s WHERE {_HELD}
ON CONFLICT (ns, key) DO UPDATE SET last_finished_us = excluded.last_finished_us,
    last_outcome = excluded.last_outcome, last_error = excluded.last_error
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
PUT_JOBS = f"""
WITH new AS (
    INSERT INTO clustersync_jobs (ns, key, run_at_us, props, due_us)
    SELECT %(ns)s, k, r, p, r
    FROM unnest(%(keys)s::text[], %(run_ats)s::bigint[], %(props)s::text[]) AS t(k, r, p)
)
SELECT pg_notify(%(channel)s, {_JOBS_DUE})
"""

# One job: VALUES plans and runs faster than unnest of one-element arrays.
PUT_JOB = f"""
WITH new AS (
    INSERT INTO clustersync_jobs (ns, key, run_at_us, props, due_us)
    VALUES (%(ns)s, %(key)s, %(first_us)s, %(props)s, %(first_us)s)
)
SELECT pg_notify(%(channel)s, {_JOBS_DUE})
"""

# The slow path of storing jobs, after a plain INSERT met a duplicate key: in one
# transaction, store the jobs whose keys are free, then read every key of the batch; the
# caller rolls back unless each stored job is identical to the batch's (a retry).
PUT_JOBS_IF_ABSENT = """
INSERT INTO clustersync_jobs (ns, key, run_at_us, props, due_us)
SELECT %(ns)s, k, r, p, r
FROM unnest(%(keys)s::text[], %(run_ats)s::bigint[], %(props)s::text[]) AS t(k, r, p)
ON CONFLICT (ns, key) DO NOTHING
"""
STORED_JOBS = """
SELECT key, run_at_us, props FROM clustersync_jobs
WHERE ns = %(ns)s AND key = ANY(%(keys)s::text[])
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
    SET owner = %(owner)s, claim = j.claim + 1, due_us = (SELECT us FROM now) + %(ttl_us)s
    WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM due))
    RETURNING j.key, j.run_at_us, j.props, j.claim
)
SELECT key, run_at_us, props, claim FROM claimed ORDER BY run_at_us, key
"""

RENEW_CLAIMS = f"""
UPDATE clustersync_jobs AS j SET due_us = {_NOW} + %(ttl_us)s
FROM unnest(%(keys)s::text[], %(claims)s::bigint[]) AS t(k, c)
WHERE j.ns = %(ns)s AND j.key = t.k AND j.claim = t.c AND j.owner = %(owner)s
    AND j.due_us > {_NOW}
RETURNING j.key
"""

COMPLETE = """
DELETE FROM clustersync_jobs
WHERE ns = %(ns)s AND key = %(key)s AND owner = %(owner)s AND claim = %(claim)s
"""

CANCEL = f"""
WITH gone AS (
    DELETE FROM clustersync_jobs WHERE ns = %(ns)s AND key = %(key)s RETURNING owner, due_us
),
told AS (SELECT pg_notify(%(channel)s, 'jobs') FROM gone)
SELECT gone.owner IS NULL OR gone.due_us <= {_NOW}, (SELECT count(*) FROM told) FROM gone
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

# Key order is byte order (COLLATE "C"), the same in every store; the primary key's index
# serves the range.
LIST_JOBS_PAGE = f"""
WITH now AS (SELECT {_NOW} AS us)
SELECT key, run_at_us, props, owner IS NULL OR due_us <= now.us FROM clustersync_jobs, now
WHERE ns = %(ns)s AND key COLLATE "C" >= %(prefix)s
    AND (%(after)s::text IS NULL OR key COLLATE "C" > %(after)s::text)
    AND (%(high)s::text IS NULL OR key COLLATE "C" < %(high)s::text)
ORDER BY key COLLATE "C" LIMIT %(limit)s
"""

COUNT_JOBS = "SELECT count(*) FROM clustersync_jobs WHERE ns = %(ns)s"
