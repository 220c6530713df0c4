/* test_policy: the reply policy of SPEC 9 (common/reply_policy.c): which modes exist, what
 * counts as a mention of the assistant (a word boundary on both sides, case-insensitive,
 * UTF-8 around it), and which chats get a reply in each mode. */
#include "reply_policy.h"
#include "unit.h"

static const struct {
    const char *text, *name;
    int want;
} mention_cases[] = {
    /* the contract's own examples */
    {"@Assistant, hello", "assistant", 1},
    {"hi @assistant", "assistant", 1},
    {"email@assistant.com", "assistant", 0},
    {"@assistants", "assistant", 0},
    /* case and place */
    {"@ASSISTANT", "assistant", 1},
    {"@assistant", "Assistant", 1},
    {"hey @assistant!", "assistant", 1},
    {"(@assistant)", "assistant", 1},
    {"@assistant.", "assistant", 1},
    {"@assistant_x", "assistant", 0},
    {"@assistant1", "assistant", 0},
    {"x_@assistant", "assistant", 0},
    {"9@assistant", "assistant", 0},
    {"@@assistant", "assistant", 1}, /* the second @ follows a non-word character */
    {"@assist", "assistant", 0},
    {"assistant", "assistant", 0},
    {"@ assistant", "assistant", 0},
    {"", "assistant", 0},
    {"@", "assistant", 0},
    {"a@b @assistant", "assistant", 1}, /* a later @ counts */
    {"email@assistant.com and @assistant", "assistant", 1},
    {"line\n@assistant\tnext", "assistant", 1},
    /* model names, with their own punctuation */
    {"@echo say this", "echo", 1},
    {"@Echo", "echo", 1},
    {"@echoes", "echo", 0},
    {"ask @gpt-4o-mini now", "gpt-4o-mini", 1},
    {"ask @gpt-4o-mini2", "gpt-4o-mini", 0},
    {"@llama3.2:1b?", "llama3.2:1b", 1},
    {"@x", "", 0},
    {"@x", NULL, 0},
    /* UTF-8 around it: letters beyond ASCII are word characters, punctuation is not */
    {"caf\xc3\xa9 @assistant", "assistant", 1},
    {"\xc3\xa9@assistant", "assistant", 0},                 /* é@ */
    {"@assistant\xc3\xa9", "assistant", 0},                 /* @assistanté */
    {"\xe6\x97\xa5\xe6\x9c\xac@assistant", "assistant", 0}, /* 日本@ */
    {"\xc2\xab@assistant\xc2\xbb", "assistant", 1},         /* «@assistant» */
    {"@assistant\xe2\x80\xa6", "assistant", 1},             /* @assistant… */
    {"\xe3\x80\x8c@assistant\xe3\x80\x82", "assistant", 1}, /* 「@assistant。 */
    {"\xf0\x9f\x98\x80@assistant", "assistant", 1},         /* 😀@assistant */
    {"@assistant\xf0\x9f\x91\x8b", "assistant", 1},         /* @assistant👋 */
    {"\xc2\xa0@assistant\xc2\xa0", "assistant", 1},         /* no-break spaces */
    {"@assistant\xce\xb1", "assistant", 0},                 /* @assistantα */
};

static void mention_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(mention_cases); i++) {
        unit_begin();
        EQ_INT(policy_mentions(mention_cases[i].text, mention_cases[i].name),
               mention_cases[i].want);
        unit_end("policy_mentions: \"%s\" %s @%s", mention_cases[i].text,
                 mention_cases[i].want ? "mentions" : "does not mention",
                 mention_cases[i].name ? mention_cases[i].name : "(null)");
    }
}

static const struct {
    const char *mode, *text, *model;
    int want;
} reply_cases[] = {
    {"always", "hello", "echo", 1},
    {"always", "email@assistant.com", "echo", 1},
    {"off", "@assistant hello", "echo", 0},
    {"off", "hello", "echo", 0},
    {"mention", "hello", "echo", 0},
    {"mention", "@Assistant, hello", "echo", 1},
    {"mention", "hi @ECHO", "echo", 1},
    {"mention", "hi @echo", "gpt-4o", 0},
    {"mention", "hi @gpt-4o", "gpt-4o", 1},
    {"mention", "@assistants", "echo", 0},
    {"mention", "hi @assistant", NULL, 1},
    {NULL, "hello", "echo", 1}, /* unknown counts as the default */
};

static void reply_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(reply_cases); i++) {
        unit_begin();
        EQ_INT(policy_wants_reply(reply_cases[i].mode, reply_cases[i].text, reply_cases[i].model),
               reply_cases[i].want);
        unit_end("policy_wants_reply: %s, \"%s\" (model %s): %s",
                 reply_cases[i].mode ? reply_cases[i].mode : "(null)", reply_cases[i].text,
                 reply_cases[i].model ? reply_cases[i].model : "(null)",
                 reply_cases[i].want ? "answered" : "not answered");
    }
}

static void modes(void)
{
    CHECK(policy_mode_valid("always"));
    CHECK(policy_mode_valid("mention"));
    CHECK(policy_mode_valid("off"));
    CHECK(!policy_mode_valid("Always"));
    CHECK(!policy_mode_valid("never"));
    CHECK(!policy_mode_valid(""));
    CHECK(!policy_mode_valid(NULL));
    CHECK(policy_mode_valid(POLICY_DEFAULT));
    CHECK(sizeof "mention" == POLICY_MODE_LEN);
}

static const struct unit_case cases[] = {
    {"policy_mode_valid: always, mention, off and nothing else", modes},
    {NULL, mention_table},
    {NULL, reply_table},
};

int main(void)
{
    return unit_run(cases, UNIT_COUNT(cases));
}
