/* perr: the project's one error enum, and the table that maps each error to its wire code
 * (REST error.code, WebSocket error.code) and its HTTP status. 0 is success. */
#ifndef PARLEY_PERR_H
#define PARLEY_PERR_H

enum perr {
    PERR_OK = 0,
    PERR_BAD_REQUEST,       /* invalid JSON, not an object, binary frame */
    PERR_INVALID_FIELD,     /* missing or wrong-typed field */
    PERR_UNKNOWN_TYPE,      /* WebSocket message type we do not know */
    PERR_NOT_FOUND,         /* unknown route or file */
    PERR_SESSION_NOT_FOUND, /* no such session */
    PERR_NOT_IN_SESSION,    /* the action needs a joined session */
    PERR_METHOD_NOT_ALLOWED,
    PERR_TOO_LARGE,
    PERR_UNSUPPORTED_MEDIA,
    PERR_UNAUTHORIZED,
    PERR_FORBIDDEN,
    PERR_RATE_LIMITED,
    PERR_LLM,            /* the assistant's upstream failed */
    PERR_INTERNAL,       /* a bug or an unexpected library failure */
    PERR_UNAVAILABLE,    /* the database (or another dependency) cannot serve now */
    PERR_QUOTA_EXCEEDED, /* the API key's daily quota is used up (SPEC 9) */
    PERR__COUNT
};

/* Wire code, e.g. "session_not_found". Never NULL. */
const char *perr_code(enum perr e);
/* HTTP status for REST answers, e.g. 404. */
int perr_http_status(enum perr e);

#endif
