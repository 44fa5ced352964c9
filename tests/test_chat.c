/* test_chat.c — chat template recognition and rendering (ChatML family), tokenization of a rendered
 * prompt against the tokenizer README's ids, refusal of other template families, and the streaming
 * <think> splitter with tags split at every position. */
#include "sala_chat.h"

#include <sys/stat.h>
#include <unistd.h>

#include "sala_tokenizer.h"
#include "test.h"

/* CHECK without a message trips -Wformat-zero-length in test.h */
#define CHK(cond) CHECK(cond, " ")

static const char *EXAMPLE_CHATML = "<|im_start|>user\nHello, world! Test prompt.<|im_end|>\n<|im_start|>assistant\n";
static const int32_t EXAMPLE_IDS[17] = {1,     73441, 3060,  5,     15934, 59342, 2809,  73, 5110,
                                        12487, 72,    73440, 59320, 5,     73441, 16434, 5};

static char tmpdir_[256];

/* a fresh temporary folder with the given files (name, content pairs, NULL-terminated) */
static const char *mkdir_with(const char *name1, const char *text1, const char *name2, const char *text2) {
    static int k;
    snprintf(tmpdir_, sizeof tmpdir_, "/tmp/sala_test_chat_%d_%d", (int)getpid(), k++);
    mkdir(tmpdir_, 0700);
    const char *names[2] = {name1, name2}, *texts[2] = {text1, text2};
    for (int i = 0; i < 2; i++) {
        if (!names[i])
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", tmpdir_, names[i]);
        FILE *f = fopen(p, "wb");
        CHK(f != NULL);
        if (f) {
            fputs(texts[i], f);
            fclose(f);
        }
    }
    return tmpdir_;
}

static void rm_dir(const char *d) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    CHK(system(cmd) == 0);
}

static char *render1(const sala_chat_template *t, const char *role, const char *content, int flags) {
    sala_chat_message m = {role, content};
    char *s = NULL;
    sala_status st = sala_chat_render(t, &m, 1, flags, &s);
    CHECK(st == SALA_OK, "%s", sala_last_error());
    return s;
}

static void test_builtin(void) {
    sala_chat_template *t = NULL;
    CHK(sala_chat_template_parse(NULL, NULL, &t) == SALA_OK);
    CHK(strcmp(sala_chat_template_bos(t), "<s>") == 0);
    CHK(sala_chat_template_default_system(t) == NULL);
    CHK(!sala_chat_template_opens_think(t));
    char *s = render1(t, "user", "Hello, world! Test prompt.", SALA_CHAT_ADD_GENERATION_PROMPT);
    char want[256];
    snprintf(want, sizeof want, "<s>%s", EXAMPLE_CHATML);
    CHECK(s && strcmp(s, want) == 0, "got [%s]", s ? s : "(null)");
    free(s);
    /* multi-turn, no generation prompt */
    sala_chat_message m[3] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}};
    CHK(sala_chat_render(t, m, 3, 0, &s) == SALA_OK);
    CHK(strcmp(s, "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\nHello!<|im_end|>\n") == 0);
    free(s);
    /* render(all) == render(first k) + render(rest, CONTINUE) */
    for (int k = 0; k <= 3; k++) {
        char *a = NULL, *b = NULL, *c = NULL;
        CHK(sala_chat_render(t, m, 3, SALA_CHAT_ADD_GENERATION_PROMPT, &a) == SALA_OK);
        CHK(sala_chat_render(t, m, k, 0, &b) == SALA_OK);
        CHK(sala_chat_render(t, m + k, 3 - k, SALA_CHAT_CONTINUE | SALA_CHAT_ADD_GENERATION_PROMPT, &c) == SALA_OK);
        size_t lb = strlen(b);
        CHECK(strncmp(a, b, lb) == 0 && strcmp(a + lb, c) == 0, "split at %d", k);
        free(a);
        free(b);
        free(c);
    }
    /* empty conversation, NULL content, missing role */
    CHK(sala_chat_render(t, NULL, 0, SALA_CHAT_ADD_GENERATION_PROMPT, &s) == SALA_OK);
    CHK(strcmp(s, "<s><|im_start|>assistant\n") == 0);
    free(s);
    s = render1(t, "tool", NULL, SALA_CHAT_CONTINUE);
    CHK(strcmp(s, "<|im_start|>tool\n<|im_end|>\n") == 0);
    free(s);
    sala_chat_message bad = {NULL, "x"};
    CHK(sala_chat_render(t, &bad, 1, 0, &s) == SALA_ERR_ARG && s == NULL);
    CHK(strcmp(sala_chat_assistant_end(t), "<|im_end|>\n") == 0);
    CHK(strstr(sala_chat_template_describe(t), "ChatML") != NULL);
    sala_chat_template_free(t);
}

