/* test_notify: the notification socket, both ends, in a temporary folder: the exact JSON
 * each event carries, a sender that never blocks (no listener, missing path, full
 * queue), what notify_listen replaces and refuses, and the packets notify_recv drops.
 * Not a test of the broker's event loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "notify.h"
#include "unit.h"

static char tmp_dir[] = "/tmp/parley-test-notify-XXXXXX";
static char sock[256]; /* the current case's socket path */

/* A send slower than this would mean the sender blocked. */
#define QUICK_MS 200

static const char *new_sock(const char *name)
{
    snprintf(sock, sizeof sock, "%s/%s.sock", tmp_dir, name);
    return sock;
}

/* Whether got is exactly the object that want (JSON text) spells. */
static int json_is(const json_t *got, const char *want)
{
    json_t *w = json_loads(want, 0, NULL);
    int same = got && w && json_equal(got, w);

    json_decref(w);
    return same;
}

#define EQ_JSON(got, want)                                                                         \
    do {                                                                                           \
        if (!json_is((got), (want))) {                                                             \
            char *g_ = (got) ? json_dumps((got), JSON_COMPACT | JSON_SORT_KEYS) : NULL;            \
            UNIT_FAIL("line %d: got %s, want %s", __LINE__, g_ ? g_ : "NULL", (want));             \
            free(g_);                                                                              \
        }                                                                                          \
    } while (0)

/* Sends raw bytes to path as one packet on a new connection; returns send's result. */
static ssize_t send_raw(const char *p, const void *buf, size_t len)
{
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ssize_t n = -1;

    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%.107s", p);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
    return n;
}

/* Leaves a socket file at p with nobody behind it, as a crashed broker does. */
static int make_stale_socket(const char *p)
{
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    int rc;

    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%.107s", p);
    rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    close(fd);
    return rc;
}

