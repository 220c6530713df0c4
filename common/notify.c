/* notify: both ends of the notification socket. See notify.h for the protocol.
 *
 * The receiver keeps the listening socket and every accepted sender in one epoll set, so
 * the broker's loop polls a single descriptor. */
#include "notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "jsonx.h"
#include "log.h"
#include "notify_redis.h"

#define NOTIFY_MAX_SENDERS 64
#define LISTENER_TAG       UINT64_MAX /* epoll data of the listening socket */

static int make_addr(const char *path, struct sockaddr_un *addr)
{
    if (strlen(path) >= sizeof addr->sun_path) {
        log_error("notification socket path '%s' is longer than %zu bytes; use a shorter "
                  "--notify-socket",
                  path, sizeof addr->sun_path - 1);
        return -1;
    }
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    strcpy(addr->sun_path, path);
    return 0;
}

/* ---- sender ---- */

struct notify_sender {
    pthread_mutex_t lock;
    int fd; /* {lock} connected socket, -1 when not connected */
    struct sockaddr_un addr;
    bool warned;                /* {lock} the broker's absence was logged once */
    struct notify_redis *redis; /* with --redis: events go there instead */
};

struct notify_sender *notify_sender_for(const struct cfg *cfg)
{
    struct notify_sender *s;

    if (!cfg->redis_url)
        return notify_sender_new(cfg->notify_socket);
    if (!(s = calloc(1, sizeof *s)))
        return NULL;
    s->fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    if (!(s->redis = notify_redis_new(cfg->redis_url))) {
        notify_sender_free(s);
        return NULL;
    }
    return s;
}

struct notify_sender *notify_sender_new(const char *path)
{
    struct notify_sender *s = calloc(1, sizeof *s);

    if (!s)
        return NULL;
    if (make_addr(path, &s->addr) < 0) {
        free(s);
        return NULL;
    }
    s->fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void notify_sender_free(struct notify_sender *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    notify_redis_free(s->redis);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Connects without blocking (a Unix connect completes or fails at once). {lock} */
static int connect_locked(struct notify_sender *s)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&s->addr, sizeof s->addr) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    s->fd = fd;
    return 0;
}

int notify_send(struct notify_sender *s, const json_t *event)
{
    size_t len;
    char *text;
    ssize_t n = -1;

    if (!s || !(text = jx_dump(event, &len)))
        return -1;
    if (s->redis) {
        int rc = notify_redis_send(s->redis, text, len);
        free(text);
        return rc;
    }
    pthread_mutex_lock(&s->lock);
    /* One retry: the broker may have restarted since the last event. */
    for (int attempt = 0; attempt < 2 && n < 0; attempt++) {
        if (s->fd < 0 && connect_locked(s) < 0)
            break;
        n = send(s->fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            close(s->fd);
            s->fd = -1;
        } else if (n < 0) {
            break; /* the broker's queue is full: drop, never wait */
        }
    }
    if (n < 0 && !s->warned) {
        log_warn("the broker did not get an event (%s); live clients may miss it until they "
                 "rejoin, stored data is safe. Is parley-broker running on %s?",
                 strerror(errno), s->addr.sun_path);
        s->warned = true;
    } else if (n >= 0) {
        s->warned = false;
    }
    pthread_mutex_unlock(&s->lock);
    free(text);
    return n == (ssize_t)len ? 0 : -1;
}

int notify_message_added(struct notify_sender *s, const char *session_id, int64_t message_id,
                         bool reply)
{
    json_t *ev = json_pack("{s:s, s:s, s:I, s:b}", "event", "message_added", "session_id",
                           session_id, "message_id", (json_int_t)message_id, "reply", reply);
    int rc = notify_send(s, ev);

    json_decref(ev);
    return rc;
}

int notify_session_event(struct notify_sender *s, const char *event, const char *session_id)
{
    json_t *ev = json_pack("{s:s, s:s}", "event", event, "session_id", session_id);
    int rc = notify_send(s, ev);

    json_decref(ev);
    return rc;
}

/* ---- receiver ---- */

