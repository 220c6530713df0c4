/* crest: REST requests over libcurl for the client. Blocking on purpose: the answers are
 * small, the service is near, and every caller wants the answer before going on. Not here:
 * what to print (show.c). */
#include "crest.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX (64 * 1024 * 1024)

int crest_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void crest_global_cleanup(void)
{
    curl_global_cleanup();
}

void crest_url(const struct crest *c, const char *path, char *out, size_t size)
{
    size_t n = strlen(c->base);

    while (n > 0 && c->base[n - 1] == '/')
        n--;
    snprintf(out, size, "%.*s%s", (int)n, c->base, path);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct crest_reply *r = ud;
    size_t n = size * nmemb;
    char *p;

    if (r->len + n > BODY_MAX)
        return 0;
    p = realloc(r->body, r->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + r->len, data, n);
    r->body = p;
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

int crest_call(const struct crest *c, const char *method, const char *path, const char *body,
               struct crest_reply *out, char *err, size_t errlen)
{
    char url[2048], auth[600], curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    CURL *curl;
    CURLcode rc;
    int ret = -1;

    memset(out, 0, sizeof *out);
    crest_url(c, path, url, sizeof url);
    curl = curl_easy_init();
    if (!curl) {
        snprintf(err, errlen, "cannot start an HTTP request");
        return -1;
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (c->api_key && *c->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, c->timeout_s > 0 ? c->timeout_s : 10L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    }
    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s %s: %s", method, url,
                 *curl_err ? curl_err : curl_easy_strerror(rc));
        crest_reply_cleanup(out);
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
    if (!out->body) {
        out->body = strdup("");
        if (!out->body) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    out->json = json_loadb(out->body, out->len, 0, NULL);
    ret = 0;
out:
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    return ret;
}

void crest_reply_cleanup(struct crest_reply *r)
{
    if (!r)
        return;
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

const char *crest_error_text(const struct crest_reply *r)
{
    static char buf[64];
    json_t *e = json_object_get(r->json, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));

    if (msg)
        return msg;
    snprintf(buf, sizeof buf, "HTTP status %ld", r->status);
    return buf;
}
