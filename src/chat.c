/* chat.c — ChatML-family chat templates rendered in C, and the streaming <think> splitter (sala_chat.h).
 *
 * Recognition works on the template's text, not by executing it: literal markers, the messages loop,
 * role/content, the generation prompt, an optional bos and an optional literal default system message.
 * Anything that does not look like ChatML is refused with SALA_ERR_UNSUPPORTED; nothing is guessed.
 *
 * The splitter is a small state machine over a held buffer: it holds text that could still be the
 * beginning of the tag it is waiting for ("<think>" in content, "</think>" in reasoning) and, in
 * reasoning, trailing whitespace (dropped if "</think>" follows). */
#include "sala_chat.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <string.h>

#include "util.h"

#define IM_START "<|im_start|>"
#define IM_END   "<|im_end|>"

struct sala_chat_template {
    char *bos;            /* "" when the template writes none */
    char *default_system; /* NULL when none */
    int opens_think;      /* the generation prompt ends with "<think>\n" */
    char describe[512];
};

/* ---- small growable string ---- */


/* ---- recognition ---- */

/* After a ChatML marker inside a Jinja string literal, a newline is written either as a real newline
 * (JSON "\n" decoded) or as the two characters backslash-n (a Jinja escape). Returns the length of the
 * newline at p (1 or 2) or 0. */
static int newline_at(const char *p) {
    if (p[0] == '\n')
        return 1;
    if (p[0] == '\\' && p[1] == 'n')
        return 2;
    return 0;
}

/* Is there "for <name> in messages" in t? */
static int has_messages_loop(const char *t) {
    for (const char *p = strstr(t, "for "); p; p = strstr(p + 1, "for ")) {
        const char *q = p + 4;
        while (*q == ' ')
            q++;
        if (!(isalpha((unsigned char)*q) || *q == '_'))
            continue;
        while (isalnum((unsigned char)*q) || *q == '_')
            q++;
        while (*q == ' ')
            q++;
        if (strncmp(q, "in ", 3) != 0)
            continue;
        q += 3;
        while (*q == ' ')
            q++;
        if (strncmp(q, "messages", 8) == 0)
            return 1;
    }
    return 0;
}

/* A literal default system message: "<|im_start|>system" newline TEXT "<|im_end|>" with TEXT free of
 * template syntax and quotes. Returns the unescaped TEXT (malloc'd) or NULL. */
static char *find_default_system(const char *t) {
    const char *key = IM_START "system";
    for (const char *p = strstr(t, key); p; p = strstr(p + 1, key)) {
        const char *q = p + strlen(key);
        int nl = newline_at(q);
        if (!nl)
            continue;
        q += nl;
        const char *e = strstr(q, IM_END);
        if (!e)
            continue;
        int plain = 1;
        for (const char *r = q; r < e; r++)
            if (*r == '\'' || *r == '"' || *r == '{' || *r == '}' || *r == '+')
                plain = 0;
        if (!plain)
            continue;
        sala_buf b = {0};
        for (const char *r = q; r < e; r++) {
            if (r[0] == '\\' && r + 1 < e) {
                char c = r[1];
                r++;
                if (c == 'n')
                    sala_buf_add(&b, "\n", 1);
                else if (c == 't')
                    sala_buf_add(&b, "\t", 1);
                else
                    sala_buf_add(&b, &c, 1);
            } else {
                sala_buf_add(&b, r, 1);
            }
        }
        if (!b.p)
            sala_buf_puts(&b, "");
        return b.p;
    }
    return NULL;
}

/* Which non-ChatML family a template looks like, for the error message. */
static const char *guess_family(const char *t) {
    if (strstr(t, "<|start_header_id|>"))
        return "Llama-3 style (<|start_header_id|>)";
    if (strstr(t, "[INST]"))
        return "Llama-2 / Mistral style ([INST])";
    if (strstr(t, "<start_of_turn>"))
        return "Gemma style (<start_of_turn>)";
    if (strstr(t, "<|user|>") || strstr(t, "<|assistant|>"))
        return "Zephyr / Phi style (<|user|>)";
    if (strstr(t, "<｜User｜>") || strstr(t, "<｜Assistant｜>"))
        return "DeepSeek style (<｜User｜>)";
    return NULL;
}

