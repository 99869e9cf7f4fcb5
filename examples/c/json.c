/* A small recursive-descent JSON reader (see json.h). */
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p;
    char *err;
    size_t err_len;
    int depth;
} parser;

static int fail(parser *ps, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err, ps->err_len, fmt, ap);
    va_end(ap);
    return -1;
}

static void skip_ws(parser *ps) {
    while (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t') ps->p++;
}

static int parse_value(parser *ps, json_value *out);

static int parse_string(parser *ps, char **out) {
    const char *start = ++ps->p; /* after the opening quote */
    size_t cap = 16, len = 0;
    char *s = malloc(cap);
    if (!s) return fail(ps, "out of memory");
    while (*ps->p != '"') {
        char c = *ps->p;
        if (c == '\0') {
            free(s);
            return fail(ps, "unterminated string starting at \"%.20s\"", start);
        }
        if (c == '\\') {
            ps->p++;
            switch (*ps->p) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case '/': c = '/'; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            default:
                free(s);
                return fail(ps, "unsupported escape \\%c", *ps->p ? *ps->p : '0');
            }
        }
        if (len + 2 > cap) {
            char *bigger = realloc(s, cap *= 2);
            if (!bigger) {
                free(s);
                return fail(ps, "out of memory");
            }
            s = bigger;
        }
        s[len++] = c;
        ps->p++;
    }
    ps->p++; /* the closing quote */
    s[len] = '\0';
    *out = s;
    return 0;
}

static int parse_number(parser *ps, json_value *out) {
    const char *start = ps->p;
    if (*ps->p == '-') ps->p++;
    while (*ps->p && strchr("0123456789.eE+-", *ps->p)) ps->p++;
    size_t len = (size_t)(ps->p - start);
    if (len == 0) return fail(ps, "unexpected character '%c'", *start);
    out->type = JSON_NUMBER;
    out->text = malloc(len + 1);
    if (!out->text) return fail(ps, "out of memory");
    memcpy(out->text, start, len);
    out->text[len] = '\0';
    return 0;
}

/* Parses `[...]` or `{...}` into out->items (and out->keys for objects). */
static int parse_container(parser *ps, json_value *out, int object) {
    char close = object ? '}' : ']';
    size_t cap = 0;
    out->type = object ? JSON_OBJECT : JSON_ARRAY;
    ps->p++;
    skip_ws(ps);
    if (*ps->p == close) {
        ps->p++;
        return 0;
    }
    for (;;) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 8;
            json_value *items = realloc(out->items, cap * sizeof *items);
            if (!items) return fail(ps, "out of memory");
            out->items = items;
            if (object) {
                char **keys = realloc(out->keys, cap * sizeof *keys);
                if (!keys) return fail(ps, "out of memory");
                out->keys = keys;
            }
        }
        json_value *item = &out->items[out->n];
        memset(item, 0, sizeof *item);
        skip_ws(ps);
        if (object) {
            out->keys[out->n] = NULL;
            if (*ps->p != '"') return fail(ps, "expected a key at \"%.20s\"", ps->p);
            /* Count the element before anything can fail so json_free() sees the key. */
            out->n++;
            if (parse_string(ps, &out->keys[out->n - 1])) return -1;
            skip_ws(ps);
            if (*ps->p != ':') return fail(ps, "expected ':' at \"%.20s\"", ps->p);
            ps->p++;
        } else {
            out->n++;
        }
        if (parse_value(ps, item)) return -1;
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            return 0;
        }
        return fail(ps, "expected ',' or '%c' at \"%.20s\"", close, ps->p);
    }
}

static int parse_value(parser *ps, json_value *out) {
    if (++ps->depth > 64) return fail(ps, "nested too deeply");
    skip_ws(ps);
    int rc;
    switch (*ps->p) {
    case '{': rc = parse_container(ps, out, 1); break;
    case '[': rc = parse_container(ps, out, 0); break;
    case '"':
        out->type = JSON_STRING;
        rc = parse_string(ps, &out->text);
        break;
    case 't':
    case 'f':
    case 'n': {
        const char *word = *ps->p == 't' ? "true" : *ps->p == 'f' ? "false" : "null";
        if (strncmp(ps->p, word, strlen(word)) != 0) return fail(ps, "unexpected \"%.10s\"", ps->p);
        ps->p += strlen(word);
        out->type = *word == 'n' ? JSON_NULL : JSON_BOOL;
        out->boolean = *word == 't';
        rc = 0;
        break;
    }
    default: rc = parse_number(ps, out);
    }
    ps->depth--;
    return rc;
}

int json_parse(const char *text, json_value *out, char *err, size_t err_len) {
    parser ps = {text, err, err_len, 0};
    memset(out, 0, sizeof *out);
    if (parse_value(&ps, out)) {
        json_free(out);
        return -1;
    }
    skip_ws(&ps);
    if (*ps.p != '\0') {
        json_free(out);
        return fail(&ps, "trailing text \"%.20s\"", ps.p);
    }
    return 0;
}

void json_free(json_value *v) {
    for (size_t i = 0; i < v->n; i++) {
        json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->text);
    memset(v, 0, sizeof *v);
}

const json_value *json_get(const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (obj->keys[i] && strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

int json_u64(const json_value *v, uint64_t *out) {
    if (!v || v->type != JSON_NUMBER || v->text[0] == '-') return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v->text, &end, 10);
    if (errno || *end != '\0') return -1;
    *out = (uint64_t)x;
    return 0;
}

int json_f64(const json_value *v, double *out) {
    if (!v || v->type != JSON_NUMBER) return -1;
    char *end;
    errno = 0;
    double x = strtod(v->text, &end);
    if (errno || *end != '\0') return -1;
    *out = x;
    return 0;
}

char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
            } else {
                buf = bigger;
            }
        }
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}
