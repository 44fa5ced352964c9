/* request.c — see request.h. Validation is table-free and explicit: one helper per JSON type, each
 * naming the parameter in its message so a client sees exactly which field was wrong. */
#include "server/request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define IRE "invalid_request_error"

void srv_error_set(srv_error *e, int status, const char *type, const char *param, const char *code, const char *fmt,
                   ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *srv_error_json(const srv_error *e) {
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : IRE);
    if (e->param[0])
        cJSON_AddStringToObject(o, "param", e->param);
    else
        cJSON_AddNullToObject(o, "param");
    if (e->code)
        cJSON_AddStringToObject(o, "code", e->code);
    else
        cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    SALA_CHECK(s != NULL);
    return s;
}

size_t srv_utf8_seq(const unsigned char *p, size_t avail) {
    unsigned c = p[0];
    size_t n;
    unsigned cp, min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
        min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
        min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else
        return 0;
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

int srv_utf8_valid(const char *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;
    while (p < end) {
        size_t n = srv_utf8_seq(p, (size_t)(end - p));
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

/* 1 when the JSON text holds a NUL: a raw 0 byte, or a \u0000 escape inside a string. */
static int body_has_nul(const char *s, size_t len) {
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == 0)
            return 1;
        if (!in_str) {
            if (c == '"')
                in_str = 1;
            continue;
        }
        if (c == '"')
            in_str = 0;
        else if (c == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0)
                return 1;
            i++; /* skip the escaped character */
        }
    }
    return 0;
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "boolean";
    if (cJSON_IsNumber(v))
        return "number";
    if (cJSON_IsString(v))
        return "string";
    if (cJSON_IsArray(v))
        return "array";
    if (cJSON_IsObject(v))
        return "object";
    return "invalid";
}

static int bad_type(srv_error *e, const char *param, const char *want, const cJSON *v) {
    srv_error_set(e, 400, IRE, param, "invalid_type", "Invalid type for '%s': expected %s, but got %s.", param, want,
                  json_type_name(v));
    return -1;
}

static int missing_param(srv_error *e, const char *param) {
    srv_error_set(e, 400, IRE, param, "missing_required_parameter", "Missing required parameter: '%s'.", param);
    return -1;
}

/* Field lookup: NULL when absent or JSON null (both mean "not given"). */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static int get_bool(const cJSON *obj, const char *name, int *out, srv_error *e) {
    const cJSON *v = field(obj, name);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return bad_type(e, name, "a boolean", v);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

/* A number within [lo, hi] (lo_open: lo itself excluded). */
static int get_number(const cJSON *obj, const char *name, double lo, int lo_open, double hi, double *out,
                      srv_error *e) {
    const cJSON *v = field(obj, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v))
        return bad_type(e, name, "a number", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d > hi || d < lo || (lo_open && d == lo)) {
        srv_error_set(e, 400, IRE, name, "invalid_value", "Invalid value for '%s': %g is not in %s%g, %g].", name, d,
                      lo_open ? "(" : "[", lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

/* An integer-valued number within [lo, hi]; *given set to 1 when present. */
static int get_int(const cJSON *obj, const char *name, double lo, double hi, int64_t *out, int *given, srv_error *e) {
    const cJSON *v = field(obj, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v))
        return bad_type(e, name, "an integer", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return bad_type(e, name, "an integer", v);
    if (d < lo || d > hi || fabs(d) > 9.0e18) { /* beyond int64: the conversion itself would be undefined */
        srv_error_set(e, 400, IRE, name, "invalid_value", "Invalid value for '%s': %.0f is not in [%.0f, %.0f].", name,
                      d, fmax(lo, -9.0e18), fmin(hi, 9.0e18));
        return -1;
    }
    *out = (int64_t)d;
    if (given)
        *given = 1;
    return 0;
}

static char *dup_str(const char *s) {
    return xstrdup(s ? s : "");
}


/* content: string | [{"type":"text","text":...}, ...] | null (assistant/tool only) */
static int parse_content(const cJSON *v, int i, const char *role, char **out, srv_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (!v || cJSON_IsNull(v)) {
        if (strcmp(role, "assistant") != 0) {
            srv_error_set(e, 400, IRE, param, "missing_required_parameter",
                          "Missing required parameter: '%s' (a %s message needs content).", param, role);
            return -1;
        }
        *out = dup_str("");
        return 0;
    }
    if (cJSON_IsString(v)) {
        *out = dup_str(v->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(v))
        return bad_type(e, param, "a string or an array of content parts", v);
    sala_buf b = {0};
    sala_buf_add(&b, "", 0);
    int k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, v) {
        char pp[96];
        snprintf(pp, sizeof pp, "messages[%d].content[%d]", i, k);
        const cJSON *type = cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "type") : NULL;
        const cJSON *text = cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "text") : NULL;
        if (!cJSON_IsObject(part)) {
            free(b.p);
            return bad_type(e, pp, "an object", part);
        }
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0) {
            free(b.p);
            srv_error_set(e, 400, IRE, pp, "invalid_value",
                          "Invalid content part '%s': only {\"type\": \"text\", \"text\": ...} parts are supported.",
                          pp);
            return -1;
        }
        if (!cJSON_IsString(text)) {
            free(b.p);
            snprintf(pp + strlen(pp), sizeof pp - strlen(pp), ".text");
            return bad_type(e, pp, "a string", text);
        }
        if (k > 0)
            sala_buf_add(&b, "\n", 1);
        sala_buf_add(&b, text->valuestring, strlen(text->valuestring));
        k++;
    }
    *out = b.p;
    return 0;
}