#define SUPPORTED_MSG                                                                                                  \
    "sala renders only ChatML-family templates (<|im_start|>{role}\\n{content}<|im_end|>\\n per message, "             \
    "<|im_start|>assistant\\n as the generation prompt, optional bos_token / <s> prefix)"

static sala_status recognise(const char *text, const char *bos_token, const char *origin, sala_chat_template **out) {
    *out = NULL;
    const char *missing = NULL;
    const char *fam = NULL;
    if (!strstr(text, IM_START) || !strstr(text, IM_END)) {
        missing = "the <|im_start|> / <|im_end|> markers";
        fam = guess_family(text);
    } else if (!has_messages_loop(text)) {
        missing = "a loop over the messages";
    } else if (!strstr(text, "role") || !strstr(text, "content")) {
        missing = "the messages' role and content";
    } else if (!strstr(text, "add_generation_prompt")) {
        missing = "the add_generation_prompt switch";
    } else {
        const char *key = IM_START "assistant";
        int found = 0;
        for (const char *p = strstr(text, key); p && !found; p = strstr(p + 1, key))
            found = newline_at(p + strlen(key)) != 0;
        if (!found)
            missing = "the generation prompt <|im_start|>assistant\\n";
    }
    if (missing) {
        if (fam)
            return sala_set_error(SALA_ERR_UNSUPPORTED, "chat template of %s is %s, not ChatML; " SUPPORTED_MSG, origin,
                                  fam);
        return sala_set_error(SALA_ERR_UNSUPPORTED,
                              "chat template of %s is not ChatML-like (no %s); " SUPPORTED_MSG
                              ". Use a plain prompt instead of the chat format, or a checkpoint with a ChatML template",
                              origin, missing);
    }
    sala_chat_template *t = xcalloc(1, sizeof *t);
    int writes_bos = strstr(text, "bos_token") != NULL || strstr(text, "<s>") != NULL;
    t->bos = xstrdup(writes_bos ? (bos_token ? bos_token : "<s>") : "");
    t->default_system = find_default_system(text);
    /* a generation prompt that already opens the reasoning block */
    const char *key = IM_START "assistant";
    for (const char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
        const char *q = p + strlen(key);
        int nl = newline_at(q);
        if (nl && strncmp(q + nl, "<think>", 7) == 0 && !strstr(text, "enable_thinking"))
            t->opens_think = 1;
    }
    snprintf(t->describe, sizeof t->describe, "ChatML (%s), bos \"%s\", %s%s", origin, t->bos,
             t->default_system ? "default system prompt \"" : "no default system prompt",
             t->default_system ? "\"" : "");
    if (t->default_system) {
        /* put the (possibly long) system text in, shortened */
        char sys[96];
        snprintf(sys, sizeof sys, "%.80s%s", t->default_system, strlen(t->default_system) > 80 ? "..." : "");
        for (char *c = sys; *c; c++)
            if (*c == '\n')
                *c = ' ';
        snprintf(t->describe, sizeof t->describe, "ChatML (%s), bos \"%s\", default system prompt \"%s\"", origin,
                 t->bos, sys);
    }
    if (t->opens_think)
        strncat(t->describe, ", generation prompt opens <think>", sizeof t->describe - strlen(t->describe) - 1);
    *out = t;
    return SALA_OK;
}

static const char *builtin_template =
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

sala_status sala_chat_template_parse(const char *template_text, const char *bos_token, sala_chat_template **out) {
    if (!out)
        return sala_set_error(SALA_ERR_ARG, "sala_chat_template_parse: out is NULL");
    if (!template_text)
        return recognise(builtin_template, bos_token, "built-in MiniCPM-SALA template", out);
    return recognise(template_text, bos_token, "the given template", out);
}

/* bos_token of tokenizer_config.json: a string or {"content": "..."}; NULL when absent. */
static const char *json_bos(const cJSON *root) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "bos_token");
    if (cJSON_IsString(b))
        return b->valuestring;
    if (cJSON_IsObject(b)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(b, "content");
        if (cJSON_IsString(c))
            return c->valuestring;
    }
    return NULL;
}