static void test_load_checkpoint_config(void) {
    /* tests/data/tokenizer/minicpm: MiniCPM4's plain ChatML, without bos in the template */
    sala_chat_template *t = NULL;
    sala_status st = sala_chat_template_load(test_path("tokenizer/minicpm"), &t);
    CHECK(st == SALA_OK, "%s", sala_last_error());
    if (!t)
        return;
    CHK(strcmp(sala_chat_template_bos(t), "") == 0);
    char *s = render1(t, "user", "Hello, world! Test prompt.", SALA_CHAT_ADD_GENERATION_PROMPT);
    CHECK(strcmp(s, EXAMPLE_CHATML) == 0, "got [%s]", s);
    free(s);
    CHK(strstr(sala_chat_template_describe(t), "tokenizer_config.json") != NULL);
    sala_chat_template_free(t);

    /* a folder without tokenizer_config.json: the built-in template */
    const char *d = mkdir_with(NULL, NULL, NULL, NULL);
    CHK(sala_chat_template_load(d, &t) == SALA_OK);
    s = render1(t, "user", "x", 0);
    CHK(strcmp(s, "<s><|im_start|>user\nx<|im_end|>\n") == 0);
    free(s);
    sala_chat_template_free(t);
    rm_dir(d);

    /* a config without chat_template, but with an object bos_token */
    d = mkdir_with("tokenizer_config.json", "{\"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}}", NULL, NULL);
    CHK(sala_chat_template_load(d, &t) == SALA_OK);
    CHK(strcmp(sala_chat_template_bos(t), "<B>") == 0);
    sala_chat_template_free(t);
    rm_dir(d);
}

