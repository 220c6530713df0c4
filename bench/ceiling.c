/* ceiling: the machine's ceiling for one-syscall-per-delivery fan-out over loopback TCP.
 *
 * Opens N loopback TCP connection pairs, then one thread (pinned to --send-cpu) send()s a
 * 100-byte buffer to each of the N sockets in turn, one system call per delivery, for
 * --duration seconds, while a second thread (pinned to --recv-cpu) drains the receiving
 * ends with epoll. Reports deliveries per second: what a broker that writes one frame per
 * receiver per system call can hope for on this machine, before any WebSocket framing,
 * JSON or bookkeeping. It is not a test: it prints figures and fails only if it cannot run.
 *
 * Usage: ceiling [--pairs N] [--size BYTES] [--duration S] [--send-cpu C] [--recv-cpu C] */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

static void usage(void)
{
    fprintf(stderr, "usage: ceiling [--pairs N] [--size BYTES] [--duration S] "
                    "[--send-cpu C] [--recv-cpu C]   (cpu -1: do not pin)\n");
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
        else
            bad = 1;
        if (bad) {
            usage();
            return 2;
        }
        i++;
    }

    tx = calloc((size_t)o.pairs, sizeof *tx);
    rx = calloc((size_t)o.pairs, sizeof *rx);
    if (!tx || !rx)
        goto out;
    for (long i = 0; i < o.pairs; i++)
        tx[i] = rx[i] = -1;
    if (make_pairs(o.pairs, tx, rx) < 0)
        goto out;
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