sala_status sala_chat_template_load(const char *dir, sala_chat_template **out) {
    if (!out || !dir)
        return sala_set_error(SALA_ERR_ARG, "sala_chat_template_load: NULL argument");
    *out = NULL;
    char *cfg_path = sala_path_join(dir, "tokenizer_config.json");
    char *jinja_path = sala_path_join(dir, "chat_template.jinja");
    char *cfg = NULL, *jinja = NULL;
    size_t len;
    cJSON *root = NULL;
    sala_status st = SALA_OK;
    char origin[1200];
    const char *text = NULL, *bos = NULL;

    if (sala_file_exists(cfg_path)) {
        st = sala_read_file(cfg_path, &cfg, &len);
        if (st != SALA_OK)
            goto done;
        root = cJSON_ParseWithLength(cfg, len);
        if (!root || !cJSON_IsObject(root)) {
            st = sala_set_error(SALA_ERR_FORMAT, "%s is not valid JSON (an object was expected)", cfg_path);
            goto done;
        }
        bos = json_bos(root);
    }
    if (sala_file_exists(jinja_path)) {
        st = sala_read_file(jinja_path, &jinja, &len);
        if (st != SALA_OK)
            goto done;
        text = jinja;
        snprintf(origin, sizeof origin, "%s", jinja_path);
    } else if (root) {
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
        if (cJSON_IsString(ct)) {
            text = ct->valuestring;
        } else if (cJSON_IsArray(ct)) {
            const cJSON *e, *first = NULL;
            cJSON_ArrayForEach(e, ct) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
                const cJSON *tp = cJSON_GetObjectItemCaseSensitive(e, "template");
                if (!cJSON_IsString(tp))
                    continue;
                if (!first)
                    first = tp;
                if (cJSON_IsString(nm) && strcmp(nm->valuestring, "default") == 0)
                    text = tp->valuestring;
            }
            if (!text && first)
                text = first->valuestring;
            if (!text) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: chat_template is a list without a {\"template\": ...} entry",
                                    cfg_path);
                goto done;
            }
        } else if (ct && !cJSON_IsNull(ct)) {
            st = sala_set_error(SALA_ERR_FORMAT, "%s: chat_template must be a string or a list of named templates",
                                cfg_path);
            goto done;
        }
        snprintf(origin, sizeof origin, "%s", cfg_path);
    }
    if (text) {
        st = recognise(text, bos, origin, out);
    } else {
        st = recognise(builtin_template, bos, "built-in MiniCPM-SALA template", out);
    }
done:
    cJSON_Delete(root);
    free(cfg);
    free(jinja);
    free(cfg_path);
    free(jinja_path);
    return st;
}

void sala_chat_template_free(sala_chat_template *t) {
    if (!t)
        return;
    free(t->bos);
    free(t->default_system);
    free(t);
}

const char *sala_chat_template_describe(const sala_chat_template *t) {
    return t->describe;
}
const char *sala_chat_template_bos(const sala_chat_template *t) {
    return t->bos;
}
const char *sala_chat_template_default_system(const sala_chat_template *t) {
    return t->default_system;
}
int sala_chat_template_opens_think(const sala_chat_template *t) {
    return t->opens_think;
}
const char *sala_chat_assistant_end(const sala_chat_template *t) {
    return IM_END "\n";
}

sala_status sala_chat_render(const sala_chat_template *t, const sala_chat_message *msgs, int n, int flags, char **out) {
    if (!out)
        return sala_set_error(SALA_ERR_ARG, "sala_chat_render: out is NULL");
    *out = NULL;
    if (!t || n < 0 || (n > 0 && !msgs))
        return sala_set_error(SALA_ERR_ARG, "sala_chat_render: bad arguments");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].role[0])
            return sala_set_error(SALA_ERR_ARG, "chat message %d has no role", i);
    sala_buf b = {0};
    sala_buf_puts(&b, "");
    if (!(flags & SALA_CHAT_CONTINUE)) {
        sala_buf_puts(&b, t->bos);
        if (t->default_system && n > 0 && strcmp(msgs[0].role, "system") != 0) {
            sala_buf_puts(&b, IM_START "system\n");
            sala_buf_puts(&b, t->default_system);
            sala_buf_puts(&b, IM_END "\n");
        }
    }
    for (int i = 0; i < n; i++) {
        sala_buf_puts(&b, IM_START);
        sala_buf_puts(&b, msgs[i].role);
        sala_buf_puts(&b, "\n");
        sala_buf_puts(&b, msgs[i].content ? msgs[i].content : "");
        sala_buf_puts(&b, IM_END "\n");
    }
    if (flags & SALA_CHAT_ADD_GENERATION_PROMPT) {
        sala_buf_puts(&b, IM_START "assistant\n");
        if (t->opens_think)
            sala_buf_puts(&b, "<think>\n");
    }
    *out = b.p;
    return SALA_OK;
}

