/* lease_cases: the reply lease's rules (SPEC 8: each reply is generated once, by one
 * broker; db_reply_claim, db_reply_renew, db_reply_queue, db_reply_add with an owner),
 * written once against db.h only, for both backends: test_db.c runs them on SQLite files,
 * test_pg_lease.c on PostgreSQL databases. Not a header to include elsewhere.
 *
 * The file including it defines, before the #include:
 *   static struct db *lease_open(const char *name);  a new empty database for the case
 *   static struct db *lease_again(void);             a second connection to that database
 * and puts {NULL, lease_run_all} into its table of cases. Everything is checked through db.h, so
 * that the rules are the same on both. */
#ifndef PARLEY_TESTS_LEASE_CASES_H
#define PARLEY_TESTS_LEASE_CASES_H

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "db.h"
#include "unit.h"

#define LEASE_A     "vm1:8001"
#define LEASE_B     "vm2:8001"
#define LEASE_LONG  60000 /* ms: does not run out during a case */
#define LEASE_SHORT 50    /* ms: runs out after lease_pause() */

static struct db *lease_open(const char *name);
static struct db *lease_again(void);

static void lease_pause(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* Stores a user message that wants a reply; returns its id, or -1 (recorded). */
static int64_t lease_ask(struct db *db, const char *sid, const char *content)
{
    struct db_message_in in = {
        .session_id = sid, .role = "user", .content = content, .want_reply = true};
    struct db_message m;
    int64_t id;
    enum perr e = db_message_add(db, &in, &m, NULL, NULL);

    if (e) {
        UNIT_FAIL("db_message_add(\"%s\") returned %d", content, (int)e);
        return -1;
    }
    id = m.id;
    db_message_cleanup(&m);
    return id;
}

/* A reply to reply_to, as a broker stores it. */
static struct db_reply_in lease_reply(const char *sid, int64_t reply_to, const char *owner,
                                      const char *content, const char *status)
{
    struct db_reply_in r = {.session_id = sid,
                            .content = content,
                            .model = "echo",
                            .status = status,
                            .prompt_tokens = -1,
                            .completion_tokens = -1,
                            .duration_ms = 10,
                            .reply_to = reply_to,
                            .owner = owner};
    return r;
}

/* db_reply_add's result, the stored message freed. */
static enum perr lease_store(struct db *db, const struct db_reply_in *r)
{
    struct db_message m;
    enum perr e = db_reply_add(db, r, &m, NULL);

    if (e == PERR_OK)
        db_message_cleanup(&m);
    return e;
}

/* l joined with commas into out: the ids, or each message as role[/status]. */
static const char *lease_join(const struct db_message_list *l, bool ids, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < l->n && used < size; i++) {
        const struct db_message *m = &l->v[i];
        if (ids)
            used +=
                (size_t)snprintf(out + used, size - used, "%s%lld", i ? "," : "", (long long)m->id);
        else
            used += (size_t)snprintf(out + used, size - used, "%s%s%s%s", i ? "," : "", m->role,
                                     m->status ? "/" : "", m->status ? m->status : "");
    }
    return out;
}

/* The session's messages as role[/status] (lease_join), or "?" on failure. */
static const char *lease_history(struct db *db, const char *sid, char *out, size_t size)
{
    struct db_message_list l = {0};

    snprintf(out, size, "?");
    if (db_messages_since(db, sid, 0, 100, &l) == PERR_OK)
        lease_join(&l, false, out, size);
    db_message_list_cleanup(&l);
    return out;
}

/* The ids db_reply_queue gives node, or "?" on failure. */
static const char *lease_queue(struct db *db, const char *node, char *out, size_t size)
{
    struct db_message_list l = {0};

    snprintf(out, size, "?");
    if (db_reply_queue(db, node, &l) == PERR_OK)
        lease_join(&l, true, out, size);
    db_message_list_cleanup(&l);
    return out;
}

