/* loadgen: a load generator for parley-broker, with its own small WebSocket client.
 *
 * One thread, one epoll loop, non-blocking sockets. The client side of RFC 6455 is done
 * here (random Sec-WebSocket-Key, the Accept check, masked frames out, unmasked frames
 * in, pings answered, fragments reassembled); jansson parses the control events, and a
 * fast path reads the send timestamp out of message_added frames without a full parse,
 * so the generator stays cheaper than the broker it measures.
 *
 * Three modes, each bounded in time and in count:
 *   sessions    --conns N --session-size S [--senders K] [--rate R] [--duration D]
 *               N connections in sessions of S members (the first creates the session,
 *               the others join it); K senders per session send chat messages whose
 *               content starts with the send time in ns, at R messages/s in total (0: as
 *               fast as acknowledgements allow, --window unacknowledged per sender).
 *               Every receiver records the delivery latency in a log-linear histogram;
               a sender's own message_added back is its acknowledgement (acknowledged/s:
               those that came back inside the send window, i.e. stored and answered).
 *               --stalled K: when the send window opens, the last K receivers of the first
 *               session stop reading (no EPOLLIN, socket kept open, not even pings read);
 *               the broker's side of their sockets is watched every 100 ms (sock_diag:
 *               its TCP state and send queue); after the window they read again, to see
 *               whether the broker closed them. Their deliveries are not in the latency
 *               figures. With --broker-pid, its VmRSS is sampled every 100 ms.
 *               --warmup S (with --rate): the same traffic for S seconds first, not
 *               counted, so that the broker's caches are full before its RSS is read.
 *               --no-settle: the run starts as soon as every member is joined, without
 *               waiting for the presence frames of the joins to stop (a join burst).
 *               --port2 P: a second broker (many brokers through Redis, SPEC 8): the last
 *               half of each session's members (rounded down) connect to it, the creator
 *               and the senders stay on --port; the latency is also reported apart for the
 *               receivers on the senders' broker and for those on the other one.
 *   idle        --idle N --hold S [--broker-pid P]
 *               N connections that only answer pings, held S seconds; drops, and the
 *               broker's VmRSS before and after, per connection.
 *   handshakes  --handshakes D [--concurrency C]
 *               connect, upgrade, wait for "connected", close; as fast as possible for D s.
 *
 * It is a benchmark, not a test: it prints figures, and exits non-zero only when it
 * could not run (bad usage, or not one connection could be made). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS       19990              /* the fd limit here is 20,000 */
#define MAX_IN          (16 * 1024 * 1024) /* largest frame or handshake answer accepted */
#define READ_CHUNK      65536
#define MAX_CONTENT     16384
#define SETUP_TIMEOUT_S 120.0
#define SETTLE_QUIET_MS 300
#define SETTLE_MAX_S    15.0
#define DRAIN_MAX_S     5.0
#define CLOSE_WAIT_S    2.0
#define SAMPLE_MS       100 /* --stalled: broker VmRSS and socket states */
#define STALL_READ_S    5.0 /* --stalled: reading again, at most this long */
#define WS_GUID         "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- options and figures ---- */

enum mode { MODE_SESSIONS, MODE_IDLE, MODE_HANDSHAKES };

static struct {
    enum mode mode;
    const char *host;
    int port;
    long conns, session_size, senders, window, size, concurrency, idle, broker_pid, sources;
    long stalled;
    double rate, duration_s, hold_s, handshakes_s, warmup_s;
    bool quiet;
    bool no_settle; /* measure at once after the joins, in their presence storm */
} opt = {.host = "127.0.0.1",
         .port = 8001,
         .conns = 100,
         .session_size = 10,
         .senders = 1,
         .window = -1,
         .size = 100,
         .concurrency = 64,
         .sources = 1,
         .broker_pid = 0,
         .rate = 0,
         .duration_s = 10,
         .hold_s = 20,
         .handshakes_s = 5};

static struct {
    uint64_t connect_fail, upgrade_fail, dropped, errors, pings;
    uint64_t sent, acked, acked_in_window, throttled, late;
    uint64_t deliveries, deliveries_in_window, expected;
    uint64_t handshakes, handshakes_in_window;
    bool running; /* sessions mode: inside the send window */
    int64_t run_start_ns, run_end_ns, last_delivery_ns;
} fig;

/* ---- time ---- */

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double secs(int64_t ns)
{
    return (double)ns / 1e9;
}

/* ---- log-linear histogram: 64 sub-buckets per power of two, under 1.6 % error ---- */

#define HIST_SUB     64
#define HIST_BUCKETS (2 * HIST_SUB + 58 * HIST_SUB)

static struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total, max;
} hist;

static int hist_index(uint64_t v)
{
    int msb, shift;

    if (v < 2 * HIST_SUB)
        return (int)v;
    msb = 63 - __builtin_clzll(v);
    shift = msb - 6; /* v >> shift is in [64, 127] */
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
}

/* The middle of bucket idx. */
static uint64_t hist_value(int idx)
{
    int k, shift;
    uint64_t sub;

    if (idx < 2 * HIST_SUB)
        return (uint64_t)idx;
    k = idx - 2 * HIST_SUB;
    shift = k / HIST_SUB + 1;
    sub = (uint64_t)(k % HIST_SUB + HIST_SUB);
    return (sub << shift) + ((1ull << shift) >> 1);
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

static void hist_record(uint64_t v)
{
    hist_add(&hist, v);
}

static uint64_t hist_quantile_of(const struct hist *h, double q)
{
    uint64_t target = (uint64_t)(q * (double)h->total + 0.999999), seen = 0;

    if (target == 0)
        target = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= target) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept ---- */

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k, t;
        if (i < 20)
            f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40)
            f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60)
            f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else
            f = b ^ c ^ d, k = 0xCA62C1D6;
        t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const void *data, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    unsigned char tail[128] = {0};
    size_t full = len / 64 * 64, rest = len - full, tail_len;
    uint64_t bits = (uint64_t)len * 8;

    for (size_t i = 0; i < full; i += 64)
        sha1_block(h, p + i);
    memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t i = 0; i < tail_len; i += 64)
        sha1_block(h, tail + i);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < len ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* xorshift64*: frame masks only need to be unpredictable to proxies, not secret. */
static uint64_t rng_state = 88172645463325252ull;

