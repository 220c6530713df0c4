/* perr: one table from error to wire code and HTTP status; nothing else. */
#include "perr.h"

static const struct {
    const char *code;
    int http;
} perr_table[PERR__COUNT] = {
    [PERR_OK] = {"ok", 200},
    [PERR_BAD_REQUEST] = {"bad_request", 400},
    [PERR_INVALID_FIELD] = {"invalid_field", 400},
    [PERR_UNKNOWN_TYPE] = {"unknown_type", 400},
    [PERR_NOT_FOUND] = {"not_found", 404},
    [PERR_SESSION_NOT_FOUND] = {"session_not_found", 404},
    [PERR_NOT_IN_SESSION] = {"not_in_session", 409},
    [PERR_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405},
    [PERR_TOO_LARGE] = {"payload_too_large", 413},
    [PERR_UNSUPPORTED_MEDIA] = {"unsupported_media_type", 415},
    [PERR_UNAUTHORIZED] = {"unauthorized", 401},
    [PERR_FORBIDDEN] = {"forbidden", 403},
    [PERR_RATE_LIMITED] = {"rate_limited", 429},
    [PERR_LLM] = {"llm_error", 502},
    [PERR_INTERNAL] = {"internal", 500},
    [PERR_UNAVAILABLE] = {"unavailable", 503},
    [PERR_QUOTA_EXCEEDED] = {"quota_exceeded", 429},
};

const char *perr_code(enum perr e)
{
    if ((unsigned)e >= PERR__COUNT)
        return "internal";
    return perr_table[e].code;
}

int perr_http_status(enum perr e)
{
    if ((unsigned)e >= PERR__COUNT)
        return 500;
    return perr_table[e].http;
}