/* Whether node's claim of id succeeds (any failure recorded). */
static bool lease_claim(struct db *db, int64_t id, const char *node, int lease_ms)
{
    struct db_claim c;
    enum perr e = db_reply_claim(db, id, node, lease_ms, &c);
    bool got = c.claimed;

    if (e)
        UNIT_FAIL("db_reply_claim(%lld, %s) returned %d", (long long)id, node, (int)e);
    db_claim_cleanup(&c);
    return e == PERR_OK && got;
}

/* node claims id for LEASE_LONG; what comes back must be the rest (line: the caller's). */
static void lease_expect(int line, struct db *db, int64_t id, const char *node, bool claimed,
                         bool taken_over, const char *response_id, const char *partial,
                         int64_t chunks)
{
    struct db_claim c;
    enum perr e = db_reply_claim(db, id, node, LEASE_LONG, &c);

    if (e != PERR_OK || c.claimed != claimed || c.taken_over != taken_over ||
        strcmp(c.response_id, response_id) != 0 || (c.partial == NULL) != (partial == NULL) ||
        (partial && strcmp(c.partial, partial) != 0) || c.chunks != chunks)
        UNIT_FAIL("line %d: claim by %s: %d, claimed %d, taken_over %d, response_id \"%s\","
                  " partial \"%s\", chunks %lld",
                  line, node, (int)e, c.claimed, c.taken_over, c.response_id,
                  c.partial ? c.partial : "(null)", (long long)c.chunks);
    db_claim_cleanup(&c);
    db_claim_cleanup(&c); /* idempotent */
}
#define EXPECT_CLAIM(...) lease_expect(__LINE__, __VA_ARGS__)

/* Whether node's renewal of id finds the lease its own (any failure recorded). */
static bool lease_renew(struct db *db, int64_t id, const char *node, int lease_ms,
                        const char *response_id, const char *partial, int64_t chunks)
{
    bool mine = true;
    enum perr e = db_reply_renew(db, id, node, lease_ms, response_id, partial, chunks, &mine);

    if (e)
        UNIT_FAIL("db_reply_renew(%lld, %s) returned %d", (long long)id, node, (int)e);
    return e == PERR_OK && mine;
}

/* A new database with one session; sid gets its id. NULL (recorded) on failure. */
static struct db *lease_setup(const char *name, char sid[DB_ID_LEN])
{
    struct db *db = lease_open(name);
    struct db_session s;

    if (!db) {
        UNIT_FAIL("cannot open the database for %s", name);
        return NULL;
    }
    if (db_session_create(db, "echo", NULL, NULL, &s) != PERR_OK) {
        UNIT_FAIL("cannot create a session");
        db_close(db);
        return NULL;
    }
    memcpy(sid, s.id, DB_ID_LEN);
    db_session_cleanup(&s);
    return db;
}

/* ---- the cases ---- */

static void lease_claim_unclaimed(void)
{
    char sid[DB_ID_LEN];
    struct db *db = lease_setup("lease-unclaimed", sid);
    struct db_message_in plain = {.session_id = sid, .role = "user", .content = "no reply"};
    struct db_message m;
    struct db_claim c;
    int64_t id;

    REQUIRE(db != NULL);
    id = lease_ask(db, sid, "question");
    EXPECT_CLAIM(db, id, LEASE_A, true, false, "", NULL, 0);
    db_claim_cleanup(NULL);
    /* not queued: a message that wants no reply, an id that is not there */
    REQ_INT(db_message_add(db, &plain, &m, NULL, NULL), PERR_OK);
    EQ_INT(db_reply_claim(db, m.id, LEASE_A, LEASE_LONG, &c), PERR_NOT_FOUND);
    CHECK(!c.claimed);
    EQ_INT(db_reply_claim(db, m.id + 1000, LEASE_A, LEASE_LONG, &c), PERR_NOT_FOUND);
    db_message_cleanup(&m);
    db_close(db);
}