static uint32_t rng32(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

/* ---- connections ---- */

enum cstate { CS_FREE, CS_CONNECTING, CS_UPGRADING, CS_OPEN, CS_CLOSING };

struct conn {
    int fd;
    enum cstate st;
    char key[32];
    unsigned char *in; /* bytes received and not yet parsed; in_cap > in_len always */
    size_t in_len, in_cap;
    unsigned char *out; /* bytes that send() did not take yet */
    size_t out_len, out_cap;
    unsigned char *msg; /* a fragmented message being reassembled */
    size_t msg_len;
    bool out_armed;
    bool connected; /* got the "connected" event */
    bool member;    /* got session_created / session_joined */
    bool join_sent;
    bool sender;
    bool we_close; /* we started the close: not a drop */
    long session;  /* sessions mode: index into sess[] */
    long unacked;  /* sender: messages sent, own message_added not yet back */
    long stall;    /* --stalled: 1 + index into stalls[], or 0 */
    int64_t close_deadline_ns;
};

struct session {
    char id[40];
    long first, n; /* conns [first, first + n) */
    long members;
    long stalled; /* members that stopped reading: no deliveries expected */
    bool created, create_sent;
};

/* --stalled: what was seen of each stalled receiver; survives conn_close. */
struct stall {
    long conn;
    int port;                         /* our local port, to find the broker's socket */
    uint32_t addr;                    /* our local address, network order */
    int64_t event_ns;                 /* first epoll event while stalled (hangup, error), or 0 */
    uint32_t events;                  /* its mask */
    int64_t broker_close_ns;          /* the broker's socket left ESTABLISHED (or vanished), or 0 */
    int broker_state;                 /* last TCP state seen (1 established), 0 not seen, -1 gone */
    long txq, txq_max, txq_at_close;  /* bytes in the broker's kernel send queue */
    long unread;                      /* bytes waiting in our receive buffer when reading resumed */
    uint64_t bytes_after, msgs_after; /* read once reading resumed */
    int family;                       /* of the broker's socket, once found */
    bool closed;                      /* the broker closed it (we did not) */
    int64_t closed_ns;
    char why[64];
};

static struct stall *stalls;
static long n_stalls;
static bool stalling; /* the stalled receivers do not read */
static int64_t stall_ns;
static struct timespec stall_wall; /* to find the stall in the broker's log */

static struct conn *conns;
static long n_conns;
static struct session *sess;
static long n_sess;
static int ep = -1;
static struct sockaddr_in server;
static long open_count, in_flight, ready_count; /* ready: open, with its connected event */
static unsigned error_prints;

/* --port2: the second broker, and the latency seen on each side ([0] receivers on the
 * senders' broker, [1] on the other one) */
static struct {
    int port; /* 0: one broker */
    struct sockaddr_in server;
    struct hist side[2];
    long members[2];
} two;

/* Does connection c go to the second broker? The last half of its session's members. */
static bool on_port2(const struct conn *c)
{
    const struct session *s;
    long k;

    if (!two.port || opt.mode != MODE_SESSIONS || c->session < 0)
        return false;
    s = &sess[c->session];
    k = (long)(c - conns) - s->first;
    return k >= s->n - s->n / 2;
}

static void conn_arm(struct conn *c, bool want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)(c - conns)};

    if (c->out_armed == want_out || (c->stall && stalling))
        return; /* a stalled receiver's interest is set by stall_begin and stall_end */
    c->out_armed = want_out;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Closes c's socket and forgets its buffers. A close we did not start is a drop. */
static void conn_close(struct conn *c, const char *why)
{
    if (c->st == CS_FREE)
        return;
    if (c->st == CS_CONNECTING || c->st == CS_UPGRADING)
        in_flight--;
    if (c->stall && !c->we_close) {
        struct stall *t = &stalls[c->stall - 1];
        t->closed = true;
        t->closed_ns = now_ns();
        snprintf(t->why, sizeof t->why, "%s", why);
    }
    if (c->member && c->stall && c->session >= 0)
        sess[c->session].stalled--;
    if (c->st == CS_OPEN || c->st == CS_CLOSING) {
        open_count--;
        if (!c->we_close && !c->stall) { /* a stalled receiver's close is counted apart */
            fig.dropped++;
            if (error_prints < 5 && !opt.quiet) {
                error_prints++;
                fprintf(stderr, "loadgen: connection %ld dropped by the broker (%s)\n",
                        (long)(c - conns), why);
            }
        }
    }
    if (c->member && c->session >= 0)
        sess[c->session].members--;
    if (c->connected)
        ready_count--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c->msg);
    long s = c->session, stall = c->stall;
    bool sender = c->sender;
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->session = s;
    c->sender = sender;
    c->stall = stall;
    c->st = CS_FREE;
}

/* Queues or sends raw bytes. Returns -1 when the connection broke (and is closed). */
static int conn_write(struct conn *c, const void *buf, size_t len)
{
    ssize_t n = 0;

    if (c->out_len == 0) {
        n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            conn_close(c, strerror(errno));
            return -1;
        }
        if (n < 0)
            n = 0;
        if ((size_t)n == len)
            return 0;
    }
    if (c->out_len + len - (size_t)n > c->out_cap) {
        size_t cap = (c->out_len + len - (size_t)n) * 2;
        unsigned char *grown = realloc(c->out, cap);
        if (!grown) {
            conn_close(c, "out of memory");
            return -1;
        }
        c->out = grown;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, (const char *)buf + n, len - (size_t)n);
    c->out_len += len - (size_t)n;
    conn_arm(c, true);
    return 0;
}

static void conn_flush(struct conn *c)
{
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);

    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        conn_close(c, strerror(errno));
        return;
    }
    if (n > 0) {
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    if (c->out_len == 0)
        conn_arm(c, false);
}

/* Sends one masked frame. */
static int ws_send(struct conn *c, int opcode, const void *payload, size_t len)
{
    unsigned char stack[MAX_CONTENT + 256], *f = stack;
    size_t h = 0;
    uint32_t mask = rng32();
    int rc;

    if (len + 14 > sizeof stack && !(f = malloc(len + 14)))
        return -1;
    f[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        f[h++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(len >> 8);
        f[h++] = (unsigned char)len;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    memcpy(f + h, &mask, 4);
    for (size_t i = 0; i < len; i++)
        f[h + 4 + i] = ((const unsigned char *)payload)[i] ^ f[h + (i & 3)];
    rc = conn_write(c, f, h + 4 + len);
    if (f != stack)
        free(f);
    return rc;
}

static int ws_send_text(struct conn *c, const char *text)
{
    return ws_send(c, 1, text, strlen(text));
}

/* Starts the TCP connection of slot c. Returns 0, or -1 (counted as a connect failure). */
static int conn_start(struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)(c - conns)};
    int one = 1, fd;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fig.connect_fail++;
        if (error_prints++ < 5)
            fprintf(stderr, "loadgen: socket: %s\n", strerror(errno));
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.sources > 1) {
        /* spread over 127.0.0.1..K: each source address has its own ephemeral ports, so
         * connect() does not search a nearly full port range (19,000 connections) */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)((c - conns) % opt.sources));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            fig.connect_fail++;
            if (error_prints++ < 5)
                fprintf(stderr, "loadgen: bind: %s\n", strerror(errno));
            close(fd);
            return -1;
        }
    }
    if (connect(fd, (struct sockaddr *)(on_port2(c) ? &two.server : &server), sizeof server) < 0 &&
        errno != EINPROGRESS) {
        fig.connect_fail++;
        if (error_prints++ < 5)
            fprintf(stderr, "loadgen: connect: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->st = CS_CONNECTING;
    c->out_armed = true;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    in_flight++;
    return 0;
}

static void send_upgrade(struct conn *c)
{
    unsigned char raw[16];
    char req[512];
    int err = 0;
    socklen_t elen = sizeof err;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
        fig.connect_fail++;
        if (error_prints++ < 5)
            fprintf(stderr, "loadgen: connect: %s\n", strerror(err ? err : errno));
        conn_close(c, "connect failed");
        return;
    }
    if (getrandom(raw, sizeof raw, 0) != sizeof raw)
        for (int i = 0; i < 16; i++)
            raw[i] = (unsigned char)rng32();
    base64(raw, sizeof raw, c->key);
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
             "User-Agent: parley-loadgen\r\n\r\n",
             opt.host, on_port2(c) ? two.port : opt.port, c->key);
    c->st = CS_UPGRADING;
    conn_arm(c, false);
    conn_write(c, req, strlen(req));
}