static void test_tokenized_example(void) {
    sala_tokenizer *tok = NULL;
    sala_status st = sala_tokenizer_load(test_path("tokenizer/minicpm"), &tok);
    CHECK(st == SALA_OK, "%s", sala_last_error());
    if (!tok)
        return;
    sala_chat_template *t = NULL;
    CHK(sala_chat_template_parse(NULL, NULL, &t) == SALA_OK);
    char *s = render1(t, "user", "Hello, world! Test prompt.", SALA_CHAT_ADD_GENERATION_PROMPT);
    int32_t *ids = NULL;
    int64_t n = 0;
    st = sala_tokenizer_encode(tok, s, strlen(s), 0, &ids, &n);
    CHECK(st == SALA_OK, "%s", sala_last_error());
    CHECK(n == 17, "got %lld ids", (long long)n);
    int same = n == 17;
    for (int64_t i = 0; i < n && i < 17; i++)
        same &= ids[i] == EXAMPLE_IDS[i];
    CHK(same);
    free(ids);
    free(s);
    /* the MiniCPM4 template (no bos in it) gives the 16 ids without BOS, as apply_chat_template does */
    sala_chat_template *t2 = NULL;
    CHK(sala_chat_template_load(test_path("tokenizer/minicpm"), &t2) == SALA_OK);
    if (t2) {
        s = render1(t2, "user", "Hello, world! Test prompt.", SALA_CHAT_ADD_GENERATION_PROMPT);
        CHK(sala_tokenizer_encode(tok, s, strlen(s), 0, &ids, &n) == SALA_OK);
        CHECK(n == 16 && memcmp(ids, EXAMPLE_IDS + 1, 16 * sizeof *ids) == 0, "n %lld", (long long)n);
        free(ids);
        free(s);
        sala_chat_template_free(t2);
    }
    /* feeding a continuation (what `sala chat` does after an answer): assistant end + next turn. Its ids
     * start with <|im_end|> and equal the tail of the whole conversation rendered in one go (special
     * tokens cut the text into independently normalized segments) */
    sala_chat_message m[3] = {{"user", "Hi"}, {"assistant", "Hello there"}, {"user", "Again"}};
    char *all = NULL, *first = NULL, *next = NULL;
    CHK(sala_chat_render(t, m, 3, SALA_CHAT_ADD_GENERATION_PROMPT, &all) == SALA_OK);
    CHK(sala_chat_render(t, m, 1, SALA_CHAT_ADD_GENERATION_PROMPT, &first) == SALA_OK);
    CHK(sala_chat_render(t, m + 2, 1, SALA_CHAT_CONTINUE | SALA_CHAT_ADD_GENERATION_PROMPT, &next) == SALA_OK);
    int32_t *a = NULL, *b1 = NULL, *b2 = NULL, *b3 = NULL;
    int64_t na, n1, n3;
    char cont[512];
    snprintf(cont, sizeof cont, "%s%s", sala_chat_assistant_end(t), next);
    CHK(sala_tokenizer_encode(tok, all, strlen(all), 0, &a, &na) == SALA_OK);
    CHK(sala_tokenizer_encode(tok, first, strlen(first), 0, &b1, &n1) == SALA_OK);
    CHK(sala_tokenizer_encode(tok, cont, strlen(cont), 0, &b3, &n3) == SALA_OK);
    CHK(n3 > 0 && b3[0] == 73440);
    int64_t k1 = n1 - 1; /* up to the last <|im_start|>: "assistant\n" merges with what follows */
    while (k1 > 0 && b1[k1] != 73441)
        k1--;
    CHK(n1 > 0 && b1[0] == 1 && k1 > 0 && na > n1 + n3 && memcmp(a, b1, (size_t)(k1 + 1) * 4) == 0);
    CHK(na > n3 && memcmp(a + na - n3, b3, (size_t)n3 * 4) == 0);
    free(a);
    free(b1);
    free(b2);
    free(b3);
    free(all);
    free(first);
    free(next);
    sala_chat_template_free(t);
    sala_tokenizer_free(tok);
}