static void lease_claim_live(void)
{
    char sid[DB_ID_LEN];
    struct db *db = lease_setup("lease-live", sid);
    int64_t id;

    REQUIRE(db != NULL);
    id = lease_ask(db, sid, "question");
    CHECK(lease_claim(db, id, LEASE_A, LEASE_LONG));
    CHECK(lease_renew(db, id, LEASE_A, LEASE_LONG, "00000000000000r1", "Hello", 1));
    /* another node cannot while the lease is live, and learns nothing of it */
    EXPECT_CLAIM(db, id, LEASE_B, false, false, "", NULL, 0);
    CHECK(!lease_renew(db, id, LEASE_B, LEASE_LONG, "00000000000000r2", "x", 1));
    /* the holder may claim again (its own earlier run): what it had said comes back */
    EXPECT_CLAIM(db, id, LEASE_A, true, true, "00000000000000r1", "Hello", 1);
    CHECK(lease_renew(db, id, LEASE_A, LEASE_LONG, NULL, NULL, 0));
    db_close(db);
}

static void lease_take_over(void)
{
    char sid[DB_ID_LEN];
    struct db *db = lease_setup("lease-expiry", sid);
    int64_t id;

    REQUIRE(db != NULL);
    id = lease_ask(db, sid, "question");
    CHECK(lease_claim(db, id, LEASE_A, LEASE_SHORT));
    CHECK(lease_renew(db, id, LEASE_A, LEASE_SHORT, "00000000000000r1", "Hello wor", 3));
    REQUIRE(!unit_failed);
    lease_pause(2 * LEASE_SHORT);
    /* the holder's lease ran out: another node takes the reply over, with what it said */
    EXPECT_CLAIM(db, id, LEASE_B, true, true, "00000000000000r1", "Hello wor", 3);
    /* the one it was taken from: renewing tells it so, writes nothing, cannot claim back */
    CHECK(!lease_renew(db, id, LEASE_A, LEASE_LONG, "00000000000000r1", "Hello world", 4));
    CHECK(!lease_claim(db, id, LEASE_A, LEASE_LONG));
    /* a successful claim starts afresh: nothing of the old run is left */
    EXPECT_CLAIM(db, id, LEASE_B, true, true, "", NULL, 0);
    CHECK(lease_renew(db, id, LEASE_B, LEASE_LONG, "00000000000000r2", "Hi", 1));
    db_close(db);
}

static void lease_lost_stores_nothing(void)
{
    char sid[DB_ID_LEN], got[128];
    struct db *db = lease_setup("lease-lost", sid);
    struct db_reply_in r;
    struct db_session s;
    struct db_stats st;
    int64_t id;

    REQUIRE(db != NULL);
    id = lease_ask(db, sid, "question");
    CHECK(lease_claim(db, id, LEASE_A, LEASE_SHORT));
    lease_pause(2 * LEASE_SHORT);
    CHECK(lease_claim(db, id, LEASE_B, LEASE_LONG));
    REQUIRE(!unit_failed);
    r = lease_reply(sid, id, LEASE_A, "late answer", "complete");
    EQ_INT(lease_store(db, &r), PERR_NOT_FOUND);
    EQ_STR(lease_history(db, sid, got, sizeof got), "user");
    REQ_INT(db_session_get(db, sid, &s), PERR_OK);
    EQ_INT(s.message_count, 1);
    db_session_cleanup(&s);
    REQ_INT(db_stats_read(db, &st), PERR_OK);
    EQ_INT(st.replies_total, 0);
    CHECK(lease_renew(db, id, LEASE_B, LEASE_LONG, NULL, NULL, 0)); /* still queued, still B's */
    /* an owner that never held it, or a reply_to that is not queued: nothing either */
    r.owner = "vm3:8001";
    EQ_INT(lease_store(db, &r), PERR_NOT_FOUND);
    r = lease_reply(sid, 0, LEASE_B, "answers nothing", "complete");
    EQ_INT(lease_store(db, &r), PERR_NOT_FOUND);
    /* the holder's reply is stored and ends the lease */
    r = lease_reply(sid, id, LEASE_B, "answer", "complete");
    EQ_INT(lease_store(db, &r), PERR_OK);
    EQ_STR(lease_history(db, sid, got, sizeof got), "user,assistant/complete");
    CHECK(!lease_renew(db, id, LEASE_B, LEASE_LONG, NULL, NULL, 0));
    struct db_claim c;
    EQ_INT(db_reply_claim(db, id, LEASE_B, LEASE_LONG, &c), PERR_NOT_FOUND);
    EQ_INT(lease_store(db, &r), PERR_NOT_FOUND); /* answered: not twice */
    REQ_INT(db_stats_read(db, &st), PERR_OK);
    EQ_INT(st.replies_total, 1);
    /* a session deleted under a lease: the session is what is missing */
    id = lease_ask(db, sid, "another");
    CHECK(lease_claim(db, id, LEASE_A, LEASE_LONG));
    REQ_INT(db_session_delete(db, sid), PERR_OK);
    r = lease_reply(sid, id, LEASE_A, "answer", "complete");
    EQ_INT(lease_store(db, &r), PERR_SESSION_NOT_FOUND);
    db_close(db);
}