/* ---- what to do with events ---- */

static void send_join(struct conn *c)
{
    char buf[128];

    snprintf(buf, sizeof buf, "{\"type\":\"join_session\",\"session_id\":\"%s\"}",
             sess[c->session].id);
    c->join_sent = true;
    ws_send_text(c, buf);
}

/* Sends one chat message stamped with the time now. */
static int send_chat(struct conn *c)
{
    char content[MAX_CONTENT + 1], buf[MAX_CONTENT + 64];
    int n = snprintf(content, sizeof content, "%lld %ld ", (long long)now_ns(), (long)(c - conns));

    while (n < opt.size && n < MAX_CONTENT)
        content[n++] = 'x';
    content[n] = '\0';
    snprintf(buf, sizeof buf, "{\"type\":\"chat\",\"message\":\"%s\"}", content);
    if (ws_send_text(c, buf) < 0)
        return -1;
    c->unacked++;
    fig.sent++;
    fig.expected += (uint64_t)(sess[c->session].members - sess[c->session].stalled);
    return 0;
}

/* Fast path for message_added: reads "<ns> <sender>" at the start of message.content.
 * text is NUL-terminated. Returns 0 when it found them. */
static int read_stamp(const char *text, size_t len, long long *ns, long *sender)
{
    const char *p = memmem(text, len, "\"content\"", 9);
    char *end;

    if (!p)
        return -1;
    p += 9;
    while (*p == ' ' || *p == ':')
        p++;
    if (*p++ != '"')
        return -1;
    *ns = strtoll(p, &end, 10);
    if (end == p || *end != ' ')
        return -1;
    p = end + 1;
    *sender = strtol(p, &end, 10);
    if (end == p || *end != ' ')
        return -1;
    return 0;
}

static void on_message_added(struct conn *c, const char *text, size_t len)
{
    long long ns;
    long sender;
    int64_t now = now_ns();

    if (read_stamp(text, len, &ns, &sender) < 0)
        return; /* not one of ours */
    if (c->stall) {
        /* read by a stalled receiver once reading resumed: not a latency */
        stalls[c->stall - 1].msgs_after++;
        return;
    }
    fig.deliveries++;
    fig.last_delivery_ns = now;
    if (now >= fig.run_start_ns && now < fig.run_end_ns)
        fig.deliveries_in_window++;
    hist_record(now > ns ? (uint64_t)(now - ns) : 0);
    if (two.port)
        hist_add(&two.side[on_port2(c)], now > ns ? (uint64_t)(now - ns) : 0);
    if (sender == (long)(c - conns) && c->unacked > 0) {
        c->unacked--;
        fig.acked++;
        if (now >= fig.run_start_ns && now < fig.run_end_ns)
            fig.acked_in_window++;
        if (fig.running && opt.rate <= 0 && now < fig.run_end_ns)
            send_chat(c);
    }
}

static void on_event(struct conn *c, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *ev;
    const char *type;

    if (memmem(text, len, "\"message_added\"", 15)) {
        on_message_added(c, text, len);
        return;
    }
    if (memmem(text, len, "\"session_update\"", 16))
        return; /* user_joined, user_left, typing: presence traffic */
    ev = json_loadb(text, len, 0, &jerr);
    type = json_string_value(json_object_get(ev, "type"));
    if (!type) {
        if (error_prints++ < 5)
            fprintf(stderr, "loadgen: unreadable frame: %.120s\n", text);
    } else if (strcmp(type, "connected") == 0) {
        if (!c->connected)
            ready_count++;
        c->connected = true;
        if (opt.mode == MODE_HANDSHAKES) {
            fig.handshakes++;
            if (now_ns() < fig.run_end_ns)
                fig.handshakes_in_window++;
            c->we_close = true;
            c->st = CS_CLOSING;
            c->close_deadline_ns = now_ns() + (int64_t)(CLOSE_WAIT_S * 1e9);
            ws_send(c, 8, "\x03\xe8", 2); /* 1000: normal closure */
        } else if (opt.mode == MODE_SESSIONS) {
            struct session *s = &sess[c->session];
            if (c - conns == s->first && !s->create_sent) {
                s->create_sent = true;
                ws_send_text(c, "{\"type\":\"create_session\",\"title\":\"loadgen\"}");
            } else if (s->created && !c->join_sent) {
                send_join(c);
            }
        }
    } else if (strcmp(type, "session_created") == 0 && opt.mode == MODE_SESSIONS) {
        struct session *s = &sess[c->session];
        const char *id = json_string_value(json_object_get(ev, "session_id"));
        snprintf(s->id, sizeof s->id, "%s", id ? id : "");
        s->created = true;
        c->member = true;
        s->members++;
        for (long i = s->first + 1; i < s->first + s->n; i++)
            if (conns[i].connected && !conns[i].join_sent && conns[i].st == CS_OPEN)
                send_join(&conns[i]);
    } else if (strcmp(type, "session_joined") == 0 && opt.mode == MODE_SESSIONS) {
        if (!c->member) {
            c->member = true;
            sess[c->session].members++;
        }
    } else if (strcmp(type, "error") == 0) {
        fig.errors++;
        if (error_prints++ < 5)
            fprintf(stderr, "loadgen: error from the broker: %.200s\n", text);
    }
    json_decref(ev);
}