/* ---- think splitter ---- */

struct sala_think {
    int in_reasoning;
    int skip_ws; /* drop whitespace until the first other character (right after a tag) */
    sala_buf held;
    sala_think_emit_fn emit;
    void *ud;
};

static const char TAG_OPEN[] = "<think>";
static const char TAG_CLOSE[] = "</think>";

static int is_ws(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

sala_think *sala_think_new(int starts_in_think, sala_think_emit_fn emit, void *ud) {
    sala_think *th = xcalloc(1, sizeof *th);
    th->emit = emit;
    th->ud = ud;
    sala_think_reset(th, starts_in_think);
    return th;
}

void sala_think_reset(sala_think *th, int starts_in_think) {
    th->in_reasoning = starts_in_think != 0;
    th->skip_ws = th->in_reasoning;
    th->held.n = 0;
    if (th->held.p)
        th->held.p[0] = 0;
}

void sala_think_free(sala_think *th) {
    if (!th)
        return;
    free(th->held.p);
    free(th);
}

int sala_think_in_reasoning(const sala_think *th) {
    return th->in_reasoning;
}

static void out_piece(sala_think *th, const char *s, size_t n) {
    if (th->skip_ws) {
        while (n && is_ws(*s)) {
            s++;
            n--;
        }
        if (n)
            th->skip_ws = 0;
    }
    if (n && th->emit)
        th->emit(th->ud, th->in_reasoning, s, n);
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of tag. */
static size_t partial_tag(const char *s, size_t n, const char *tag) {
    size_t tl = strlen(tag);
    size_t m = n < tl - 1 ? n : tl - 1;
    for (; m > 0; m--)
        if (memcmp(s + n - m, tag, m) == 0)
            return m;
    return 0;
}

static void process(sala_think *th) {
    for (;;) {
        char *s = th->held.p;
        size_t n = th->held.n;
        if (!n)
            return;
        const char *tag = th->in_reasoning ? TAG_CLOSE : TAG_OPEN;
        char *hit = memmem(s, n, tag, strlen(tag));
        if (hit) {
            size_t k = (size_t)(hit - s);
            if (th->in_reasoning)
                while (k && is_ws(s[k - 1]))
                    k--; /* whitespace before </think> */
            out_piece(th, s, k);
            size_t rest = (size_t)(hit - s) + strlen(tag);
            memmove(s, s + rest, n - rest);
            th->held.n = n - rest;
            s[th->held.n] = 0;
            th->in_reasoning = !th->in_reasoning;
            th->skip_ws = 1;
            continue;
        }
        size_t hold = partial_tag(s, n, tag);
        size_t k = n - hold;
        if (th->in_reasoning)
            while (k && is_ws(s[k - 1]))
                k--; /* trailing whitespace: decided by what follows */
        out_piece(th, s, k);
        memmove(s, s + k, n - k);
        th->held.n = n - k;
        s[th->held.n] = 0;
        return;
    }
}

void sala_think_push(sala_think *th, const char *text, size_t len) {
    if (!len)
        return;
    sala_buf_add(&th->held, text, len);
    process(th);
}

void sala_think_flush(sala_think *th) {
    size_t n = th->held.n;
    if (!n)
        return;
    if (th->in_reasoning)
        while (n && is_ws(th->held.p[n - 1]))
            n--;
    out_piece(th, th->held.p, n);
    th->held.n = 0;
    th->held.p[0] = 0;
}
