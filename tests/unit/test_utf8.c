/* test_utf8: what counts as valid UTF-8 (RFC 3629), cutting on a character boundary,
 * repairing invalid text (from clients and LLM servers) and quoting a value back. */
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "utf8.h"

static const struct {
    const char *name;
    const char *s;
    size_t len;
    int valid;
} valid_cases[] = {
    {"empty", "", 0, 1},
    {"ASCII", "hello", 5, 1},
    {"2-byte é", "\xc3\xa9", 2, 1},
    {"3-byte €", "\xe2\x82\xac", 3, 1},
    {"4-byte emoji", "\xf0\x9f\x98\x80", 4, 1},
    {"U+10FFFF", "\xf4\x8f\xbf\xbf", 4, 1},
    {"above U+10FFFF", "\xf4\x90\x80\x80", 4, 0},
    {"overlong /", "\xc0\xaf", 2, 0},
    {"overlong 3-byte", "\xe0\x80\xaf", 3, 0},
    {"overlong 4-byte", "\xf0\x80\x80\xaf", 4, 0},
    {"surrogate D800", "\xed\xa0\x80", 3, 0},
    {"lone continuation", "\x80", 1, 0},
    {"truncated 3-byte", "\xe2\x82", 2, 0},
    {"truncated emoji at the end", "ab\xf0\x9f\x98", 5, 0},
    {"Latin-1 é", "caf\xe9", 4, 0},
    {"0xFF", "\xff", 1, 0},
    {"NUL inside", "a\0b", 3, 0},
};

static void valid_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(valid_cases); i++) {
        unit_begin();
        EQ_INT(utf8_valid(valid_cases[i].s, valid_cases[i].len), valid_cases[i].valid);
        unit_end("utf8_valid: %s is %s", valid_cases[i].name,
                 valid_cases[i].valid ? "valid" : "invalid");
    }
}

static const struct {
    const char *s;
    size_t max, want;
} cut_cases[] = {
    {"hello", 3, 3},
    {"hello", 10, 5},
    {"\xc3\xa9\xc3\xa9", 3, 2}, /* not inside the second é */
    {"\xc3\xa9\xc3\xa9", 4, 4},
    {"a\xf0\x9f\x98\x80", 4, 1}, /* the emoji does not fit */
    {"a\xf0\x9f\x98\x80", 5, 5},
    {"\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 7, 4}, /* 511-byte buffers: cut before */
    {"ab\xff"
     "cd",
     3, 3}, /* an invalid byte stands alone */
    {"", 0, 0},
};

static void cut_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(cut_cases); i++) {
        unit_begin();
        EQ_INT(utf8_cut(cut_cases[i].s, strlen(cut_cases[i].s), cut_cases[i].max),
               cut_cases[i].want);
        unit_end("utf8_cut(case %zu, max %zu) is %zu", i, cut_cases[i].max, cut_cases[i].want);
    }
}

static const struct {
    const char *name;
    const char *in;
    size_t len;
    const char *want;
} repair_cases[] = {
    {"valid text stays", "caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "caf\xc3\xa9 \xf0\x9f\x98\x80"},
    {"Latin-1 byte becomes U+FFFD", "mod\xe8le", 6, "mod\xef\xbf\xbdle"},
    {"a cut emoji at the end", "ok\xf0\x9f\x98", 5, "ok\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"NUL bytes are dropped", "a\0b\0", 4, "ab"},
    {"a surrogate is three bad bytes", "\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"empty", "", 0, ""},
};

static void repair_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(repair_cases); i++) {
        size_t n = 99;
        char *out;

        unit_begin();
        out = utf8_repair(repair_cases[i].in, repair_cases[i].len, &n);
        if (out) {
            EQ_STR(out, repair_cases[i].want);
            EQ_INT(n, strlen(repair_cases[i].want));
            CHECK(utf8_valid(out, n));
        } else {
            CHECK(out != NULL);
        }
        free(out);
        unit_end("utf8_repair: %s", repair_cases[i].name);
    }
}

static void repair_in_place(void)
{
    char s[] = "ab\xff\xc3\xa9\xe2\x82";

    utf8_repair_in_place(s);
    EQ_STR(s, "ab?\xc3\xa9??");
}

static void shown_cut(void)
{
    char buf[UTF8_SHOWN_LEN], in[4 * 128 + 1] = "";
    const char *want_end = "\xe2\x80\xa6";

    for (int i = 0; i < 128; i++)
        strcat(in, "\xf0\x9f\x98\x80");
    utf8_shown(buf, in);
    EQ_INT(utf8_chars(buf, strlen(buf)), UTF8_SHOWN_CHARS + 1); /* 64 and the ellipsis */
    CHECK(strcmp(buf + strlen(buf) - 3, want_end) == 0);
    CHECK(utf8_valid(buf, strlen(buf)));
    EQ_INT(strlen(buf), 4 * 64 + 3);
}

static void shown_whole(void)
{
    char buf[UTF8_SHOWN_LEN];

    EQ_STR(utf8_shown(buf, "short \xc3\xa9"), "short \xc3\xa9");
    EQ_STR(utf8_shown(buf, "bad \xff byte"), "bad ? byte");
    EQ_STR(utf8_shown(buf, ""), "");
}

static const struct unit_case cases[] = {
    {NULL, valid_table},
    {NULL, cut_table},
    {NULL, repair_table},
    {"utf8_repair_in_place: each invalid byte becomes '?', the text never grows", repair_in_place},
    {"utf8_shown: 128 emoji are quoted as 64 and an ellipsis, valid", shown_cut},
    {"utf8_shown: short values whole, invalid bytes as '?'", shown_whole},
};

int main(void)
{
    return unit_run(cases, UNIT_COUNT(cases));
}