/* One complete frame. Returns -1 when c was closed. */
static int on_frame(struct conn *c, int op, bool fin, unsigned char *p, size_t len)
{
    if (op == 9) { /* ping: answer with the same payload */
        fig.pings++;
        return ws_send(c, 10, p, len);
    }
    if (op == 10)
        return 0;
    if (op == 8) {
        if (c->st != CS_CLOSING) {
            uint16_t code = len >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
            char why[64];
            snprintf(why, sizeof why, "close frame, code %u", code);
            ws_send(c, 8, p, len >= 2 ? 2 : 0);
            conn_close(c, why);
        } else {
            conn_close(c, "close answered");
        }
        return -1;
    }
    if (op == 1 || op == 2 || op == 0) {
        if (op != 0 && fin && !c->msg) {
            unsigned char saved = p[len];
            p[len] = '\0'; /* in_cap > in_len: there is always room */
            if (op == 1)
                on_event(c, (const char *)p, len);
            if (c->st != CS_FREE)
                p[len] = saved;
            return c->st == CS_FREE ? -1 : 0;
        }
        /* fragments: rare; reassemble */
        unsigned char *grown = realloc(c->msg, c->msg_len + len + 1);
        if (!grown) {
            conn_close(c, "out of memory");
            return -1;
        }
        c->msg = grown;
        memcpy(c->msg + c->msg_len, p, len);
        c->msg_len += len;
        if (fin) {
            c->msg[c->msg_len] = '\0';
            on_event(c, (const char *)c->msg, c->msg_len);
            if (c->st == CS_FREE)
                return -1;
            free(c->msg);
            c->msg = NULL;
            c->msg_len = 0;
        }
    }
    return 0;
}

/* Parses the 101 answer at the start of c->in. Returns bytes used, 0 for "need more",
 * -1 when the upgrade failed (c closed). */
static long parse_upgrade(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *h, expect[32], both[96];
    unsigned char digest[20];
    bool ok;

    if (!end)
        return c->in_len > 16384 ? (conn_close(c, "answer too long"), -1) : 0;
    *end = '\0';
    snprintf(both, sizeof both, "%s%s", c->key, WS_GUID);
    sha1(both, strlen(both), digest);
    base64(digest, 20, expect);
    h = strcasestr((char *)c->in, "\r\nSec-WebSocket-Accept:");
    if (h) {
        h += 23;
        while (*h == ' ')
            h++;
    }
    ok = strncmp((char *)c->in, "HTTP/1.1 101", 12) == 0 && h &&
         strncmp(h, expect, strlen(expect)) == 0;
    if (!ok) {
        fig.upgrade_fail++;
        if (error_prints++ < 5)
            fprintf(stderr, "loadgen: upgrade refused: %.80s\n", (char *)c->in);
        c->we_close = true;
        conn_close(c, "upgrade refused");
        return -1;
    }
    c->st = CS_OPEN;
    in_flight--;
    open_count++;
    return (long)(end + 4 - (char *)c->in);
}

/* Parses every complete frame in c->in. Returns -1 when c was closed. */
static int parse_frames(struct conn *c)
{
    size_t at = 0;
    int rc = 0;

    while (c->in_len - at >= 2) {
        unsigned char *f = c->in + at;
        size_t avail = c->in_len - at, h = 2;
        uint64_t len = f[1] & 0x7f;
        bool masked = f[1] & 0x80;

        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            h = 10;
        }
        if (len > MAX_IN) {
            conn_close(c, "frame too large");
            return -1;
        }
        if (masked)
            h += 4;
        if (avail < h + len)
            break;
        if (masked)
            for (uint64_t i = 0; i < len; i++)
                f[h + i] ^= f[h - 4 + (i & 3)];
        at += h + (size_t)len;
        if (on_frame(c, f[0] & 0x0f, f[0] & 0x80, f + h, (size_t)len) < 0)
            return -1;
    }
    if (at) {
        memmove(c->in, c->in + at, c->in_len - at);
        c->in_len -= at;
    }
    return rc;
}

