/* fuzz_fcgi: libFuzzer harness for the FastCGI parameter translation (rest/fcgi_params.c):
 * fcgi_mount_init on a --mount-prefix, then fcgi_params_parse on an environment.
 *
 * Input: lines; the first is the --mount-prefix (empty: not given), each other line one
 * "NAME=value" parameter as FCGX hands them over. Checks (a violation traps): a mount
 * that is accepted is empty or starts with '/' and has no trailing '/'; the request has a
 * method, a path that starts with '/' and fits its buffer, at most RT_MAX_ARGS query
 * arguments each with a name and a value, and no empty Content-Type; each header comes
 * from its own parameter. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi_params.h"

#define MAX_PARAMS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1), *envp[MAX_PARAMS + 1], *line, *save = NULL;
    char *mount_spec;
    struct fcgi_mount m;
    struct fcgi_params p;
    size_t n = 0;

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    line = strchr(copy, '\n');
    if (line)
        *line++ = '\0';
    mount_spec = copy;
    for (char *l = line ? strtok_r(line, "\n", &save) : NULL; l && n < MAX_PARAMS;
         l = strtok_r(NULL, "\n", &save))
        envp[n++] = l;
    envp[n] = NULL;

    if (fcgi_mount_init(&m, *mount_spec ? mount_spec : NULL) < 0) {
        free(copy);
        return 0;
    }
    if (m.given) {
        size_t ml = strlen(m.path);
        if (ml && (m.path[0] != '/' || m.path[ml - 1] == '/'))
            __builtin_trap();
    }
    fcgi_params_parse(envp, &m, &p);
    if (!p.req.method || !*p.req.method || p.req.path != p.path || p.path[0] != '/' ||
        strnlen(p.path, sizeof p.path) >= sizeof p.path || p.req.n_args > RT_MAX_ARGS)
        __builtin_trap();
    for (size_t i = 0; i < p.req.n_args; i++)
        if (!p.req.args[i].name || !p.req.args[i].value)
            __builtin_trap();
    if (p.req.content_type && !*p.req.content_type)
        __builtin_trap();
    if (p.req.host != fcgi_param(envp, "HTTP_HOST") ||
        p.req.authorization != fcgi_param(envp, "HTTP_AUTHORIZATION"))
        __builtin_trap();
    fcgi_params_cleanup(&p);
    free(copy);
    return 0;
}