static int is_socket(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0 && S_ISSOCK(st.st_mode);
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* ---- cases ---- */

static void message_added_fields(void)
{
    struct notify_listener *fd = notify_listen(new_sock("added"));
    struct notify_sender *s;
    json_t *ev;
    bool again = true;

    REQUIRE(fd != NULL);
    EQ_INT(is_socket(sock), 1);
    s = notify_sender_new(sock);
    REQUIRE(s != NULL);
    EQ_INT(notify_message_added(s, "0123456789abcdef", 42, true), 0);
    ev = notify_recv(fd, &again);
    EQ_INT(again, false);
    EQ_JSON(ev, "{\"event\":\"message_added\",\"session_id\":\"0123456789abcdef\","
                "\"message_id\":42,\"reply\":true}");
    json_decref(ev);

    EQ_INT(notify_message_added(s, "fedcba9876543210", 9007199254740993LL, false), 0);
    ev = notify_recv(fd, &again);
    EQ_JSON(ev, "{\"event\":\"message_added\",\"session_id\":\"fedcba9876543210\","
                "\"message_id\":9007199254740993,\"reply\":false}");
    json_decref(ev);

    /* nothing more waiting */
    ev = notify_recv(fd, &again);
    EQ_INT(ev == NULL, 1);
    EQ_INT(again, true);
    json_decref(ev);
    notify_sender_free(s);
    notify_close(fd);
}

static const char *const session_events[] = {"session_created", "session_deleted",
                                             "history_cleared", "session_changed"};

static void session_event_fields(void)
{
    struct notify_listener *fd = notify_listen(new_sock("session"));
    struct notify_sender *s = notify_sender_new(sock);
    bool again;
    char want[160];

    REQUIRE(fd != NULL);
    REQUIRE(s != NULL);
    /* all sent first: they arrive whole and in order */
    for (size_t i = 0; i < UNIT_COUNT(session_events); i++)
        EQ_INT(notify_session_event(s, session_events[i], "00000000000000aa"), 0);
    for (size_t i = 0; i < UNIT_COUNT(session_events); i++) {
        json_t *ev = notify_recv(fd, &again);
        snprintf(want, sizeof want, "{\"event\":\"%s\",\"session_id\":\"00000000000000aa\"}",
                 session_events[i]);
        EQ_JSON(ev, want);
        EQ_INT(again, false);
        json_decref(ev);
    }
    EQ_INT(notify_recv(fd, &again) == NULL, 1);
    EQ_INT(again, true);
    notify_sender_free(s);
    notify_close(fd);
}

static void recv_empty_sets_again(void)
{
    struct notify_listener *fd = notify_listen(new_sock("empty"));
    bool again = false;
    int64_t t0;

    REQUIRE(fd != NULL);
    t0 = clock_mono_ms();
    EQ_INT(notify_recv(fd, &again) == NULL, 1);
    EQ_INT(again, true);
    CHECK(clock_mono_ms() - t0 < QUICK_MS);
    notify_close(fd);
}

/* With nobody listening the event is dropped at once, whatever is at the path. */
static void send_without_listener(void)
{
    static const char *const kinds[] = {"missing", "stale socket", "regular file"};

    for (size_t k = 0; k < UNIT_COUNT(kinds); k++) {
        struct notify_sender *s;
        int64_t t0;

        unit_begin();
        new_sock(k == 0 ? "nobody" : k == 1 ? "stale-nobody" : "file-nobody");
        if (k == 1)
            CHECK(make_stale_socket(sock) == 0 && is_socket(sock));
        if (k == 2) {
            int f = open(sock, O_CREAT | O_WRONLY, 0600);
            CHECK(f >= 0);
            close(f);
        }
        s = notify_sender_new(sock);
        if (!s) {
            UNIT_FAIL("notify_sender_new returned NULL");
        } else {
            t0 = clock_mono_ms();
            for (int i = 0; i < 50; i++) {
                EQ_INT(notify_message_added(s, "0123456789abcdef", i, false), -1);
                EQ_INT(notify_session_event(s, "session_deleted", "0123456789abcdef"), -1);
            }
            CHECK(clock_mono_ms() - t0 < QUICK_MS);
            notify_sender_free(s);
        }
        unlink(sock);
        unit_end("100 sends with no listener (%s path) return -1 at once", kinds[k]);
    }
}

static void null_sender(void)
{
    json_t *ev = json_pack("{s:s}", "event", "x");

    EQ_INT(notify_send(NULL, ev), -1);
    json_decref(ev);
    notify_sender_free(NULL);
}

static void path_too_long(void)
{
    char p[200];

    memset(p, 'a', sizeof p - 1);
    p[0] = '/';
    p[sizeof p - 1] = '\0';
    EQ_INT(notify_sender_new(p) == NULL, 1);
    EQ_INT(notify_listen(p) == NULL, 1);
}

/* A socket file left by a broker that did not exit cleanly is replaced. */
static void stale_socket_replaced(void)
{
    struct notify_listener *fd;
    struct notify_sender *s;
    bool again;
    json_t *ev;

    REQUIRE(make_stale_socket(new_sock("stale")) == 0);
    REQUIRE(is_socket(sock));
    fd = notify_listen(sock);
    REQUIRE(fd != NULL);
    s = notify_sender_new(sock);
    REQUIRE(s != NULL);
    EQ_INT(notify_session_event(s, "session_created", "0123456789abcdef"), 0);
    ev = notify_recv(fd, &again);
    EQ_JSON(ev, "{\"event\":\"session_created\",\"session_id\":\"0123456789abcdef\"}");
    json_decref(ev);
    notify_sender_free(s);
    notify_close(fd);
}

/* A socket a listener still holds is not stale: a second broker started on the same path
 * must not take it over (the first would silently stop hearing from REST). */
static void live_socket_not_replaced(void)
{
    struct notify_listener *first = notify_listen(new_sock("live")), *second;
    struct notify_sender *s;
    bool again;
    json_t *ev;

    REQUIRE(first != NULL);
    second = notify_listen(sock);
    EQ_INT(second == NULL, 1);
    s = notify_sender_new(sock);
    REQUIRE(s != NULL);
    EQ_INT(notify_session_event(s, "session_created", "0123456789abcdef"), 0);
    ev = notify_recv(first, &again);
    EQ_JSON(ev, "{\"event\":\"session_created\",\"session_id\":\"0123456789abcdef\"}");
    json_decref(ev);
    notify_sender_free(s);
    notify_close(first);
    unlink(sock);
}

/* Anything but a socket at the path is refused and left as it was. */
static void non_socket_refused(void)
{
    char buf[16] = {0};
    int f;

    f = open(new_sock("file"), O_CREAT | O_WRONLY | O_TRUNC, 0600);
    REQUIRE(f >= 0);
    EQ_INT(write(f, "keep me", 7), 7);
    close(f);
    EQ_INT(notify_listen(sock) == NULL, 1);
    f = open(sock, O_RDONLY);
    REQUIRE(f >= 0);
    EQ_INT(read(f, buf, sizeof buf - 1), 7);
    close(f);
    EQ_STR(buf, "keep me");
    unlink(sock);

    REQUIRE(mkdir(new_sock("dir"), 0700) == 0);
    EQ_INT(notify_listen(sock) == NULL, 1);
    EQ_INT(exists(sock), 1);
    rmdir(sock);

    /* a symbolic link to a socket is not a socket either */
    REQUIRE(make_stale_socket(new_sock("target")) == 0);
    char link_path[300];
    snprintf(link_path, sizeof link_path, "%s/link.sock", tmp_dir);
    REQUIRE(symlink(sock, link_path) == 0);
    EQ_INT(notify_listen(link_path) == NULL, 1);
    EQ_INT(exists(link_path), 1);
    EQ_INT(is_socket(sock), 1);
    unlink(link_path);
    unlink(sock);

    /* a folder that does not exist */
    snprintf(sock, sizeof sock, "%s/no/such/dir.sock", tmp_dir);
    EQ_INT(notify_listen(sock) == NULL, 1);
}

/* Each bad datagram is dropped on its own; the next good one still comes through. */
static const struct {
    const char *name;
    size_t size;      /* 0: strlen(text) */
    const char *text; /* NULL: an object padded with spaces to size bytes; with a size:
                       * text then spaces */
    bool accepted;
} datagrams[] = {
    {"not JSON", 0, "hello", false},
    {"a JSON array", 0, "[1,2]", false},
    {"a JSON string", 0, "\"event\"", false},
    {"truncated JSON", 0, "{\"event\":", false},
    {"duplicate keys", 0, "{\"a\":1,\"a\":2}", false},
    /* SEQPACKET: an empty packet reads as the sender hanging up, so nothing is returned */
    {"an empty packet", 0, "", false},
    {"an object of exactly 4096 bytes", NOTIFY_MAX_DATAGRAM, NULL, true},
    {"an object of 4097 bytes", NOTIFY_MAX_DATAGRAM + 1, NULL, false},
    {"an object of 60000 bytes", 60000, NULL, false},
    /* its first 4096 bytes alone are a whole object: a truncated read would take it */
    {"4097 bytes: an object, then spaces", NOTIFY_MAX_DATAGRAM + 1, "{\"event\":\"pad\"}", false},
};

static void bad_datagrams(void)
{
    struct notify_listener *fd = notify_listen(new_sock("bad"));
    struct notify_sender *s = notify_sender_new(sock);

    for (size_t i = 0; i < UNIT_COUNT(datagrams); i++) {
        size_t len = datagrams[i].size ? datagrams[i].size : strlen(datagrams[i].text);
        char *buf = malloc(len + 1);
        bool again = true;
        json_t *ev;

        unit_begin();
        if (!fd || !s || !buf) {
            UNIT_FAIL("setup: listener %p, sender %p", (void *)fd, (void *)s);
            free(buf);
            unit_end("notify_recv: %s", datagrams[i].name);
            continue;
        }
        if (datagrams[i].text && !datagrams[i].size) {
            memcpy(buf, datagrams[i].text, len);
        } else if (datagrams[i].text) { /* text, then spaces up to size */
            memset(buf, ' ', len);
            memcpy(buf, datagrams[i].text, strlen(datagrams[i].text));
        } else { /* {"event":"pad"   ...   } */
            memset(buf, ' ', len);
            memcpy(buf, "{\"event\":\"pad\"", 14);
            buf[len - 1] = '}';
        }
        EQ_INT(send_raw(sock, buf, len), (ssize_t)len);
        ev = notify_recv(fd, &again);
        EQ_INT(again, len == 0);
        if (datagrams[i].accepted)
            EQ_JSON(ev, "{\"event\":\"pad\"}");
        else if (ev)
            UNIT_FAIL("accepted what should be dropped");
        json_decref(ev);
        /* the queue moves on */
        EQ_INT(notify_session_event(s, "session_deleted", "0123456789abcdef"), 0);
        ev = notify_recv(fd, &again);
        EQ_JSON(ev, "{\"event\":\"session_deleted\",\"session_id\":\"0123456789abcdef\"}");
        json_decref(ev);
        EQ_INT(notify_recv(fd, &again) == NULL && again, 1);
        free(buf);
        unit_end("notify_recv %s: %s", datagrams[i].accepted ? "takes" : "drops",
                 datagrams[i].name);
    }
    notify_sender_free(s);
    notify_close(fd);
}

static void close_removes_file(void)
{
    struct notify_listener *fd = notify_listen(new_sock("close"));
    struct notify_sender *s;
    int pollfd;

    REQUIRE(fd != NULL);
    REQUIRE(exists(sock));
    pollfd = notify_listener_fd(fd);
    notify_close(fd);
    EQ_INT(exists(sock), 0);
    EQ_INT(fcntl(pollfd, F_GETFD) == -1 && errno == EBADF, 1);
    s = notify_sender_new(sock);
    REQUIRE(s != NULL);
    EQ_INT(notify_session_event(s, "session_deleted", "0123456789abcdef"), -1);
    notify_sender_free(s);
    /* listening again on the same path works */
    fd = notify_listen(sock);
    EQ_INT(fd != NULL, 1);
    notify_close(fd);
    notify_close(NULL);
}

/* A receiver that never reads: the sender gets -1 once its queue is full, and never
 * blocks. What was accepted is all there, in order; after draining, sends work again. */
static void full_queue_never_blocks(void)
{
    struct notify_listener *fd = notify_listen(new_sock("full"));
    struct notify_sender *s = notify_sender_new(sock);
    int sent = 0, rc = 0, got = 0;
    int64_t slowest = 0;
    bool again = false;
    json_t *ev;

    REQUIRE(fd != NULL);
    REQUIRE(s != NULL);
    for (int i = 0; i < 100000; i++) {
        int64_t t0 = clock_mono_ms();
        rc = notify_message_added(s, "0123456789abcdef", i, false);
        if (clock_mono_ms() - t0 > slowest)
            slowest = clock_mono_ms() - t0;
        if (rc < 0)
            break;
        sent++;
    }
    EQ_INT(rc, -1);
    CHECK(sent > 0);
    CHECK(slowest < QUICK_MS);
    /* still -1 while full */
    EQ_INT(notify_session_event(s, "session_deleted", "0123456789abcdef"), -1);

    while ((ev = notify_recv(fd, &again)) != NULL) {
        json_t *id = json_object_get(ev, "message_id");
        if (!json_is_integer(id) || json_integer_value(id) != got)
            UNIT_FAIL("datagram %d has message_id %lld", got,
                      id ? (long long)json_integer_value(id) : -1LL);
        got++;
        json_decref(ev);
        if (got > sent)
            break;
    }
    EQ_INT(again, true);
    EQ_INT(got, sent);
    EQ_INT(notify_session_event(s, "session_deleted", "0123456789abcdef"), 0);
    ev = notify_recv(fd, &again);
    EQ_JSON(ev, "{\"event\":\"session_deleted\",\"session_id\":\"0123456789abcdef\"}");
    json_decref(ev);
    printf("# the receiver queue took %d datagrams before the sender got -1\n", sent);
    notify_sender_free(s);
    notify_close(fd);
}

/* A broker that restarts on the same path: an existing sender reaches the new one. */
static void sender_survives_restart(void)
{
    struct notify_listener *fd = notify_listen(new_sock("restart"));
    struct notify_sender *s = notify_sender_new(sock);
    bool again;
    json_t *ev;

    REQUIRE(fd != NULL);
    REQUIRE(s != NULL);
    EQ_INT(notify_session_event(s, "session_created", "0123456789abcdef"), 0);
    notify_close(fd);
    EQ_INT(notify_session_event(s, "session_created", "0123456789abcdef"), -1);
    fd = notify_listen(sock);
    REQUIRE(fd != NULL);
    EQ_INT(notify_session_event(s, "history_cleared", "0123456789abcdef"), 0);
    ev = notify_recv(fd, &again);
    EQ_JSON(ev, "{\"event\":\"history_cleared\",\"session_id\":\"0123456789abcdef\"}");
    json_decref(ev);
    notify_sender_free(s);
    notify_close(fd);
}

/* Removes the temporary folder and anything a failed case left in it. */
static void remove_tmp(void)
{
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    char p[1024];

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    closedir(d);
    rmdir(tmp_dir);
}

static const struct unit_case cases[] = {
    {"message_added carries exactly event, session_id, message_id, reply", message_added_fields},
    {"session events carry exactly event and session_id, in order", session_event_fields},
    {"notify_recv with nothing waiting sets again", recv_empty_sets_again},
    {NULL, send_without_listener},
    {"notify_send to a NULL sender is -1", null_sender},
    {"a path too long for a Unix socket is refused at both ends", path_too_long},
    {"notify_listen replaces a stale socket file", stale_socket_replaced},
    {"notify_listen does not take over a socket a live listener holds", live_socket_not_replaced},
    {"notify_listen refuses a file, a folder, a symlink and a missing folder", non_socket_refused},
    {NULL, bad_datagrams},
    {"notify_close closes the fd and removes the file", close_removes_file},
    {"a full receiver queue gives -1 without blocking, and loses nothing accepted",
     full_queue_never_blocks},
    {"a sender reaches a broker restarted on the same path", sender_survives_restart},
};

int main(void)
{
    int rc;

    log_init("test_notify", LOG_LEVEL_WARN);
    if (!mkdtemp(tmp_dir)) {
        printf("not ok - mkdtemp: %s\n", tmp_dir);
        return 1;
    }
    rc = unit_run(cases, UNIT_COUNT(cases));
    remove_tmp();
    return rc;
}