static void test_variants(void) {
    sala_chat_template *t = NULL;
    /* Qwen2-style: default system prompt, '\n' written as a Jinja escape */
    const char *qwen =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    CHECK(sala_chat_template_parse(qwen, NULL, &t) == SALA_OK, "%s", sala_last_error());
    if (t) {
        CHK(strcmp(sala_chat_template_bos(t), "") == 0);
        CHK(t && sala_chat_template_default_system(t) &&
            strcmp(sala_chat_template_default_system(t), "You are a helpful assistant.") == 0);
        char *s = render1(t, "user", "Hi", SALA_CHAT_ADD_GENERATION_PROMPT);
        CHK(strcmp(s, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\n") == 0);
        free(s);
        s = render1(t, "system", "Own.", 0);
        CHK(strcmp(s, "<|im_start|>system\nOwn.<|im_end|>\n") == 0);
        free(s);
        s = render1(t, "user", "Hi", SALA_CHAT_CONTINUE);
        CHK(strcmp(s, "<|im_start|>user\nHi<|im_end|>\n") == 0);
        free(s);
        CHK(strstr(sala_chat_template_describe(t), "You are a helpful") != NULL);
        sala_chat_template_free(t);
    }
    /* message.role attribute syntax, bos_token variable, given bos */
    const char *attr = "{{ bos_token }}{%- for m in messages %}{{ '<|im_start|>' + m.role + '\n' }}{{ m.content }}"
                       "{{ '<|im_end|>\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                       "{%- endif %}";
    CHECK(sala_chat_template_parse(attr, "<BOS>", &t) == SALA_OK, "%s", sala_last_error());
    if (t) {
        char *s = render1(t, "user", "x", SALA_CHAT_ADD_GENERATION_PROMPT);
        CHK(strcmp(s, "<BOS><|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n") == 0);
        free(s);
        sala_chat_template_free(t);
    }
    /* a generation prompt that opens <think> */
    const char *think =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}"
        "{% endif %}";
    CHK(sala_chat_template_parse(think, NULL, &t) == SALA_OK);
    if (t) {
        CHK(sala_chat_template_opens_think(t));
        char *s = render1(t, "user", "x", SALA_CHAT_ADD_GENERATION_PROMPT);
        CHK(strcmp(s, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<think>\n") == 0);
        free(s);
        sala_chat_template_free(t);
    }
    /* tokenizer_config.json with a list of named templates, and chat_template.jinja taking precedence */
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"bos_token\": \"<s>\", \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"{{ x }}\"},"
             " {\"name\": \"default\", \"template\": \"{{ bos_token }}{%% for message in messages %%}"
             "{{'<|im_start|>' + message['role'] + '\\\\n' + message['content'] + '<|im_end|>\\\\n'}}{%% endfor %%}"
             "{%% if add_generation_prompt %%}{{'<|im_start|>assistant\\\\n'}}{%% endif %%}\"}]}");
    const char *d = mkdir_with("tokenizer_config.json", cfg, NULL, NULL);
    CHECK(sala_chat_template_load(d, &t) == SALA_OK, "%s", sala_last_error());
    if (t) {
        char *s = render1(t, "user", "x", SALA_CHAT_ADD_GENERATION_PROMPT);
        CHK(strcmp(s, "<s><|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n") == 0);
        free(s);
        sala_chat_template_free(t);
    }
    rm_dir(d);
    d = mkdir_with("tokenizer_config.json", "{\"chat_template\": \"{{ messages }}\"}", "chat_template.jinja", attr);
    CHECK(sala_chat_template_load(d, &t) == SALA_OK, "%s", sala_last_error());
    if (t) {
        CHK(strstr(sala_chat_template_describe(t), "chat_template.jinja") != NULL);
        sala_chat_template_free(t);
    }
    rm_dir(d);
}

static void test_unsupported(void) {
    sala_chat_template *t = (sala_chat_template *)1;
    const char *llama3 =
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
        "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor "
        "%}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    CHK(sala_chat_template_parse(llama3, NULL, &t) == SALA_ERR_UNSUPPORTED && t == NULL);
    CHECK(strstr(sala_last_error(), "ChatML") && strstr(sala_last_error(), "Llama-3"), "%s", sala_last_error());
    const char *mistral =
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}"
        "{% endif %}{% endfor %}";
    CHK(sala_chat_template_parse(mistral, NULL, &t) == SALA_ERR_UNSUPPORTED);
    CHECK(strstr(sala_last_error(), "[INST]") != NULL, "%s", sala_last_error());
    /* markers but no loop / no generation prompt */
    CHK(sala_chat_template_parse("<|im_start|>user\n{{ prompt }}<|im_end|>", NULL, &t) == SALA_ERR_UNSUPPORTED);
    CHECK(strstr(sala_last_error(), "loop") != NULL, "%s", sala_last_error());
    CHK(sala_chat_template_parse("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                                 "message['content'] + '<|im_end|>\n'}}{% endfor %}",
                                 NULL, &t) == SALA_ERR_UNSUPPORTED);
    CHECK(strstr(sala_last_error(), "add_generation_prompt") != NULL, "%s", sala_last_error());
    /* through a folder: the error names the file */
    const char *d = mkdir_with("tokenizer_config.json",
                               "{\"chat_template\": \"{% for m in messages %}[INST]{% endfor %}\"}", NULL, NULL);
    CHK(sala_chat_template_load(d, &t) == SALA_ERR_UNSUPPORTED);
    CHECK(strstr(sala_last_error(), "tokenizer_config.json") != NULL, "%s", sala_last_error());
    rm_dir(d);
    d = mkdir_with("tokenizer_config.json", "{\"chat_template\": ", NULL, NULL);
    CHK(sala_chat_template_load(d, &t) == SALA_ERR_FORMAT);
    rm_dir(d);
    d = mkdir_with("tokenizer_config.json", "{\"chat_template\": 5}", NULL, NULL);
    CHK(sala_chat_template_load(d, &t) == SALA_ERR_FORMAT);
    rm_dir(d);
}

/* ---- think splitter ---- */

typedef struct {
    char reasoning[4096], content[4096];
    int pieces;
} collect;

static void on_piece(void *ud, int is_reasoning, const char *text, size_t len) {
    collect *c = ud;
    CHK(len > 0);
    char *dst = is_reasoning ? c->reasoning : c->content;
    size_t n = strlen(dst);
    if (n + len < 4096) {
        memcpy(dst + n, text, len);
        dst[n + len] = 0;
    }
    c->pieces++;
}