static int parse_messages(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs || cJSON_IsNull(msgs))
        return missing_param(e, "messages");
    if (!cJSON_IsArray(msgs))
        return bad_type(e, "messages", "an array", msgs);
    int n = cJSON_GetArraySize(msgs);
    if (n == 0) {
        srv_error_set(e, 400, IRE, "messages", "empty_array",
                      "Invalid 'messages': empty array. Expected an array with minimum length 1.");
        return -1;
    }
    r->msgs = xcalloc((size_t)n, sizeof *r->msgs);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m))
            return bad_type(e, param, "an object", m);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!role || cJSON_IsNull(role))
            return missing_param(e, param);
        if (!cJSON_IsString(role))
            return bad_type(e, param, "a string", role);
        const char *rs = role->valuestring;
        if (strcmp(rs, "developer") == 0)
            rs = "system";
        if (strcmp(rs, "system") != 0 && strcmp(rs, "user") != 0 && strcmp(rs, "assistant") != 0 &&
            strcmp(rs, "tool") != 0) {
            srv_error_set(e, 400, IRE, param, "invalid_value",
                          "Invalid value for '%s': '%.64s'. Supported values are: 'system', 'developer', "
                          "'user', 'assistant' and 'tool'.",
                          param, role->valuestring);
            return -1;
        }
        char *content = NULL;
        if (parse_content(cJSON_GetObjectItemCaseSensitive(m, "content"), i, rs, &content, e))
            return -1;
        r->msgs[i].role = dup_str(rs);
        r->msgs[i].content = content;
        r->n_msgs = ++i;
    }
    return 0;
}

static int parse_prompt(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p))
        return missing_param(e, "prompt");
    if (cJSON_IsString(p)) {
        r->prompt = dup_str(p->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(p))
        return bad_type(e, "prompt", "a string, an array of strings or of token ids", p);
    int n = cJSON_GetArraySize(p);
    if (n == 0) {
        srv_error_set(e, 400, IRE, "prompt", "empty_array", "Invalid 'prompt': empty array.");
        return -1;
    }
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    const cJSON *ids = p;
    if (cJSON_IsString(first) || cJSON_IsArray(first)) {
        /* a batch of prompts: only a batch of one is served */
        if (n != 1) {
            srv_error_set(e, 400, IRE, "prompt", "invalid_value",
                          "Invalid 'prompt': %d prompts given; this server answers one prompt per request.", n);
            return -1;
        }
        if (cJSON_IsString(first)) {
            r->prompt = dup_str(first->valuestring);
            return 0;
        }
        ids = first;
        n = cJSON_GetArraySize(ids);
        if (n == 0) {
            srv_error_set(e, 400, IRE, "prompt", "empty_array", "Invalid 'prompt': empty array of token ids.");
            return -1;
        }
    }
    r->prompt_ids = xmalloc((size_t)n * sizeof *r->prompt_ids);
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, ids) {
        double d = cJSON_IsNumber(t) ? t->valuedouble : -1;
        if (!cJSON_IsNumber(t) || !isfinite(d) || d != floor(d) || d < 0 || d > INT32_MAX) {
            char param[48];
            snprintf(param, sizeof param, "prompt[%d]", k);
            srv_error_set(e, 400, IRE, param, "invalid_value",
                          "Invalid 'prompt': item %d is not a token id (a non-negative integer).", k);
            return -1;
        }
        r->prompt_ids[k++] = (int32_t)d;
    }
    r->n_prompt_ids = k;
    return 0;
}