static void conn_readable(struct conn *c)
{
    for (int round = 0; round < 4; round++) { /* bounded: be fair to the others */
        ssize_t n;

        if (c->in_cap - c->in_len < READ_CHUNK / 4 + 1) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 4096;
            unsigned char *grown;
            if (cap > MAX_IN + 64) {
                conn_close(c, "input too large");
                return;
            }
            if (!(grown = realloc(c->in, cap))) {
                conn_close(c, "out of memory");
                return;
            }
            c->in = grown;
            c->in_cap = cap;
        }
        n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len - 1, MSG_DONTWAIT);
        if (n == 0) {
            conn_close(c, "end of stream");
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_close(c, strerror(errno));
            return;
        }
        c->in_len += (size_t)n;
        if (c->stall)
            stalls[c->stall - 1].bytes_after += (uint64_t)n;
        if (c->st == CS_UPGRADING) {
            long used = parse_upgrade(c);
            if (used < 0)
                return;
            if (used == 0)
                continue;
            memmove(c->in, c->in + used, c->in_len - (size_t)used);
            c->in_len -= (size_t)used;
        }
        if (c->st == CS_OPEN || c->st == CS_CLOSING)
            if (parse_frames(c) < 0)
                return;
        if ((size_t)n < c->in_cap - c->in_len - 1)
            break; /* the socket is drained */
    }
    if (c->in_len == 0 && c->in_cap > 65536) {
        free(c->in); /* give back what a burst made us allocate */
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* Runs the loop once: waits at most timeout_ms, handles what is ready. */
static void pump(int timeout_ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms);

    for (int i = 0; i < n; i++) {
        struct conn *c = &conns[evs[i].data.u64];
        if (c->st == CS_FREE)
            continue;
        if (c->st == CS_CONNECTING) {
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                send_upgrade(c);
            continue;
        }
        if (c->stall && stalling) {
            /* only a hangup or an error can be reported (EPOLLRDHUP, EPOLLHUP, EPOLLERR):
             * note the first, and stop watching until stall_end, reading nothing */
            struct stall *t = &stalls[c->stall - 1];
            if (!t->event_ns) {
                t->event_ns = now_ns();
                t->events = evs[i].events;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            continue;
        }
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_readable(c);
        if (c->st != CS_FREE && (evs[i].events & EPOLLOUT) && c->out_len)
            conn_flush(c);
    }
}

/* ---- the modes ---- */

static long broker_rss_kb(void)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    if (opt.broker_pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%ld/status", opt.broker_pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* CPU seconds used so far by pid (user + system), or -1. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (!(p = strrchr(buf, ')')))
        return -1;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU use of the broker and of this process between two calls (begin, then end). */
static struct {
    double broker_s, self_s;
    int64_t at;
} cpu_mark;

static double self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void cpu_begin(void)
{
    cpu_mark.broker_s = opt.broker_pid > 0 ? proc_cpu_s(opt.broker_pid) : -1;
    cpu_mark.self_s = self_cpu_s();
    cpu_mark.at = now_ns();
}

static void cpu_end(const char *what)
{
    double wall = secs(now_ns() - cpu_mark.at), b = -1;

    if (wall <= 0)
        return;
    if (cpu_mark.broker_s >= 0 && (b = proc_cpu_s(opt.broker_pid)) >= 0)
        printf("loadgen: cpu %s: broker %.0f%% of a core, loadgen %.0f%%\n", what,
               100.0 * (b - cpu_mark.broker_s) / wall,
               100.0 * (self_cpu_s() - cpu_mark.self_s) / wall);
    else
        printf("loadgen: cpu %s: loadgen %.0f%% of a core\n", what,
               100.0 * (self_cpu_s() - cpu_mark.self_s) / wall);
}

/* Opens conns [0, n) with at most opt.concurrency handshakes in flight, and waits until
 * each has its "connected" event or failed, or the deadline. Returns how many are open. */
static long open_all(long n, double timeout_s)
{
    int64_t deadline = now_ns() + (int64_t)(timeout_s * 1e9);
    long next = 0, ready;

    for (;;) {
        while (next < n && in_flight < opt.concurrency) {
            conn_start(&conns[next]);
            next++;
        }
        ready = ready_count;
        if ((next == n && in_flight == 0 && ready == open_count) || now_ns() > deadline)
            break;
        pump(10);
    }
    return ready;
}

static void close_all(void)
{
    for (long i = 0; i < n_conns; i++)
        if (conns[i].st != CS_FREE) {
            conns[i].we_close = true;
            conn_close(&conns[i], "done");
        }
}

/* Waits until no frame has arrived for SETTLE_QUIET_MS (presence storms after joins). */
static void settle(void)
{
    int64_t end = now_ns() + (int64_t)(SETTLE_MAX_S * 1e9);

    while (now_ns() < end) {
        struct epoll_event evs[1];
        int n = epoll_wait(ep, evs, 1, SETTLE_QUIET_MS);
        if (n == 0)
            return;
        pump(0);
    }
}

static void print_hist(const char *what, const struct hist *h)
{
    printf("loadgen: latency us%s  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  "
           "(%llu samples)\n",
           what, (double)hist_quantile_of(h, 0.50) / 1e3, (double)hist_quantile_of(h, 0.90) / 1e3,
           (double)hist_quantile_of(h, 0.99) / 1e3, (double)hist_quantile_of(h, 0.999) / 1e3,
           (double)h->max / 1e3, (unsigned long long)h->total);
}

static void print_latency(void)
{
    print_hist("", &hist);
    if (!two.port)
        return;
    for (int k = 0; k < 2; k++) {
        char what[96];
        snprintf(what, sizeof what, ", %s (%ld members)",
                 k ? "cross-broker: receivers on the other broker"
                   : "same broker: receivers on the senders' broker",
                 two.members[k]);
        print_hist(what, &two.side[k]);
    }
}

/* ---- --stalled: receivers that stop reading ---- */

static struct {
    long before, peak, end; /* broker VmRSS, kB */
    int64_t peak_ns, next_ns;
} rss = {-1, -1, -1, 0, 0};

/* The last opt.stalled members of the first session that are not senders stop reading:
 * no EPOLLIN (and no EPOLLOUT: they write nothing), only EPOLLRDHUP, so that a hangup or
 * a reset is seen without reading a byte. */
static void stall_begin(void)
{
    struct session *s = &sess[0];

    stalls = calloc((size_t)opt.stalled, sizeof *stalls);
    if (!stalls)
        return;
    stall_ns = now_ns();
    clock_gettime(CLOCK_REALTIME, &stall_wall);
    stalling = true;
    for (long i = s->first + s->n - 1; i >= s->first && n_stalls < opt.stalled; i--) {
        struct conn *c = &conns[i];
        struct stall *t = &stalls[n_stalls];
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        struct epoll_event ev = {.events = EPOLLRDHUP, .data.u64 = (uint64_t)i};
        if (c->sender || c->st != CS_OPEN || !c->member)
            continue;
        t->conn = i;
        if (getsockname(c->fd, (struct sockaddr *)&me, &len) == 0) {
            t->port = ntohs(me.sin_port);
            t->addr = me.sin_addr.s_addr;
        }
        c->stall = ++n_stalls;
        s->stalled++;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (n_stalls < opt.stalled)
        fprintf(stderr, "loadgen: only %ld receivers of the first session could be stalled\n",
                n_stalls);
}

/* The broker's side of a stalled connection, looked up by its exact address with
 * sock_diag (cheap, unlike reading /proc/net/tcp with thousands of TIME_WAIT entries):
 * its TCP state and the bytes in its kernel send queue. Returns 1 when found, 0 when the
 * kernel has no such socket, -1 when it cannot tell. The client's side says nothing
 * until we read: a FIN waits behind the bytes that cannot be sent. */
static int diag_fd = -1;

static int broker_socket(const struct stall *t, int family, int *state, long *sendq)
{
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 r;
    } req = {.nh = {.nlmsg_len = sizeof req,
                    .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                    .nlmsg_flags = NLM_F_REQUEST},
             .r = {.sdiag_family = (uint8_t)family,
                   .sdiag_protocol = IPPROTO_TCP,
                   .idiag_states = ~0u,
                   .id = {.idiag_sport = htons((uint16_t)opt.port),
                          .idiag_dport = htons((uint16_t)t->port),
                          .idiag_cookie = {INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE}}}};
    union {
        struct nlmsghdr nh;
        char buf[4096];
    } ans;
    ssize_t n;

    if (family == AF_INET) {
        req.r.id.idiag_src[0] = server.sin_addr.s_addr;
        req.r.id.idiag_dst[0] = t->addr;
    } else { /* a dual-stack listener: v4-mapped addresses */
        req.r.id.idiag_src[2] = req.r.id.idiag_dst[2] = htonl(0xffff);
        req.r.id.idiag_src[3] = server.sin_addr.s_addr;
        req.r.id.idiag_dst[3] = t->addr;
    }
    if (diag_fd < 0 &&
        (diag_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)) < 0)
        return -1;
    if (send(diag_fd, &req, sizeof req, 0) != (ssize_t)sizeof req)
        return -1;
    if ((n = recv(diag_fd, &ans, sizeof ans, 0)) < (ssize_t)sizeof ans.nh)
        return -1;
    if (ans.nh.nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(&ans.nh);
        return e->error == -ENOENT ? 0 : -1;
    }
    if (ans.nh.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
        (size_t)n < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
        return -1;
    const struct inet_diag_msg *m = NLMSG_DATA(&ans.nh);
    *state = m->idiag_state;
    *sendq = (long)m->idiag_wqueue;
    return 1;
}

static void scan_broker_sockets(void)
{
    int64_t now = now_ns();

    for (long k = 0; k < n_stalls; k++) {
        struct stall *t = &stalls[k];
        int st = 0, found;
        long q = 0;
        if (t->broker_close_ns || !t->port)
            continue; /* already seen leaving ESTABLISHED */
        found = broker_socket(t, t->family ? t->family : AF_INET, &st, &q);
        if (found == 0 && !t->family && !t->broker_state &&
            (found = broker_socket(t, AF_INET6, &st, &q)) == 1)
            t->family = AF_INET6;
        if (found < 0)
            continue;
        if (found == 1 && !t->family)
            t->family = AF_INET;
        if (found == 0) {
            if (t->broker_state) { /* was there: reset, or closed for good */
                t->broker_state = -1;
                t->broker_close_ns = now;
            }
            continue;
        }
        t->broker_state = st;
        t->txq = q;
        if (q > t->txq_max)
            t->txq_max = q;
        if (st != 1 && !t->broker_close_ns) { /* 1: ESTABLISHED */
            t->broker_close_ns = now;
            t->txq_at_close = q;
        }
    }
}

/* Every SAMPLE_MS in sessions mode: the broker's VmRSS, and the sockets of the stalled. */
static void sample(bool force)
{
    int64_t now = now_ns();
    long kb;

    if ((opt.broker_pid <= 0 && !n_stalls) || (!force && now < rss.next_ns))
        return;
    rss.next_ns = now + SAMPLE_MS * 1000000ll;
    if ((kb = broker_rss_kb()) > rss.peak) {
        rss.peak = kb;
        rss.peak_ns = now;
    }
    if (kb > 0)
        rss.end = kb;
    if (stalling)
        scan_broker_sockets();
}

static const char *tcp_state_name(int st)
{
    static const char *names[] = {"?",          "ESTABLISHED", "SYN_SENT",  "SYN_RECV",
                                  "FIN_WAIT1",  "FIN_WAIT2",   "TIME_WAIT", "CLOSE",
                                  "CLOSE_WAIT", "LAST_ACK",    "LISTEN",    "CLOSING"};

    if (st < 0)
        return "gone";
    return st < (int)(sizeof names / sizeof *names) ? names[st] : "?";
}

/* The stalled receivers read again until the broker's close reaches them, or they have
 * been quiet for a second (still open), or STALL_READ_S. */
static void stall_end(void)
{
    int64_t end, quiet_from;
    uint64_t last_bytes = 0;

    sample(true);
    stalling = false;
    for (long k = 0; k < n_stalls; k++) {
        struct conn *c = &conns[stalls[k].conn];
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (c->out_len ? EPOLLOUT : 0),
                                 .data.u64 = (uint64_t)stalls[k].conn};
        int unread = 0;
        if (c->st == CS_FREE)
            continue;
        if (ioctl(c->fd, FIONREAD, &unread) == 0)
            stalls[k].unread = unread;
        c->out_armed = c->out_len > 0;
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev); /* dropped after a hangup event */
    }
    end = now_ns() + (int64_t)(STALL_READ_S * 1e9);
    quiet_from = now_ns();
    while (now_ns() < end) {
        long open = 0;
        uint64_t bytes = 0;
        for (long k = 0; k < n_stalls; k++) {
            open += conns[stalls[k].conn].st != CS_FREE;
            bytes += stalls[k].bytes_after;
        }
        if (open == 0)
            break;
        if (bytes != last_bytes)
            last_bytes = bytes, quiet_from = now_ns();
        else if (now_ns() - quiet_from > 1000000000ll)
            break;
        pump(10);
        sample(false);
    }
}

