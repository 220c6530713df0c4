/* notify: both ends of the notification socket. See notify.h for the protocol. */
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "jsonx.h"
#include "log.h"

struct notify_sender {
    int fd;
    struct sockaddr_un addr;
};

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

struct notify_sender *notify_sender_new(const char *path)
{
    struct notify_sender *s = calloc(1, sizeof *s);

    if (!s)
        return NULL;
    if (make_addr(path, &s->addr) < 0)
        goto fail;
    s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->fd < 0) {
        log_error("socket: %s", strerror(errno));
        goto fail;
    }
    return s;
fail:
    free(s);
    return NULL;
}

void notify_sender_free(struct notify_sender *s)
{
    if (!s)
        return;
    close(s->fd);
    free(s);
}

int notify_send(struct notify_sender *s, const json_t *event)
{
    size_t len;
    char *text;
    ssize_t n;

    if (!s)
        return -1;
    text = jx_dump(event, &len);
    if (!text)
        return -1;
    n = sendto(s->fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&s->addr,
               sizeof s->addr);
    if (n < 0)
        log_debug("event not delivered (%s): the broker is not listening on %s or is busy; "
                  "it catches up from the database",
                  strerror(errno), s->addr.sun_path);
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

int notify_listen(const char *path)
{
    struct sockaddr_un addr;
    struct stat st;
    int fd, size = 1 << 20;

    if (make_addr(path, &addr) < 0)
        return -1;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_error("'%s' exists and is not a socket; remove it or choose another "
                      "--notify-socket",
                      path);
            return -1;
        }
        unlink(path); /* stale, from a broker that did not exit cleanly */
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        log_error("socket: %s", strerror(errno));
        return -1;
    }
    /* Room for bursts of events while the loop is busy. */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        log_error("cannot bind the notification socket '%s': %s; check that its folder "
                  "exists and is writable",
                  path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

json_t *notify_recv(int fd, bool *again)
{
    char buf[NOTIFY_MAX_DATAGRAM];
    char why[JX_WHY_LEN];
    json_t *ev = NULL;
    ssize_t n;

    *again = false;
    n = recv(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
        *again = errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        if (!*again)
            log_error("recv: %s", strerror(errno));
        return NULL;
    }
    if ((size_t)n > sizeof buf) {
        log_warn("dropped a %zd-byte notification: larger than %d bytes", n, NOTIFY_MAX_DATAGRAM);
        return NULL;
    }
    if (jx_parse_object(buf, (size_t)n, &ev, why)) {
        log_warn("dropped a notification: %s", why);
        return NULL;
    }
    return ev;
}

void notify_close(int fd, const char *path)
{
    if (fd < 0)
        return;
    close(fd);
    unlink(path);
}