static int parse_stop(const cJSON *root, srv_request *r, srv_error *e) {
    const cJSON *s = field(root, "stop");
    if (!s)
        return 0;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0])
            return 0; /* "" stops nothing: treated as no stop */
        if (strlen(s->valuestring) > SRV_MAX_STOP_LEN)
            goto too_long;
        r->stop[r->n_stop++] = dup_str(s->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(s))
        return bad_type(e, "stop", "a string or an array of strings", s);
    if (cJSON_GetArraySize(s) > SRV_MAX_STOP) {
        srv_error_set(e, 400, IRE, "stop", "invalid_value", "Invalid 'stop': at most %d stop sequences are allowed.",
                      SRV_MAX_STOP);
        return -1;
    }
    const cJSON *t;
    cJSON_ArrayForEach(t, s) {
        if (!cJSON_IsString(t))
            return bad_type(e, "stop", "an array of strings", s);
        if (!t->valuestring[0])
            continue;
        if (strlen(t->valuestring) > SRV_MAX_STOP_LEN)
            goto too_long;
        r->stop[r->n_stop++] = dup_str(t->valuestring);
    }
    return 0;
too_long:
    srv_error_set(e, 400, IRE, "stop", "invalid_value", "Invalid 'stop': a stop sequence is longer than %d bytes.",
                  SRV_MAX_STOP_LEN);
    return -1;
}

/* Parameters accepted only in their "off" form. */
static int reject_unsupported(const cJSON *root, srv_error *e) {
    const cJSON *v;
    if ((v = field(root, "logprobs")) && !(cJSON_IsFalse(v) || (cJSON_IsNumber(v) && v->valuedouble == 0))) {
        srv_error_set(e, 400, IRE, "logprobs", "unsupported_parameter", "'logprobs' is not supported by this server.");
        return -1;
    }
    if ((v = field(root, "top_logprobs")) && !(cJSON_IsNumber(v) && v->valuedouble == 0)) {
        srv_error_set(e, 400, IRE, "top_logprobs", "unsupported_parameter",
                      "'top_logprobs' is not supported by this server.");
        return -1;
    }
    if ((v = field(root, "tools")) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)) {
        srv_error_set(e, 400, IRE, "tools", "unsupported_parameter", "'tools' (function calling) is not supported.");
        return -1;
    }
    if ((v = field(root, "functions")) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)) {
        srv_error_set(e, 400, IRE, "functions", "unsupported_parameter", "'functions' is not supported.");
        return -1;
    }
    if ((v = field(root, "response_format"))) {
        const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0) {
            srv_error_set(e, 400, IRE, "response_format", "unsupported_parameter",
                          "Only response_format {\"type\": \"text\"} is supported.");
            return -1;
        }
    }
    if ((v = field(root, "suffix")) && !(cJSON_IsString(v) && !v->valuestring[0])) {
        srv_error_set(e, 400, IRE, "suffix", "unsupported_parameter", "'suffix' is not supported.");
        return -1;
    }
    return 0;
}

