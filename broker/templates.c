/* templates: the prompt templates of --templates-dir (SPEC 5), one NAME.txt system prompt
 * per template, read once at start into vhd->templates. An envelope llm_request may name
 * one. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "log.h"
#include "map.h"
#include "utf8.h"

#define TEMPLATE_MAX_BYTES (64 * 1024)

static void free_template(void *value, void *arg)
{
    free(value); /* the name lives in the same allocation, after the text */
}

int templates_load(struct per_vhost_data__chat *vhd)
{
    const char *dir = vhd->cfg->templates_dir;
    struct dirent *de;
    DIR *d;

    if (!dir)
        return 0;
    if (!(d = opendir(dir))) {
        log_error("cannot read --templates-dir '%s'; check the path", dir);
        return -1;
    }
    vhd->templates = map_new();
    while (vhd->templates && (de = readdir(d))) {
        size_t n = strlen(de->d_name), got;
        char path[4096], *buf;
        FILE *f;
        if (n <= 4 || strcmp(de->d_name + n - 4, ".txt") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        /* text, NUL, then the name (the file name without .txt), NUL */
        buf = malloc(TEMPLATE_MAX_BYTES + n + 2);
        got = buf ? fread(buf, 1, TEMPLATE_MAX_BYTES, f) : 0;
        fclose(f);
        if (!buf)
            continue;
        buf[got] = '\0';
        utf8_repair_in_place(buf); /* it goes to the LLM server inside JSON */
        memcpy(buf + got + 1, de->d_name, n - 4);
        buf[got + 1 + n - 4] = '\0';
        if (map_put(vhd->templates, buf + got + 1, buf) < 0)
            free(buf);
    }
    closedir(d);
    log_info("loaded %zu prompt templates from %s", vhd->templates ? map_count(vhd->templates) : 0,
             dir);
    return vhd->templates ? 0 : -1;
}

const char *templates_get(const struct per_vhost_data__chat *vhd, const char *name)
{
    return vhd->templates ? map_get(vhd->templates, name) : NULL;
}

void templates_free(struct per_vhost_data__chat *vhd)
{
    if (!vhd->templates)
        return;
    map_each(vhd->templates, free_template, NULL);
    map_free(vhd->templates);
    vhd->templates = NULL;
}