static void stall_report(void)
{
    long closed = 0;

    for (long k = 0; k < n_stalls; k++) {
        struct stall *t = &stalls[k];
        closed += t->closed;
        printf("loadgen: stalled connection %ld: ", t->conn);
        if (t->broker_close_ns)
            printf("the broker's socket left ESTABLISHED %.2f s after the stall (%s, %ld bytes "
                   "in its kernel send queue)",
                   secs(t->broker_close_ns - stall_ns), tcp_state_name(t->broker_state),
                   t->txq_at_close);
        else
            printf("the broker's socket stayed %s through the send window",
                   tcp_state_name(t->broker_state));
        printf("; at most %ld bytes in that send queue; %ld bytes waited unread in ours\n",
               t->txq_max, t->unread);
        if (t->event_ns)
            printf("loadgen:   while stalled, epoll reported %s%s%s %.2f s after the stall\n",
                   t->events & EPOLLRDHUP ? "RDHUP " : "", t->events & EPOLLHUP ? "HUP " : "",
                   t->events & EPOLLERR ? "ERR" : "", secs(t->event_ns - stall_ns));
        printf("loadgen:   reading again: %llu bytes, %llu of our messages, then %s\n",
               (unsigned long long)t->bytes_after, (unsigned long long)t->msgs_after,
               t->closed ? t->why : "nothing: still open");
    }
    char when[32];
    struct tm tm;
    gmtime_r(&stall_wall.tv_sec, &tm);
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    printf("loadgen: stalled %ld of the first session's receivers at %s.%03ld UTC: %ld closed "
           "by the broker, %ld still open\n",
           n_stalls, when, stall_wall.tv_nsec / 1000000, closed, n_stalls - closed);
}

static void print_rss(void)
{
    if (rss.before > 0 && rss.peak > 0 && rss.end > 0)
        printf("loadgen: broker VmRSS kB: %ld when the send window opened%s, peak %ld (%.1f s "
               "after), %ld at the end: growth %ld kB at the peak, %ld kB at the end\n",
               rss.before, n_stalls ? " (the stall)" : "", rss.peak,
               secs(rss.peak_ns - fig.run_start_ns), rss.end, rss.peak - rss.before,
               rss.end - rss.before);
}

/* --warmup: the run's paced traffic for opt.warmup_s, drained and then forgotten, so
 * that what the broker allocates once (SQLite's page cache, the allocator's arenas) is
 * not counted as growth during the run. */
static void warm_up(const long *senders, long sender_n)
{
    int64_t t0 = now_ns(), end = t0 + (int64_t)(opt.warmup_s * 1e9);
    uint64_t scheduled = 0;
    long rr = 0;

    while (now_ns() < end) {
        uint64_t due = (uint64_t)(opt.rate * secs(now_ns() - t0));
        for (; scheduled < due; scheduled++) {
            struct conn *c = &conns[senders[rr++ % sender_n]];
            if (c->st == CS_OPEN && c->member && c->unacked < opt.window)
                send_chat(c);
        }
        pump(1);
    }
    end = now_ns() + (int64_t)(DRAIN_MAX_S * 1e9);
    while (fig.deliveries < fig.expected && now_ns() < end)
        pump(5);
    printf("loadgen: warm-up %.1f s: %llu messages sent, %llu of %llu deliveries (not counted)\n",
           opt.warmup_s, (unsigned long long)fig.sent, (unsigned long long)fig.deliveries,
           (unsigned long long)fig.expected);
    fig.sent = fig.acked = fig.acked_in_window = fig.throttled = fig.late = 0;
    fig.deliveries = fig.deliveries_in_window = fig.expected = 0;
    memset(&hist, 0, sizeof hist);
    memset(two.side, 0, sizeof two.side);
}

