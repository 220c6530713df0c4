/* db_quota: the store's quotas per API key (SPEC 9), over any backend. A user message sent
 * with a key is counted for it, or refused over quota, in the transaction that stores it:
 * the backend's quota_take (one statement that counts only under the quota, so two
 * processes at the limit cannot both pass), then its message_add, then either the key is
 * recorded on the message or, for a client_msg_id stored before, the count is taken back.
 * A reply's tokens are counted for the key of the message it answers in the reply's own
 * transaction. Inside the caller's transaction when there is one (the broker's group
 * commit), else one of their own (REST). Not here: the day and the limits (quota.c). */
#include <stdbool.h>

#include "db_backend.h"

/* Opens a transaction unless one is open; *own says whether it did. */
static enum perr begin(struct db *db, bool *own)
{
    enum perr e;

    *own = false;
    if (db_tx_open(db))
        return PERR_OK;
    if ((e = db_tx_begin(db)))
        return e;
    *own = true;
    return PERR_OK;
}

enum perr db_quota_message_add(struct db *db, const struct db_message_in *in,
                               struct db_message *out, bool *duplicate, int64_t *message_count)
{
    struct db_quota *q = in->quota;
    bool own, ok = false, dup = false, charged = false;
    enum perr e;

    if ((e = begin(db, &own)))
        return e;
    if ((e = db->be->quota_take(db, q, &ok)))
        goto fail;
    if (!ok) {
        e = PERR_QUOTA_EXCEEDED; /* nothing was written */
        goto fail;
    }
    charged = true;
    if ((e = db->be->message_add(db, in, out, &dup, message_count)))
        goto fail;
    e = dup ? db->be->quota_give_back(db, q) : db->be->message_set_key(db, out->id, q->key);
    if (e) {
        db_message_cleanup(out);
        goto fail;
    }
    if (own && (e = db_tx_commit(db))) {
        db_message_cleanup(out);
        return e;
    }
    if (duplicate)
        *duplicate = dup;
    return PERR_OK;
fail:
    if (own)
        db_tx_rollback(db);
    else if (charged && db_tx_open(db))
        db->be->quota_give_back(db, q); /* e.g. the session is gone: the batch goes on */
    return e;
}

enum perr db_quota_reply_add(struct db *db, const struct db_reply_in *in, struct db_message *out,
                             int64_t *message_count)
{
    int64_t tokens = (in->prompt_tokens > 0 ? in->prompt_tokens : 0) +
                     (in->completion_tokens > 0 ? in->completion_tokens : 0);
    bool own;
    enum perr e;

    if ((e = begin(db, &own)))
        return e;
    if ((e = db->be->reply_add(db, in, out, message_count)))
        goto fail;
    if ((e = db->be->quota_tokens(db, in->reply_to, in->quota_day, tokens))) {
        db_message_cleanup(out);
        goto fail;
    }
    if (own && (e = db_tx_commit(db))) {
        db_message_cleanup(out);
        return e;
    }
    return PERR_OK;
fail:
    if (own)
        db_tx_rollback(db);
    return e;
}