struct notify_listener {
    int epfd;
    int listen_fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int senders[NOTIFY_MAX_SENDERS];
    size_t n_senders;
};

/* Whether a live process holds the socket at addr: connecting to a stale socket file is
 * refused, to a live one succeeds. */
static bool socket_in_use(const struct sockaddr_un *addr)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    bool live;

    if (fd < 0)
        return false;
    live = connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0 || errno == EAGAIN;
    close(fd);
    return live;
}

static int watch(int epfd, int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

struct notify_listener *notify_listen(const char *path)
{
    struct notify_listener *l = calloc(1, sizeof *l);
    struct sockaddr_un addr;
    struct stat st;

    if (!l)
        return NULL;
    l->epfd = l->listen_fd = -1;
    if (make_addr(path, &addr) < 0)
        goto fail;
    snprintf(l->path, sizeof l->path, "%s", path);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_error("'%s' exists and is not a socket; remove it or choose another "
                      "--notify-socket",
                      path);
            goto fail;
        }
        if (socket_in_use(&addr)) {
            log_error("another broker is listening on '%s'; stop it, or give this one its "
                      "own --notify-socket and --db",
                      path);
            goto fail;
        }
        unlink(path); /* stale, from a broker that did not exit cleanly */
    }
    l->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->listen_fd < 0 || l->epfd < 0) {
        log_error("socket: %s", strerror(errno));
        goto fail;
    }
    if (bind(l->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(l->listen_fd, 64) < 0) {
        log_error("cannot listen on the notification socket '%s': %s; check that its folder "
                  "exists and is writable",
                  path, strerror(errno));
        goto fail;
    }
    if (watch(l->epfd, l->listen_fd, LISTENER_TAG) < 0)
        goto fail;
    return l;
fail:
    if (l->listen_fd >= 0)
        close(l->listen_fd);
    if (l->epfd >= 0)
        close(l->epfd);
    free(l);
    return NULL;
}

int notify_listener_fd(const struct notify_listener *l)
{
    return l->epfd;
}

static void accept_all(struct notify_listener *l)
{
    int fd;

    while ((fd = accept4(l->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
        if (l->n_senders == NOTIFY_MAX_SENDERS || watch(l->epfd, fd, (uint64_t)fd) < 0) {
            log_warn("refused a notification sender: %d already connected", NOTIFY_MAX_SENDERS);
            close(fd);
            continue;
        }
        l->senders[l->n_senders++] = fd;
    }
}

static void drop_sender(struct notify_listener *l, int fd)
{
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    for (size_t i = 0; i < l->n_senders; i++)
        if (l->senders[i] == fd)
            l->senders[i] = l->senders[--l->n_senders];
}

/* Reads one packet from fd into ev; returns 1 with a packet (maybe invalid: *ev NULL),
 * 0 when fd has nothing now. */
static int read_one(struct notify_listener *l, int fd, json_t **ev)
{
    char buf[NOTIFY_MAX_DATAGRAM];
    char why[JX_WHY_LEN];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);

    *ev = NULL;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n <= 0) { /* the sender closed (0) or failed */
        drop_sender(l, fd);
        return 0;
    }
    if ((size_t)n > sizeof buf)
        log_warn("dropped a %zd-byte notification: larger than %d bytes", n, NOTIFY_MAX_DATAGRAM);
    else if (jx_parse_object(buf, (size_t)n, ev, why))
        log_warn("dropped a notification: %s", why);
    return 1;
}

json_t *notify_recv(struct notify_listener *l, bool *again)
{
    struct epoll_event evs[16];
    json_t *ev = NULL;

    *again = false;
    for (int round = 0; round < 4; round++) { /* accepts can make more work ready */
        int n = epoll_wait(l->epfd, evs, 16, 0);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == LISTENER_TAG)
                accept_all(l);
            else if (read_one(l, (int)evs[i].data.u64, &ev))
                return ev; /* level-triggered: the rest is reported again next call */
        }
    }
    *again = true;
    return NULL;
}

void notify_close(struct notify_listener *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_senders; i++)
        close(l->senders[i]);
    close(l->listen_fd);
    close(l->epfd);
    unlink(l->path);
    free(l);
}