static int run_sessions(void)
{
    long members = 0, ready, sender_n = 0, rr = 0;
    long *senders;
    int64_t t0, setup0 = now_ns(), drain_end;

    n_sess = (opt.conns + opt.session_size - 1) / opt.session_size;
    sess = calloc((size_t)n_sess, sizeof *sess);
    senders = calloc((size_t)opt.conns, sizeof *senders);
    if (!sess || !senders)
        return 1;
    for (long i = 0; i < opt.conns; i++) {
        long s = i / opt.session_size;
        conns[i].session = s;
        conns[i].sender = i - s * opt.session_size < opt.senders;
        if (conns[i].sender)
            senders[sender_n++] = i;
        if (sess[s].n++ == 0)
            sess[s].first = i;
    }
    ready = open_all(opt.conns, SETUP_TIMEOUT_S);
    if (ready == 0) {
        fprintf(stderr, "loadgen: no connection could be made to ws://%s:%d/ws\n", opt.host,
                opt.port);
        return 1;
    }
    /* wait for every open connection to be a member, while that makes progress */
    long last = -1;
    for (int64_t stall = 0, end = now_ns() + (int64_t)(SETUP_TIMEOUT_S * 1e9); now_ns() < end;) {
        members = 0;
        for (long i = 0; i < opt.conns; i++)
            members += conns[i].member;
        if (members >= open_count)
            break;
        if (members != last)
            last = members, stall = now_ns() + (int64_t)(10 * 1e9);
        else if (now_ns() > stall)
            break;
        pump(10);
    }
    printf("loadgen: setup %.2f s: %ld of %ld connections open, %ld session members in %ld "
           "sessions\n",
           secs(now_ns() - setup0), ready, opt.conns, members, n_sess);
    if (two.port) {
        for (long i = 0; i < opt.conns; i++)
            two.members[on_port2(&conns[i])] += conns[i].member;
        printf("loadgen: %ld members on the broker at port %d (the senders'), %ld on the broker "
               "at port %d\n",
               two.members[0], opt.port, two.members[1], two.port);
    }
    if (opt.warmup_s > 0 && opt.rate > 0 && sender_n > 0)
        warm_up(senders, sender_n);
    if (!opt.no_settle)
        settle();
    rss.before = rss.peak = rss.end = broker_rss_kb();
    rss.peak_ns = now_ns();
    if (opt.stalled > 0)
        stall_begin();

    t0 = now_ns();
    fig.run_start_ns = t0;
    fig.run_end_ns = t0 + (int64_t)(opt.duration_s * 1e9);
    fig.running = true;
    cpu_begin();
    if (opt.rate <= 0)
        for (long k = 0; k < sender_n; k++)
            for (long w = 0; w < opt.window && conns[senders[k]].st == CS_OPEN; w++)
                send_chat(&conns[senders[k]]);
    uint64_t scheduled = 0;
    while (now_ns() < fig.run_end_ns) {
        if (opt.rate > 0 && sender_n > 0) {
            uint64_t due = (uint64_t)(opt.rate * secs(now_ns() - t0));
            if (due > scheduled + 1000) { /* more than 1,000 behind: we are the bottleneck */
                fig.late += due - scheduled - 1000;
                scheduled = due - 1000;
            }
            while (scheduled < due) {
                struct conn *c = &conns[senders[rr++ % sender_n]];
                scheduled++;
                if (c->st != CS_OPEN || !c->member)
                    continue;
                if (c->unacked >= opt.window)
                    fig.throttled++;
                else
                    send_chat(c);
            }
        }
        pump(1);
        sample(false);
    }
    fig.running = false;
    cpu_end("during the send window");
    /* drain: what was sent arrives, or DRAIN_MAX_S passes */
    drain_end = now_ns() + (int64_t)(DRAIN_MAX_S * 1e9);
    while (fig.deliveries < fig.expected && now_ns() < drain_end) {
        pump(5);
        sample(false);
    }
    if (n_stalls)
        stall_end();
    sample(true);

    double window = secs(fig.run_end_ns - fig.run_start_ns);
    double span = secs((fig.last_delivery_ns > t0 ? fig.last_delivery_ns : fig.run_end_ns) - t0);
    printf("loadgen: sent %llu chat messages in %.1f s (%.0f msg/s, %llu acknowledged; "
           "%llu throttled by --window %ld, %llu late)\n",
           (unsigned long long)fig.sent, window, (double)fig.sent / window,
           (unsigned long long)fig.acked, (unsigned long long)fig.throttled, opt.window,
           (unsigned long long)fig.late);
    printf("loadgen: acknowledged/s %.0f  (own message_added back in the send window: stored and "
           "answered; %llu in %.1f s)\n",
           (double)fig.acked_in_window / window, (unsigned long long)fig.acked_in_window, window);
    printf("loadgen: deliveries/s %.0f  (in the send window; %llu delivered of %llu expected, "
           "%.0f/s over %.1f s until the last one)\n",
           (double)fig.deliveries_in_window / window, (unsigned long long)fig.deliveries,
           (unsigned long long)fig.expected, (double)fig.deliveries / span, span);
    print_latency();
    printf("loadgen: dropped connections %llu, connect failures %llu, upgrade failures %llu, "
           "error events %llu\n",
           (unsigned long long)fig.dropped, (unsigned long long)fig.connect_fail,
           (unsigned long long)fig.upgrade_fail, (unsigned long long)fig.errors);
    if (n_stalls)
        stall_report();
    print_rss();
    close_all();
    free(senders);
    free(stalls);
    return 0;
}

static int run_idle(void)
{
    long before = broker_rss_kb(), after_open, after_hold, ready, still;
    int64_t t0 = now_ns(), hold_end;

    cpu_begin();
    ready = open_all(opt.idle, SETUP_TIMEOUT_S + (double)opt.idle / 200.0);
    cpu_end("while opening");
    printf("loadgen: opened %ld of %ld idle connections in %.2f s (connect failures %llu, "
           "upgrade failures %llu)\n",
           ready, opt.idle, secs(now_ns() - t0), (unsigned long long)fig.connect_fail,
           (unsigned long long)fig.upgrade_fail);
    if (ready == 0)
        return 1;
    pump(0);
    after_open = broker_rss_kb();
    hold_end = now_ns() + (int64_t)(opt.hold_s * 1e9);
    cpu_begin();
    while (now_ns() < hold_end)
        pump(100);
    cpu_end("while holding");
    after_hold = broker_rss_kb();
    still = open_count;
    printf("loadgen: held %.0f s: %ld still open, %llu dropped by the broker, %llu pings "
           "answered\n",
           opt.hold_s, still, (unsigned long long)fig.dropped, (unsigned long long)fig.pings);
    if (before > 0 && after_open > 0)
        printf("loadgen: broker VmRSS %ld kB before, %ld kB with %ld open, %ld kB after the "
               "hold: %.0f bytes per connection\n",
               before, after_open, ready, after_hold,
               (double)(after_open - before) * 1024.0 / (double)ready);
    else if (opt.broker_pid > 0)
        printf("loadgen: broker VmRSS unavailable (pid %ld gone?)\n", opt.broker_pid);
    close_all();
    return 0;
}