static void lease_keep_queued(void)
{
    char sid[DB_ID_LEN], got[128], want[64];
    struct db *db = lease_setup("lease-keep", sid);
    struct db_reply_in r;
    struct db_stats st;
    int64_t id, other;

    REQUIRE(db != NULL);
    id = lease_ask(db, sid, "question");
    CHECK(lease_claim(db, id, LEASE_A, LEASE_SHORT));
    CHECK(lease_renew(db, id, LEASE_A, LEASE_SHORT, "00000000000000r1", "Hel", 2));
    REQUIRE(!unit_failed);
    /* A dies; B takes over, stores A's text as incomplete and keeps the question queued */
    lease_pause(2 * LEASE_SHORT);
    CHECK(lease_claim(db, id, LEASE_B, LEASE_LONG));
    r = lease_reply(sid, id, LEASE_B, "Hel", "incomplete");
    r.keep_queued = true;
    EQ_INT(lease_store(db, &r), PERR_OK);
    CHECK(lease_renew(db, id, LEASE_B, LEASE_LONG, "00000000000000r2", "",
                      0)); /* still queued, B's */
    snprintf(want, sizeof want, "%lld", (long long)id);
    EQ_STR(lease_queue(db, LEASE_B, got, sizeof got), want);
    /* then B's own reply answers it */
    r = lease_reply(sid, id, LEASE_B, "Hello", "complete");
    EQ_INT(lease_store(db, &r), PERR_OK);
    EQ_STR(lease_queue(db, LEASE_B, got, sizeof got), "");
    EQ_STR(lease_history(db, sid, got, sizeof got), "user,assistant/incomplete,assistant/complete");
    REQ_INT(db_stats_read(db, &st), PERR_OK);
    EQ_INT(st.replies_total, 2); /* every stored reply counts, the incomplete one too */
    /* keep_queued without an owner (a caller that knows no leases) */
    other = lease_ask(db, sid, "again");
    r = lease_reply(sid, other, NULL, "half", "incomplete");
    r.keep_queued = true;
    EQ_INT(lease_store(db, &r), PERR_OK);
    snprintf(want, sizeof want, "%lld", (long long)other);
    EQ_STR(lease_queue(db, NULL, got, sizeof got), want);
    /* without an owner a reply is stored and drops the question, whoever holds it */
    CHECK(lease_claim(db, other, LEASE_A, LEASE_LONG));
    r = lease_reply(sid, other, NULL, "whole", "complete");
    EQ_INT(lease_store(db, &r), PERR_OK);
    EQ_STR(lease_queue(db, NULL, got, sizeof got), "");
    EQ_STR(lease_queue(db, LEASE_A, got, sizeof got), "");
    db_close(db);
}