/* runs text through a splitter in pieces cut at the given points (sorted, within the text) */
static void split_run(const char *text, int starts, const size_t *cuts, int ncuts, collect *c) {
    memset(c, 0, sizeof *c);
    sala_think *th = sala_think_new(starts, on_piece, c);
    size_t prev = 0, n = strlen(text);
    for (int i = 0; i <= ncuts; i++) {
        size_t at = i < ncuts ? cuts[i] : n;
        sala_think_push(th, text + prev, at - prev);
        prev = at;
    }
    sala_think_flush(th);
    sala_think_free(th);
}

static void check_all_splits(const char *text, int starts, const char *want_r, const char *want_c) {
    size_t n = strlen(text);
    collect c;
    int bad = 0;
    /* one cut anywhere, two cuts anywhere */
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            size_t cuts[2] = {i, j};
            split_run(text, starts, cuts, 2, &c);
            if (strcmp(c.reasoning, want_r) || strcmp(c.content, want_c)) {
                if (!bad++)
                    fprintf(stderr, "  split %zu,%zu of [%s]: reasoning [%s] content [%s]\n", i, j, text, c.reasoning,
                            c.content);
            }
        }
    }
    /* byte by byte */
    size_t cuts[512];
    int nc = 0;
    for (size_t i = 1; i < n && nc < 512; i++)
        cuts[nc++] = i;
    split_run(text, starts, cuts, nc, &c);
    if (strcmp(c.reasoning, want_r) || strcmp(c.content, want_c))
        bad++;
    CHECK(bad == 0, "%d splits of [%s] differ (want reasoning [%s] content [%s])", bad, text, want_r, want_c);
}

static void test_think_splitter(void) {
    check_all_splits("<think>\nLet me think.\nOK.\n</think>\n\nThe answer is 4.", 0, "Let me think.\nOK.",
                     "The answer is 4.");
    check_all_splits("No thinking here, just < and </ and <th.", 0, "", "No thinking here, just < and </ and <th.");
    check_all_splits("  leading space kept", 0, "", "  leading space kept");
    check_all_splits("reasoning first</think>answer", 1, "reasoning first", "answer");
    check_all_splits("<think></think>\n\nonly answer", 0, "", "only answer");
    check_all_splits("<think>unfinished thought  \n", 0, "unfinished thought", "");
    check_all_splits("<think>a</thi", 0, "a</thi", "");
    check_all_splits("answer with a stray </think> tag", 0, "", "answer with a stray </think> tag");
    check_all_splits("<think>x <think> y</think>z", 0, "x <think> y", "z");
    check_all_splits("pre<think>r1</think>mid<think>r2</think>post", 0, "r1r2", "premidpost");
    check_all_splits("<think>\n  spaced   words \t\n</think>  \n ok \n", 0, "spaced   words", "ok \n");
    check_all_splits("<thinking>is not a tag", 0, "", "<thinking>is not a tag");
    check_all_splits("end <thi", 0, "", "end <thi");
    /* UTF-8 passes through untouched */
    check_all_splits("<think>思考…</think>答案：四", 0, "思考…", "答案：四");

    /* state query and reset */
    collect c;
    memset(&c, 0, sizeof c);
    sala_think *th = sala_think_new(0, on_piece, &c);
    sala_think_push(th, "<thi", 4);
    CHK(!sala_think_in_reasoning(th));
    sala_think_push(th, "nk>abc", 6);
    CHK(sala_think_in_reasoning(th));
    CHK(strcmp(c.reasoning, "abc") == 0);
    sala_think_reset(th, 0);
    CHK(!sala_think_in_reasoning(th));
    sala_think_push(th, "x", 1);
    sala_think_flush(th);
    CHK(strcmp(c.content, "x") == 0);
    sala_think_free(th);
}

int main(void) {
    TEST_RUN(test_builtin);
    TEST_RUN(test_load_checkpoint_config);
    TEST_RUN(test_tokenized_example);
    TEST_RUN(test_variants);
    TEST_RUN(test_unsupported);
    TEST_RUN(test_think_splitter);
    TEST_END();
}