static int run_handshakes(void)
{
    int64_t t0 = now_ns(), hard_end;
    long slots = opt.concurrency;

    fig.run_end_ns = t0 + (int64_t)(opt.handshakes_s * 1e9);
    cpu_begin();
    hard_end = fig.run_end_ns + (int64_t)(CLOSE_WAIT_S * 1e9);
    while (now_ns() < hard_end) {
        int64_t now = now_ns();
        bool busy = false;
        for (long i = 0; i < slots; i++) {
            struct conn *c = &conns[i];
            if (c->st == CS_FREE && now < fig.run_end_ns) {
                conn_start(c);
            } else if (c->st == CS_CLOSING && now > c->close_deadline_ns) {
                struct linger lg = {1, 0}; /* the broker did not close: reset */
                setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                conn_close(c, "close timed out");
            }
            busy |= c->st != CS_FREE;
        }
        if (!busy && now >= fig.run_end_ns)
            break;
        pump(1);
    }
    cpu_end("while connecting and closing");
    printf("loadgen: handshakes/s %.0f  (%llu upgrades with their connected event in %.1f s, "
           "%ld at a time; each closed with 1000 and the close awaited)\n",
           (double)fig.handshakes_in_window / opt.handshakes_s,
           (unsigned long long)fig.handshakes_in_window, opt.handshakes_s, slots);
    printf("loadgen: connect failures %llu, upgrade failures %llu, dropped %llu\n",
           (unsigned long long)fig.connect_fail, (unsigned long long)fig.upgrade_fail,
           (unsigned long long)fig.dropped);
    close_all();
    return fig.handshakes ? 0 : 1;
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen [--host A] [--port P] MODE\n"
            "  sessions:   --conns N --session-size S [--senders K] [--rate R] [--window W]\n"
            "              [--duration D] [--size BYTES] [--stalled K] [--warmup S]\n"
            "              [--broker-pid PID] [--no-settle: measure during the joins' presence]\n"
            "              [--port2 P: the last half of each session on a second broker]\n"
            "  idle:       --idle N --hold S [--broker-pid PID]\n"
            "  handshakes: --handshakes D [--concurrency C]\n"
            "  --concurrency also bounds handshakes in flight while connecting (default 64)\n"
            "  --sources K spreads connections over source addresses 127.0.0.1..K (default 1)\n");
}

static int num(const char *s, double min, double max, double *out)
{
    char *end;
    double v;

    if (!s)
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d = 0;
        int bad = 0;

        if (strcmp(a, "--no-settle") == 0) {
            opt.no_settle = true;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            opt.quiet = true;
            continue;
        }
        if (strcmp(a, "--host") == 0) {
            opt.host = v;
            bad = !v;
        } else if (strcmp(a, "--port") == 0) {
            bad = num(v, 1, 65535, &d), opt.port = (int)d;
        } else if (strcmp(a, "--port2") == 0) {
            bad = num(v, 1, 65535, &d), two.port = (int)d;
        } else if (strcmp(a, "--conns") == 0) {
            bad = num(v, 1, MAX_CONNS, &d), opt.conns = (long)d, opt.mode = MODE_SESSIONS;
        } else if (strcmp(a, "--session-size") == 0) {
            bad = num(v, 1, MAX_CONNS, &d), opt.session_size = (long)d;
        } else if (strcmp(a, "--senders") == 0) {
            bad = num(v, 1, MAX_CONNS, &d), opt.senders = (long)d;
        } else if (strcmp(a, "--rate") == 0) {
            bad = num(v, 0, 1e7, &d), opt.rate = d;
        } else if (strcmp(a, "--window") == 0) {
            bad = num(v, 1, 1e9, &d), opt.window = (long)d;
        } else if (strcmp(a, "--duration") == 0) {
            bad = num(v, 0.1, 3600, &d), opt.duration_s = d;
        } else if (strcmp(a, "--warmup") == 0) {
            bad = num(v, 0, 3600, &d), opt.warmup_s = d;
        } else if (strcmp(a, "--stalled") == 0) {
            bad = num(v, 0, MAX_CONNS, &d), opt.stalled = (long)d;
        } else if (strcmp(a, "--size") == 0) {
            bad = num(v, 1, MAX_CONTENT, &d), opt.size = (long)d;
        } else if (strcmp(a, "--idle") == 0) {
            bad = num(v, 1, MAX_CONNS, &d), opt.idle = (long)d, opt.mode = MODE_IDLE;
        } else if (strcmp(a, "--hold") == 0) {
            bad = num(v, 0, 86400, &d), opt.hold_s = d;
        } else if (strcmp(a, "--broker-pid") == 0) {
            bad = num(v, 1, 1e9, &d), opt.broker_pid = (long)d;
        } else if (strcmp(a, "--handshakes") == 0) {
            bad = num(v, 0.1, 3600, &d), opt.handshakes_s = d, opt.mode = MODE_HANDSHAKES;
        } else if (strcmp(a, "--sources") == 0) {
            bad = num(v, 1, 250, &d), opt.sources = (long)d;
        } else if (strcmp(a, "--concurrency") == 0) {
            bad = num(v, 1, 4096, &d), opt.concurrency = (long)d;
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "loadgen: bad or missing value for %s\n", a);
            return -1;
        }
        i++;
    }
    if (opt.window < 0)
        opt.window = opt.rate > 0 ? 1000000 : 8;
    if (opt.senders > opt.session_size)
        opt.senders = opt.session_size;
    if (two.port && (opt.mode != MODE_SESSIONS || opt.stalled > 0 ||
                     opt.senders > opt.session_size - opt.session_size / 2)) {
        fprintf(stderr, "loadgen: --port2 is for sessions mode, without --stalled, with the "
                        "senders in the first half of each session\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    uint64_t seed;
    int rc;

    if (parse_args(argc, argv) < 0) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0); /* broker_bench watches the output of a running loadgen */
    if (getrandom(&seed, sizeof seed, 0) == sizeof seed && seed)
        rng_state = seed;
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &server.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }
    two.server = server;
    two.server.sin_port = htons((uint16_t)two.port);
    n_conns = opt.mode == MODE_SESSIONS ? opt.conns
              : opt.mode == MODE_IDLE   ? opt.idle
                                        : opt.concurrency;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)n_conns + 16 > rl.rlim_cur) {
        fprintf(stderr, "loadgen: %ld connections need more than the fd limit (%llu)\n", n_conns,
                (unsigned long long)rl.rlim_cur);
        return 2;
    }
    conns = calloc((size_t)n_conns, sizeof *conns);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0) {
        perror("loadgen");
        return 1;
    }
    for (long i = 0; i < n_conns; i++) {
        conns[i].fd = -1;
        conns[i].session = -1;
    }
    switch (opt.mode) {
    case MODE_SESSIONS:
        printf("loadgen: sessions: %ld connections, sessions of %ld, %ld sender(s) each, "
               "rate %s, %.0f s, %ld-byte messages\n",
               opt.conns, opt.session_size, opt.senders,
               opt.rate > 0 ? "fixed" : "as fast as acknowledged", opt.duration_s, opt.size);
        if (opt.stalled > 0)
            printf("loadgen: %ld receiver(s) of the first session stop reading when the send "
                   "window opens\n",
                   opt.stalled);
        rc = run_sessions();
        break;
    case MODE_IDLE:
        rc = run_idle();
        break;
    default:
        rc = run_handshakes();
        break;
    }
    fflush(stdout);
    close(ep);
    free(conns);
    free(sess);
    return rc;
}
