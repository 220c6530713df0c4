/* ceiling: the machine's ceiling for one-syscall-per-delivery fan-out over loopback TCP.
 *
 * Opens N loopback TCP connection pairs, then one thread (pinned to --send-cpu) send()s a
 * 100-byte buffer to each of the N sockets in turn, one system call per delivery, for
 * --duration seconds, while a second thread (pinned to --recv-cpu) drains the receiving
 * ends with epoll. Reports deliveries per second: what a broker that writes one frame per
 * receiver per system call can hope for on this machine, before any WebSocket framing,
 * JSON or bookkeeping. It is not a test: it prints figures and fails only if it cannot run.
 *
 * With --rate it measures the latency floor instead (see run_latency).
 *
 * Usage: ceiling [--pairs N] [--size BYTES] [--duration S] [--send-cpu C] [--recv-cpu C]
 *        ceiling --rate R [--handoff 0|1] [--pairs N] ... */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 9000
#define MAX_SIZE  65536

struct opts {
    long pairs;
    long size;
    double duration_s;
    long send_cpu, recv_cpu;
    long rate;    /* --rate: the latency floor instead (messages a second) */
    long handoff; /* --handoff 1: through a worker thread and back */
};

struct receiver {
    int ep;
    const int *fds;
    long n;
    long recv_cpu;
    atomic_bool stop;
    uint64_t bytes; /* written by the receiver thread, read after join */
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static void pin(long cpu, const char *who)
{
    cpu_set_t set;

    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET((int)cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        fprintf(stderr, "ceiling: cannot pin the %s thread to cpu %ld (running unpinned)\n", who,
                cpu);
}

static void *receive_main(void *arg)
{
    struct receiver *r = arg;
    struct epoll_event evs[256];
    static char buf[MAX_SIZE * 4];

    pin(r->recv_cpu, "receiving");
    while (!atomic_load(&r->stop)) {
        int n = epoll_wait(r->ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            for (int k = 0; k < 64; k++) { /* bounded per wake-up */
                ssize_t got = recv(evs[i].data.fd, buf, sizeof buf, MSG_DONTWAIT);
                if (got <= 0)
                    break;
                r->bytes += (uint64_t)got;
                if ((size_t)got < sizeof buf)
                    break;
            }
        }
    }
    return NULL;
}

/* Makes n connected loopback pairs: send ends in tx, receive ends in rx. Returns 0 or -1. */
static int make_pairs(long n, int *tx, int *rx)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int one = 1, ls, rc = -1;

    ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &alen) < 0) {
        perror("ceiling: listen");
        goto out;
    }
    for (long i = 0; i < n; i++) {
        tx[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (tx[i] < 0 || connect(tx[i], (struct sockaddr *)&a, sizeof a) < 0) {
            perror("ceiling: connect");
            goto out;
        }
        rx[i] = accept(ls, NULL, NULL);
        if (rx[i] < 0) {
            perror("ceiling: accept");
            goto out;
        }
        /* like a WebSocket server writing small frames: no Nagle delay */
        setsockopt(tx[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    rc = 0;
out:
    if (ls >= 0)
        close(ls);
    return rc;
}

/* ---- the latency floor (--rate) ----
 *
 * The shape of a chat in a small session, without a broker: the client thread (pinned to
 * --recv-cpu) sends a --size-byte message stamped with the time at --rate a second to a
 * relay thread (pinned to --send-cpu), which send()s it on to --pairs receiving
 * connections that the client thread drains with epoll, noting each delivery's latency.
 * With --handoff 1 the relay first passes each message through a pipe to a second thread
 * on its cpu and back, as the broker passes a chat to its database thread and the result
 * back to its loop. What is left of the broker's latency above this is its own work. */

struct relay {
    int in;          /* the relay's end of the client's sending connection */
    const int *outs; /* the relay's ends of the receiving connections */
    long n, size, cpu;
    bool handoff;
    int to_worker[2], from_worker[2]; /* pipes: relay -> worker -> relay */
    atomic_bool stop;
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads whole size-byte messages from fd into buf (holding *len bytes between calls) and
 * calls fn on each. Returns -1 when the connection ended. */
static int read_messages(int fd, char *buf, size_t *len, long size, void (*fn)(char *, void *),
                         void *arg)
{
    for (;;) {
        ssize_t got = read(fd, buf + *len, (size_t)(size * 64) - *len);
        if (got == 0)
            return -1;
        if (got < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        *len += (size_t)got;
        size_t used = 0;
        for (; *len - used >= (size_t)size; used += (size_t)size)
            fn(buf + used, arg);
        memmove(buf, buf + used, *len - used);
        *len -= used;
    }
}

static void fan_out(char *msg, void *arg)
{
    const struct relay *r = arg;

    for (long i = 0; i < r->n; i++)
        if (send(r->outs[i], msg, (size_t)r->size, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            fprintf(stderr, "ceiling: relay send: %s\n", strerror(errno));
}

static void to_worker(char *msg, void *arg)
{
    const struct relay *r = arg;

    if (write(r->to_worker[1], msg, (size_t)r->size) != (ssize_t)r->size)
        fprintf(stderr, "ceiling: relay hand-off: %s\n", strerror(errno));
}

static void back_to_relay(char *msg, void *arg)
{
    const struct relay *r = arg;

    if (write(r->from_worker[1], msg, (size_t)r->size) != (ssize_t)r->size)
        fprintf(stderr, "ceiling: worker hand-back: %s\n", strerror(errno));
}

static void *worker_main(void *arg)
{
    struct relay *r = arg;
    char *buf = malloc((size_t)r->size * 64);
    size_t len = 0;

    pin(r->cpu, "worker");
    while (buf && read_messages(r->to_worker[0], buf, &len, r->size, back_to_relay, r) == 0) {
        struct pollfd p = {.fd = r->to_worker[0], .events = POLLIN};
        poll(&p, 1, -1);
    }
    free(buf);
    return NULL;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    int ep = epoll_create1(0);
    int back = r->handoff ? r->from_worker[0] : -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = r->in}, evs[2];
    char *in_buf = malloc((size_t)r->size * 64), *back_buf = malloc((size_t)r->size * 64);
    size_t in_len = 0, back_len = 0;

    pin(r->cpu, "relay");
    epoll_ctl(ep, EPOLL_CTL_ADD, r->in, &ev);
    if (back >= 0) {
        ev.data.fd = back;
        epoll_ctl(ep, EPOLL_CTL_ADD, back, &ev);
    }
    while (in_buf && back_buf && !atomic_load(&r->stop)) {
        int n = epoll_wait(ep, evs, 2, 50);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == r->in)
                read_messages(r->in, in_buf, &in_len, r->size, r->handoff ? to_worker : fan_out, r);
            else
                read_messages(back, back_buf, &back_len, r->size, fan_out, r);
        }
    }
    free(in_buf);
    free(back_buf);
    close(ep);
    return NULL;
}

struct samples {
    int64_t *v;
    size_t n, cap;
};

static void note_latency(char *msg, void *arg)
{
    struct samples *s = arg;
    int64_t stamp;

    memcpy(&stamp, msg, sizeof stamp);
    if (s->n < s->cap)
        s->v[s->n++] = now_ns() - stamp;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const struct samples *s, double q)
{
    size_t i = (size_t)(q * (double)(s->n - 1));
    return (double)s->v[i] / 1e3;
}

/* Pair 0 carries the client's messages to the relay, pairs 1..--pairs the relay's to the
 * client. Returns 0, or 1 when it could not run. */
static int run_latency(const struct opts *o, int *tx, int *rx)
{
    struct relay r = {.in = rx[0],
                      .outs = tx + 1,
                      .n = o->pairs,
                      .size = o->size,
                      .cpu = o->send_cpu,
                      .handoff = o->handoff,
                      .to_worker = {-1, -1},
                      .from_worker = {-1, -1}};
    struct samples s = {.cap = (size_t)((double)o->rate * o->duration_s * (double)r.n) + 1024};
    size_t *held = calloc((size_t)o->pairs + 1, sizeof *held);
    char *bufs = calloc((size_t)o->pairs + 1, (size_t)o->size * 64);
    char *msg = calloc(1, (size_t)o->size);
    pthread_t relay_thread, worker_thread;
    bool relay_started = false, worker_started = false;
    int ep = epoll_create1(0), rc = 1;
    uint64_t sent = 0;

    s.v = malloc(s.cap * sizeof *s.v);
    if (!s.v || !held || !bufs || !msg || ep < 0 || o->size < (long)sizeof(int64_t))
        goto out;
    for (long i = 1; i <= o->pairs; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        fcntl(rx[i], F_SETFL, O_NONBLOCK);
        epoll_ctl(ep, EPOLL_CTL_ADD, rx[i], &ev);
    }
    fcntl(rx[0], F_SETFL, O_NONBLOCK);
    if (o->handoff) {
        if (pipe2(r.to_worker, O_NONBLOCK) < 0 || pipe2(r.from_worker, O_NONBLOCK) < 0)
            goto out;
        if (pthread_create(&worker_thread, NULL, worker_main, &r) != 0)
            goto out;
        worker_started = true;
    }
    if (pthread_create(&relay_thread, NULL, relay_main, &r) != 0)
        goto out;
    relay_started = true;
    pin(o->recv_cpu, "client");
    memset(msg, 'x', (size_t)o->size);

    int64_t t0 = now_ns(), end = t0 + (int64_t)(o->duration_s * 1e9);
    while (now_ns() < end) {
        uint64_t due = (uint64_t)((double)o->rate * (double)(now_ns() - t0) / 1e9);
        struct epoll_event evs[64];
        for (; sent < due; sent++) {
            int64_t stamp = now_ns();
            memcpy(msg, &stamp, sizeof stamp);
            if (send(tx[0], msg, (size_t)o->size, MSG_NOSIGNAL) != (ssize_t)o->size)
                goto out;
        }
        int n = epoll_wait(ep, evs, 64, 1);
        for (int i = 0; i < n; i++) {
            long k = (long)evs[i].data.u64;
            read_messages(rx[k], bufs + (size_t)k * (size_t)o->size * 64, &held[k], o->size,
                          note_latency, &s);
        }
    }
    qsort(s.v, s.n, sizeof *s.v, cmp_i64);
    printf("ceiling: latency floor: %ld msg/s of %ld bytes relayed to %ld receivers, relay on "
           "cpu %ld%s, client on cpu %ld, %.1f s\n",
           o->rate, o->size, r.n, o->send_cpu,
           o->handoff ? " (each message through a worker thread on that cpu and back)" : "",
           o->recv_cpu, o->duration_s);
    if (s.n)
        printf("ceiling: latency us  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  "
               "(%zu samples)\n",
               pct_us(&s, 0.5), pct_us(&s, 0.9), pct_us(&s, 0.99), pct_us(&s, 0.999),
               pct_us(&s, 1.0), s.n);
    rc = 0;
out:
    atomic_store(&r.stop, true);
    if (relay_started)
        pthread_join(relay_thread, NULL);
    if (r.to_worker[1] >= 0)
        close(r.to_worker[1]); /* the worker reads the end and stops */
    if (worker_started)
        pthread_join(worker_thread, NULL);
    for (int i = 0; i < 2; i++) {
        if (r.from_worker[i] >= 0)
            close(r.from_worker[i]);
        if (i == 0 && r.to_worker[0] >= 0)
            close(r.to_worker[0]);
    }
    if (ep >= 0)
        close(ep);
    free(s.v);
    free(held);
    free(bufs);
    free(msg);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: ceiling [--pairs N] [--size BYTES] [--duration S] "
                    "[--send-cpu C] [--recv-cpu C]   (cpu -1: do not pin)\n"
                    "       ceiling --rate R [--handoff 0|1] [--pairs N] [--size BYTES] "
                    "[--duration S] [--send-cpu C] [--recv-cpu C]   (the latency floor)\n");
}

int main(int argc, char **argv)
{
    struct opts o = {.pairs = 1000, .size = 100, .duration_s = 5, .send_cpu = 0, .recv_cpu = 1};
    struct receiver r = {.ep = -1};
    static char buf[MAX_SIZE];
    int *tx = NULL, *rx = NULL;
    uint64_t sent = 0, blocked = 0, sent_bytes = 0;
    pthread_t thread;
    bool started = false;
    double t0, t1, elapsed;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = !v;
        if (!bad && strcmp(argv[i], "--pairs") == 0)
            bad = parse_long(v, 1, MAX_PAIRS, &o.pairs);
        else if (!bad && strcmp(argv[i], "--size") == 0)
            bad = parse_long(v, 1, MAX_SIZE, &o.size);
        else if (!bad && strcmp(argv[i], "--duration") == 0)
            bad = parse_double(v, 0.1, 3600, &o.duration_s);
        else if (!bad && strcmp(argv[i], "--send-cpu") == 0)
            bad = parse_long(v, -1, 1023, &o.send_cpu);
        else if (!bad && strcmp(argv[i], "--recv-cpu") == 0)
            bad = parse_long(v, -1, 1023, &o.recv_cpu);
        else if (!bad && strcmp(argv[i], "--rate") == 0)
            bad = parse_long(v, 1, 100000, &o.rate);
        else if (!bad && strcmp(argv[i], "--handoff") == 0)
            bad = parse_long(v, 0, 1, &o.handoff);
        else
            bad = 1;
        if (bad) {
            usage();
            return 2;
        }
        i++;
    }

    if (o.rate) /* the latency floor: one more pair, for the client's messages */
        o.pairs++;
    tx = calloc((size_t)o.pairs, sizeof *tx);
    rx = calloc((size_t)o.pairs, sizeof *rx);
    if (!tx || !rx)
        goto out;
    for (long i = 0; i < o.pairs; i++)
        tx[i] = rx[i] = -1;
    if (make_pairs(o.pairs, tx, rx) < 0)
        goto out;
    if (o.rate) {
        o.pairs--;
        rc = run_latency(&o, tx, rx);
        o.pairs++;
        goto out;
    }
    if ((r.ep = epoll_create1(0)) < 0)
        goto out;
    for (long i = 0; i < o.pairs; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = rx[i]};
        if (epoll_ctl(r.ep, EPOLL_CTL_ADD, rx[i], &ev) < 0) {
            perror("ceiling: epoll_ctl");
            goto out;
        }
    }
    r.fds = rx;
    r.n = o.pairs;
    r.recv_cpu = o.recv_cpu;
    if (pthread_create(&thread, NULL, receive_main, &r) != 0)
        goto out;
    started = true;
    pin(o.send_cpu, "sending");
    memset(buf, 'x', sizeof buf);

    t0 = now_s();
    t1 = t0 + o.duration_s;
    for (uint64_t round = 0; round < UINT64_MAX; round++) {
        for (long i = 0; i < o.pairs; i++) {
            ssize_t n = send(tx[i], buf, (size_t)o.size, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                sent++;
                sent_bytes += (uint64_t)n;
            } else {
                blocked++;
            }
        }
        if ((round & 7) == 0 && now_s() >= t1)
            break;
    }
    elapsed = now_s() - t0;
    atomic_store(&r.stop, true);
    pthread_join(thread, NULL);
    started = false;

    printf("ceiling: %ld loopback TCP pairs, %ld-byte send() per delivery, sender on cpu %ld, "
           "epoll receiver on cpu %ld, %.1f s\n",
           o.pairs, o.size, o.send_cpu, o.recv_cpu, elapsed);
    printf("ceiling: deliveries/s %.0f  (%llu sends, %llu would-block, %.1f MB/s, "
           "%.1f%% of bytes drained by the receiver during the run)\n",
           (double)sent / elapsed, (unsigned long long)sent, (unsigned long long)blocked,
           (double)sent_bytes / elapsed / 1e6,
           sent_bytes ? 100.0 * (double)r.bytes / (double)sent_bytes : 0.0);
    rc = 0;
out:
    if (started) {
        atomic_store(&r.stop, true);
        pthread_join(thread, NULL);
    }
    if (r.ep >= 0)
        close(r.ep);
    for (long i = 0; tx && rx && i < o.pairs; i++) {
        if (tx[i] >= 0)
            close(tx[i]);
        if (rx[i] >= 0)
            close(rx[i]);
    }
    free(tx);
    free(rx);
    return rc;
}