static void lease_queue_by_node(void)
{
    char sid[DB_ID_LEN], got[128], want[128];
    struct db *db = lease_setup("lease-queue", sid);
    int64_t free_id, a_id, b_id, expired_id;

    REQUIRE(db != NULL);
    free_id = lease_ask(db, sid, "nobody's");
    a_id = lease_ask(db, sid, "A's");
    b_id = lease_ask(db, sid, "B's");
    expired_id = lease_ask(db, sid, "A's, ran out");
    CHECK(lease_claim(db, a_id, LEASE_A, LEASE_LONG));
    CHECK(lease_claim(db, b_id, LEASE_B, LEASE_LONG));
    CHECK(lease_claim(db, expired_id, LEASE_A, LEASE_SHORT));
    REQUIRE(!unit_failed);
    snprintf(want, sizeof want, "%lld,%lld,%lld", (long long)free_id, (long long)a_id,
             (long long)expired_id);
    EQ_STR(lease_queue(db, LEASE_A, got, sizeof got), want);
    snprintf(want, sizeof want, "%lld,%lld", (long long)free_id, (long long)b_id);
    EQ_STR(lease_queue(db, LEASE_B, got, sizeof got), want);
    snprintf(want, sizeof want, "%lld", (long long)free_id);
    EQ_STR(lease_queue(db, NULL, got, sizeof got), want);
    lease_pause(2 * LEASE_SHORT);
    snprintf(want, sizeof want, "%lld,%lld,%lld", (long long)free_id, (long long)b_id,
             (long long)expired_id);
    EQ_STR(lease_queue(db, LEASE_B, got, sizeof got), want);
    snprintf(want, sizeof want, "%lld,%lld", (long long)free_id, (long long)expired_id);
    EQ_STR(lease_queue(db, NULL, got, sizeof got), want);
    db_close(db);
}

static void lease_in_transaction(void)
{
    char sid[DB_ID_LEN];
    struct db *db = lease_setup("lease-tx", sid);
    int64_t id;

    REQUIRE(db != NULL);
    id = lease_ask(db, sid, "question");
    /* a claim inside the caller's transaction goes with it */
    REQ_INT(db_tx_begin(db), PERR_OK);
    CHECK(lease_claim(db, id, LEASE_A, LEASE_LONG));
    db_tx_rollback(db);
    CHECK(lease_claim(db, id, LEASE_B, LEASE_LONG));
    REQ_INT(db_tx_begin(db), PERR_OK);
    CHECK(!lease_claim(db, id, LEASE_A, LEASE_LONG));
    CHECK(lease_renew(db, id, LEASE_B, LEASE_LONG, "00000000000000r1", "Hi", 1));
    REQ_INT(db_tx_commit(db), PERR_OK);
    CHECK(!lease_claim(db, id, LEASE_A, LEASE_LONG));
    CHECK(lease_renew(db, id, LEASE_B, LEASE_LONG, "00000000000000r1", "Hi there", 2));
    db_close(db);
}

/* ---- two connections at once ---- */

struct lease_racer {
    struct db *db;
    int64_t id;
    const char *node;
    pthread_barrier_t *start;        /* NULL: go at once */
    const struct db_reply_in *reply; /* NULL: claim; else store it */
    enum perr e;
    bool claimed;
    int64_t took_ms;
};

static void *lease_race(void *arg)
{
    struct lease_racer *r = arg;
    int64_t t0;

    if (r->start)
        pthread_barrier_wait(r->start);
    t0 = clock_mono_ms();
    if (r->reply) {
        r->e = lease_store(r->db, r->reply);
    } else {
        struct db_claim c;
        r->e = db_reply_claim(r->db, r->id, r->node, LEASE_LONG, &c);
        r->claimed = c.claimed;
        db_claim_cleanup(&c);
    }
    r->took_ms = clock_mono_ms() - t0;
    return NULL;
}

/* Two connections claim one reply at the same moment, 20 times: exactly one gets it. */
static void lease_race_claims(void)
{
    char sid[DB_ID_LEN];
    struct db *a = lease_setup("lease-race", sid), *b = a ? lease_again() : NULL;
    int wins_a = 0, wins_b = 0;

    REQUIRE(a != NULL);
    if (!b) {
        db_close(a);
        UNIT_FAIL("cannot open a second connection");
        return;
    }
    for (int round = 0; round < 20 && !unit_failed; round++) {
        pthread_barrier_t start;
        int64_t id = lease_ask(a, sid, "question");
        struct lease_racer ra = {.db = a, .id = id, .node = LEASE_A, .start = &start};
        struct lease_racer rb = {.db = b, .id = id, .node = LEASE_B, .start = &start};
        pthread_t ta, tb;
        pthread_barrier_init(&start, NULL, 2);
        pthread_create(&ta, NULL, lease_race, &ra);
        pthread_create(&tb, NULL, lease_race, &rb);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&start);
        EQ_INT(ra.e, PERR_OK);
        EQ_INT(rb.e, PERR_OK);
        if (ra.claimed == rb.claimed)
            UNIT_FAIL("round %d: both claimed %s", round, ra.claimed ? "it" : "nothing");
        wins_a += ra.claimed;
        wins_b += rb.claimed;
    }
    fprintf(stderr, "lease race: %d won by A, %d by B\n", wins_a, wins_b);
    db_close(b);
    db_close(a);
}