static int parse_root(const cJSON *root, srv_endpoint ep, srv_request *r, srv_error *e) {
    if (!cJSON_IsObject(root)) {
        srv_error_set(e, 400, IRE, NULL, "invalid_type", "The request body must be a JSON object, got %s.",
                      json_type_name(root));
        return -1;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v))
            return bad_type(e, "model", "a string", v);
        r->model = dup_str(v->valuestring);
    }
    if (ep == SRV_EP_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e))
        return -1;

    int64_t n = 1, mt = -1, mct = -1;
    int has_mt = 0, has_mct = 0;
    if (get_int(root, "n", -1e300, 1e300, &n, NULL, e))
        return -1;
    if (n != 1) {
        srv_error_set(e, 400, IRE, "n", "invalid_value", "Invalid value for 'n': %lld. Only n = 1 is supported.",
                      (long long)n);
        return -1;
    }
    if (get_int(root, "best_of", -1e300, 1e300, &n, NULL, e))
        return -1;
    if (n != 1) {
        srv_error_set(e, 400, IRE, "best_of", "invalid_value", "Invalid value for 'best_of': only 1 is supported.");
        return -1;
    }
    if (get_int(root, "max_tokens", 1, 9.007199254740992e15, &mt, &has_mt, e))
        return -1;
    if (get_int(root, "max_completion_tokens", 1, 9.007199254740992e15, &mct, &has_mct, e))
        return -1;
    if (has_mt && has_mct && mt != mct) {
        srv_error_set(e, 400, IRE, "max_tokens", "invalid_value",
                      "'max_tokens' (%lld) and 'max_completion_tokens' (%lld) disagree; give one of them.",
                      (long long)mt, (long long)mct);
        return -1;
    }
    /* absent: chat runs until an end token or the context is full; completions stop at 16 tokens, as
       OpenAI's legacy endpoint does */
    r->max_tokens = has_mct ? mct : has_mt ? mt : ep == SRV_EP_COMPLETION ? 16 : -1;

    r->temperature = 1.0;
    r->top_p = 1.0;
    if (get_number(root, "temperature", 0, 0, 2, &r->temperature, e))
        return -1;
    if (get_number(root, "top_p", 0, 1, 1, &r->top_p, e))
        return -1;
    if (get_number(root, "presence_penalty", -2, 0, 2, &r->presence_penalty, e))
        return -1;
    if (get_number(root, "frequency_penalty", -2, 0, 2, &r->frequency_penalty, e))
        return -1;
    if (get_number(root, "min_p", 0, 0, 1, &r->min_p, e))
        return -1;
    r->repeat_penalty = 1.0;
    if (get_number(root, "repeat_penalty", 0, 1, 10, &r->repeat_penalty, e))
        return -1;
    int64_t tk = 0;
    if (get_int(root, "top_k", 0, 1e9, &tk, NULL, e))
        return -1;
    r->top_k = (int)tk;

    v = field(root, "seed");
    if (v) {
        double d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;
        if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d))
            return bad_type(e, "seed", "an integer", v);
        if (d < -9.223372036854775808e18 || d >= 1.8446744073709551616e19) {
            srv_error_set(e, 400, IRE, "seed", "invalid_value", "Invalid value for 'seed': out of the 64-bit range.");
            return -1;
        }
        r->has_seed = 1;
        r->seed = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
    }
    if (parse_stop(root, r, e))
        return -1;
    if (get_bool(root, "stream", &r->stream, e))
        return -1;
    v = field(root, "stream_options");
    if (v) {
        if (!cJSON_IsObject(v))
            return bad_type(e, "stream_options", "an object", v);
        const cJSON *iu = field(v, "include_usage");
        if (iu && !cJSON_IsBool(iu))
            return bad_type(e, "stream_options.include_usage", "a boolean", iu);
        r->include_usage = cJSON_IsTrue(iu) ? 1 : 0;
    }
    if (ep == SRV_EP_COMPLETION && get_bool(root, "echo", &r->echo, e))
        return -1;
    return reject_unsupported(root, e);
}

int srv_request_parse(const char *body, size_t len, srv_endpoint ep, srv_request *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->endpoint = ep;
    r->max_tokens = -1;
    if (len == 0) {
        srv_error_set(e, 400, IRE, NULL, NULL, "The request body is empty; expected a JSON object.");
        return -1;
    }
    if (!srv_utf8_valid(body, len)) {
        srv_error_set(e, 400, IRE, NULL, "invalid_encoding", "The request body is not valid UTF-8.");
        return -1;
    }
    if (body_has_nul(body, len)) {
        srv_error_set(e, 400, IRE, NULL, "invalid_value", "The request body contains a NUL character.");
        return -1;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (root && end) {
        /* only whitespace may follow the value */
        for (const char *p = end; p < body + len; p++)
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                cJSON_Delete(root);
                root = NULL;
                end = p;
                break;
            }
    }
    if (!root) {
        size_t off = (end && end >= body && end <= body + len) ? (size_t)(end - body) : 0;
        srv_error_set(e, 400, IRE, NULL, "invalid_json",
                      "We could not parse the JSON body of your request (near byte %zu). Expected a JSON object "
                      "as described in the OpenAI API reference.",
                      off);
        return -1;
    }
    int rc = parse_root(root, ep, r, e);
    cJSON_Delete(root);
    if (rc)
        srv_request_free(r);
    return rc;
}

void srv_request_free(srv_request *r) {
    if (!r)
        return;
    free(r->model);
    for (int i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
    }
    free(r->msgs);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    srv_endpoint ep = r->endpoint;
    memset(r, 0, sizeof *r);
    r->endpoint = ep;
}
