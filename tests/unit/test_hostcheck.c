/* test_hostcheck: host_allowed over one table of Host values and configurations. Not a
 * test of when the servers ask (that is tests/scenarios/16_rest_hosts.py). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "hostcheck.h"
#include "unit.h"

/* One configuration and the Host values it answers (yes) and refuses (no). */
struct host_case {
    const char *name;
    const char *public_url;
    const char *public_ws_url;
    const char *allowed[3];
    const char *yes[12];
    const char *no[16];
};

static const struct host_case host_cases[] = {
    {.name = "defaults: loopback names and addresses, with or without a port",
     .yes = {"localhost", "LocalHost:8000", "localhost.", "127.0.0.1", "127.0.0.1:8000",
             "127.255.3.4:1", "[::1]", "[::1]:8000", "[::ffff:127.0.0.1]:80",
             "localhost:", "[0:0:0:0:0:0:0:1]"},
     .no = {"evil.example", "evil.example:8000", "127.evil.example", "127.0.0.1.evil.example",
            "localhost.evil.example", "128.0.0.1", "0.0.0.0", "[::2]", "[::1", "::1",
            "localhost:80:80", "localhost:123456", "localhost:8x", "127.1", "[::1]x", ":80"}},
    {.name = "--public-url and --public-ws-url name their hosts",
     .public_url = "https://Chat.Example.com:8443/base",
     .public_ws_url = "wss://user@ws.example.net/ws",
     .yes = {"chat.example.com", "CHAT.example.com:443", "ws.example.net:8001", "localhost"},
     .no = {"example.com", "user", "chat.example.com.evil", "base", "ws.example"}},
    {.name = "--allowed-host entries, with or without port",
     .allowed = {"app.example", "[fd00::1]:8000", "10.0.0.5"},
     .yes = {"app.example", "APP.EXAMPLE:9", "[fd00::1]", "10.0.0.5:8000", "127.0.0.1"},
     .no = {"other.example", "app.example.org", "[fd00::2]", "10.0.0.6"}},
    {.name = "--allowed-host '*' allows any",
     .allowed = {"*"},
     .yes = {"evil.example", "anything:1", "[::2]"}},
};

static void run_host_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(host_cases); i++) {
        const struct host_case *k = &host_cases[i];
        struct cfg cfg = {.public_url = (char *)k->public_url,
                          .public_ws_url = (char *)k->public_ws_url};

        unit_begin();
        for (size_t j = 0; j < UNIT_COUNT(k->allowed) && k->allowed[j]; j++)
            cfg.allowed_host.v[cfg.allowed_host.n++] = (char *)k->allowed[j];
        for (size_t j = 0; j < UNIT_COUNT(k->yes) && k->yes[j]; j++)
            if (!host_allowed(&cfg, k->yes[j]))
                UNIT_FAIL("Host '%s' refused, want allowed", k->yes[j]);
        for (size_t j = 0; j < UNIT_COUNT(k->no) && k->no[j]; j++)
            if (host_allowed(&cfg, k->no[j]))
                UNIT_FAIL("Host '%s' allowed, want refused", k->no[j]);
        unit_end("%s", k->name);
    }
}

static void test_no_host(void)
{
    struct cfg cfg = {0};

    CHECK(host_allowed(&cfg, NULL));
    CHECK(host_allowed(&cfg, ""));
}

static void test_long_host(void)
{
    struct cfg cfg = {0};
    char big[1200];

    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(!host_allowed(&cfg, big));
    cfg.allowed_host.v[cfg.allowed_host.n++] = big;
    CHECK(!host_allowed(&cfg, big)); /* longer than a name may be: never matches */
}

int main(void)
{
    static const struct unit_case cases[] = {
        {NULL, run_host_cases},
        {"no Host (HTTP/1.0) or an empty one is allowed", test_no_host},
        {"a Host longer than a DNS name is refused", test_long_host},
    };

    return unit_run(cases, UNIT_COUNT(cases));
}