/* A claim waits for a claim in progress on another connection, then sees its owner; a
 * reply whose owner lost the lease while it was being stored stores nothing. */
static void lease_waits_for_claim(void)
{
    char sid[DB_ID_LEN], got[128];
    struct db *a = lease_setup("lease-wait", sid), *b = a ? lease_again() : NULL;
    struct lease_racer rb;
    struct db_reply_in r;
    pthread_t t;
    int64_t id;

    REQUIRE(a != NULL);
    if (!b) {
        db_close(a);
        UNIT_FAIL("cannot open a second connection");
        return;
    }
    id = lease_ask(a, sid, "question");
    REQ_INT(db_tx_begin(a), PERR_OK);
    CHECK(lease_claim(a, id, LEASE_A, LEASE_LONG));
    rb = (struct lease_racer){.db = b, .id = id, .node = LEASE_B};
    pthread_create(&t, NULL, lease_race, &rb);
    lease_pause(200);
    EQ_INT(db_tx_commit(a), PERR_OK);
    pthread_join(t, NULL);
    EQ_INT(rb.e, PERR_OK);
    CHECK(!rb.claimed);
    CHECK(rb.took_ms >= 150); /* it waited for A's commit */

    /* A's lease runs out; B takes over in a transaction; A stores its reply meanwhile */
    CHECK(lease_renew(a, id, LEASE_A, LEASE_SHORT, NULL, NULL, 0));
    lease_pause(2 * LEASE_SHORT);
    REQ_INT(db_tx_begin(b), PERR_OK);
    CHECK(lease_claim(b, id, LEASE_B, LEASE_LONG));
    r = lease_reply(sid, id, LEASE_A, "A's answer", "complete");
    struct lease_racer ra = {.db = a, .reply = &r};
    pthread_create(&t, NULL, lease_race, &ra);
    lease_pause(200);
    EQ_INT(db_tx_commit(b), PERR_OK);
    pthread_join(t, NULL);
    EQ_INT(ra.e, PERR_NOT_FOUND);
    CHECK(ra.took_ms >= 150);
    EQ_STR(lease_history(a, sid, got, sizeof got), "user");
    r.owner = LEASE_B;
    EQ_INT(lease_store(b, &r), PERR_OK);
    EQ_STR(lease_history(a, sid, got, sizeof got), "user,assistant/complete");
    db_close(b);
    db_close(a);
}

static const struct unit_case lease_cases[] = {
    {"lease: a claim takes an unclaimed reply; not queued is not found", lease_claim_unclaimed},
    {"lease: no other node while it is live; the holder may claim again", lease_claim_live},
    {"lease: run out, taken over with what was said; the old holder is told", lease_take_over},
    {"lease: a reply whose owner lost the lease stores nothing", lease_lost_stores_nothing},
    {"lease: keep_queued stores an interrupted reply and keeps the question", lease_keep_queued},
    {"lease: db_reply_queue gives a node what it may take", lease_queue_by_node},
    {"lease: a claim goes with the caller's transaction", lease_in_transaction},
    {"lease: two connections claiming at once, exactly one gets it (20 rounds)", lease_race_claims},
    {"lease: a claim waits for one in progress; a store that lost the lease meanwhile stores"
     " nothing",
     lease_waits_for_claim},
};

/* Every case above, as one row of the includer's table ({NULL, lease_run_all}). */
static void lease_run_all(void)
{
    for (size_t i = 0; i < UNIT_COUNT(lease_cases); i++) {
        unit_begin();
        lease_cases[i].fn();
        unit_end("%s", lease_cases[i].name);
    }
}

#endif
