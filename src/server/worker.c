/* worker.c — the slots of `sala serve`: the FIFO job queue, one worker thread per session, the glue from a
 * validated request to sala_generate() and from its token callback to the answer (a JSON body or SSE
 * events). The threading and hand-off protocol is described in internal.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "sala_chat.h"
#include "sala_sample.h"
#include "server/internal.h"
#include "util.h"

/* ---------------------------------------------------------------- small JSON writer */

static void jb_int(sala_buf *b, int64_t v) {
    char t[32];
    sala_buf_add(b, t, (size_t)snprintf(t, sizeof t, "%" PRId64, v));
}

/* A JSON string literal of arbitrary bytes: control characters escaped, invalid UTF-8 as U+FFFD. */
static void jb_str(sala_buf *b, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    sala_buf_add(b, "\"", 1);
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            sala_buf_add(b, (const char *)run, (size_t)(p - run));
        if (p >= end)
            break;
        unsigned c = *p;
        if (c == '"') {
            sala_buf_add(b, "\\\"", 2);
            p++;
        } else if (c == '\\') {
            sala_buf_add(b, "\\\\", 2);
            p++;
        } else if (c == '\n') {
            sala_buf_add(b, "\\n", 2);
            p++;
        } else if (c == '\r') {
            sala_buf_add(b, "\\r", 2);
            p++;
        } else if (c == '\t') {
            sala_buf_add(b, "\\t", 2);
            p++;
        } else if (c < 0x20) {
            char t[8];
            snprintf(t, sizeof t, "\\u%04x", c);
            sala_buf_add(b, t, 6);
            p++;
        } else {
            size_t n = srv_utf8_seq(p, (size_t)(end - p));
            if (n) {
                sala_buf_add(b, (const char *)p, n);
                p += n;
            } else {
                sala_buf_add(b, "\\ufffd", 6);
                p++;
            }
        }
    }
    sala_buf_add(b, "\"", 1);
}
static void jb_cstr(sala_buf *b, const char *s) {
    jb_str(b, s, strlen(s));
}

/* ---------------------------------------------------------------- jobs */

srv_job *srv_job_new(struct srv_server *S, srv_request *req, struct MHD_Connection *c) {
    srv_job *j = xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    j->refs = 1;
    j->srv = S;
    j->req = *req; /* takes ownership */
    memset(req, 0, sizeof *req);
    j->conn = c;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    j->fd = ci ? ci->connect_fd : -1;
    j->state = JOB_QUEUED;
    j->created = (int64_t)time(NULL);
    /* ids: a per-server salt and a counter, mixed (splitmix64) into 24 base-36 digits */
    uint64_t x = S->id_salt + 0x9E3779B97F4A7C15ull * (atomic_fetch_add(&S->id_counter, 1) + 1);
    const char *pre = j->req.endpoint == SRV_EP_CHAT ? "chatcmpl-" : "cmpl-";
    size_t k = strlen(pre);
    memcpy(j->id, pre, k);
    for (int part = 0; part < 2; part++) {
        uint64_t z = x + (uint64_t)part * 0xD1B54A32D192ED03ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        for (int i = 0; i < 12; i++, z /= 36)
            j->id[k++] = "0123456789abcdefghijklmnopqrstuvwxyz"[z % 36];
    }
    j->id[k] = 0;
    j->finish = "";
    return j;
}

void srv_job_ref(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_unref(srv_job *j) {
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left)
        return;
    srv_request_free(&j->req);
    free(j->body);
    free(j->out);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int srv_job_take_suspended(srv_job *j) {
    if (!j->suspended)
        return 0;
    j->suspended = 0;
    atomic_fetch_sub(&j->srv->n_suspended, 1);
    return 1;
}

/* Called with j->mu held: releases it and, if the connection was suspended, resumes it (outside the lock,
 * as the suspend/resume protocol in internal.h asks). */
static void job_unlock_resume(srv_job *j) {
    int resume = srv_job_take_suspended(j);
    struct MHD_Connection *c = j->conn;
    pthread_mutex_unlock(&j->mu);
    if (resume)
        MHD_resume_connection(c);
}

void srv_job_wake(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    job_unlock_resume(j);
}

void srv_job_fail(srv_job *j, const srv_error *e) {
    char *body = srv_error_json(e);
    pthread_mutex_lock(&j->mu);
    free(j->body);
    j->body = body;
    j->body_len = strlen(body);
    j->status = e->status;
    j->state = JOB_DONE;
    j->finish = "error";
    job_unlock_resume(j);
}

/* Token counts and finish reason, for the request log (read by the MHD thread). */
static void job_set_stats(srv_job *j, int64_t n_prompt, int64_t n_gen, const char *finish) {
    pthread_mutex_lock(&j->mu);
    j->n_prompt = n_prompt;
    j->n_gen = n_gen;
    if (finish)
        j->finish = finish;
    pthread_mutex_unlock(&j->mu);
}

/* Success answer (non-streaming): takes body. */
static void job_answer(srv_job *j, char *body, size_t len) {
    pthread_mutex_lock(&j->mu);
    free(j->body);
    j->body = body;
    j->body_len = len;
    j->status = 200;
    j->state = JOB_DONE;
    job_unlock_resume(j);
}

/* Streaming: hands bytes to the connection (and the end of the stream when done). */
static void job_stream(srv_job *j, const char *data, size_t len, int done) {
    pthread_mutex_lock(&j->mu);
    if (!j->cancelled && len) {
        if (j->out_len + len > j->out_cap) {
            j->out_cap = (j->out_len + len) * 2 + 256;
            j->out = xrealloc(j->out, j->out_cap);
        }
        memcpy(j->out + j->out_len, data, len);
        j->out_len += len;
    }
    j->sse = 1;
    if (done)
        j->state = JOB_DONE;
    job_unlock_resume(j);
}

/* A job that ends without an answer (the client is gone): the connection, if suspended, is resumed so
 * MHD closes it. */
static void job_drop(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->cancelled = 1;
    j->state = JOB_DONE;
    if (!j->finish[0])
        j->finish = "cancelled";
    job_unlock_resume(j);
}

/* 1 when the job must stop: cancelled, or (while its connection is suspended and so not watched by MHD)
 * the client closed or reset the socket. */
static int job_should_stop(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    if (!j->cancelled && j->suspended && j->fd >= 0) {
        char c;
        ssize_t r = recv(j->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            j->cancelled = 1;
    }
    int stop = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return stop;
}

/* ---------------------------------------------------------------- queue */

/* Removes queued jobs whose client is gone (checked only when the queue is full: a worker checks each
 * job anyway when it takes it). Called with S->qmu held; the removed jobs are returned as a list. */
static srv_job *queue_sweep(struct srv_server *S) {
    srv_job *gone = NULL, **pp = &S->qhead;
    S->qtail = NULL;
    while (*pp) {
        srv_job *j = *pp;
        if (job_should_stop(j)) {
            *pp = j->next;
            S->qlen--;
            j->next = gone;
            gone = j;
        } else {
            S->qtail = j;
            pp = &j->next;
        }
    }
    return gone;
}

/* Full when the jobs that will have to wait (beyond the idle slots) reach --max-queue. */
static int queue_full(struct srv_server *S) {
    return S->qlen - (S->n_workers - S->busy) >= S->opt.max_queue;
}

int srv_queue_submit(struct srv_server *S, srv_job *j) {
    pthread_mutex_lock(&S->qmu);
    if (!S->stopping && queue_full(S) && S->qlen > 0) {
        srv_job *gone = queue_sweep(S);
        pthread_mutex_unlock(&S->qmu);
        while (gone) {
            srv_job *next = gone->next;
            job_drop(gone);
            srv_job_unref(gone);
            gone = next;
        }
        pthread_mutex_lock(&S->qmu);
    }
    if (S->stopping || queue_full(S)) {
        pthread_mutex_unlock(&S->qmu);
        return -1;
    }
    /* suspend before the job becomes visible to a worker, so a quick worker finds it suspended */
    pthread_mutex_lock(&j->mu);
    MHD_suspend_connection(j->conn);
    j->suspended = 1;
    atomic_fetch_add(&S->n_suspended, 1);
    j->refs++; /* the queue's / worker's reference */
    pthread_mutex_unlock(&j->mu);
    j->next = NULL;
    if (S->qtail)
        S->qtail->next = j;
    else
        S->qhead = j;
    S->qtail = j;
    S->qlen++;
    pthread_cond_signal(&S->qcv);
    pthread_mutex_unlock(&S->qmu);
    return 0;
}

/* ---------------------------------------------------------------- generation */

static void ev_begin_chunk(srv_worker *w, sala_buf *b) {
    srv_job *j = w->job;
    int chat = j->req.endpoint == SRV_EP_CHAT;
    sala_buf_puts(b, "data: {\"id\":");
    jb_cstr(b, j->id);
    sala_buf_puts(b, chat ? ",\"object\":\"chat.completion.chunk\",\"created\":"
                   : ",\"object\":\"text_completion\",\"created\":");
    jb_int(b, j->created);
    sala_buf_puts(b, ",\"model\":");
    jb_cstr(b, w->srv->opt.model_id);
    sala_buf_puts(b, ",\"choices\":[");
}

static void ev_end_chunk(srv_worker *w, sala_buf *b) {
    sala_buf_puts(b, "]");
    if (w->job->req.include_usage)
        sala_buf_puts(b, ",\"usage\":null");
    sala_buf_puts(b, "}\n\n");
}

/* One streamed piece: a delta of content (kind 0) or reasoning (kind 1), or completion text. */
static void ev_text(srv_worker *w, int kind, const char *text, size_t len) {
    sala_buf b = {w->ev, w->ev_len, w->ev_cap};
    ev_begin_chunk(w, &b);
    if (w->job->req.endpoint == SRV_EP_CHAT) {
        sala_buf_puts(&b, kind ? "{\"index\":0,\"delta\":{\"reasoning_content\":" : "{\"index\":0,\"delta\":{\"content\":");
        jb_str(&b, text, len);
        sala_buf_puts(&b, "},\"logprobs\":null,\"finish_reason\":null}");
    } else {
        sala_buf_puts(&b, "{\"text\":");
        jb_str(&b, text, len);
        sala_buf_puts(&b, ",\"index\":0,\"logprobs\":null,\"finish_reason\":null}");
    }
    ev_end_chunk(w, &b);
    w->ev = b.p, w->ev_len = b.n, w->ev_cap = b.cap;
}

static void acc_add(srv_worker *w, int kind, const char *text, size_t len) {
    if (w->acc_len[kind] + len + 1 > w->acc_cap[kind]) {
        w->acc_cap[kind] = (w->acc_len[kind] + len + 1) * 2;
        w->acc[kind] = xrealloc(w->acc[kind], w->acc_cap[kind]);
    }
    memcpy(w->acc[kind] + w->acc_len[kind], text, len);
    w->acc_len[kind] += len;
    w->acc[kind][w->acc_len[kind]] = 0;
}

/* Text for the client: kind 0 content (or completion text), 1 reasoning. */
static void emit_text(srv_worker *w, int kind, const char *text, size_t len) {
    if (!len)
        return;
    if (w->job->req.stream)
        ev_text(w, kind, text, len);
    else
        acc_add(w, kind, text, len);
}

static void on_think(void *ud, int is_reasoning, const char *text, size_t len) {
    emit_text(ud, is_reasoning ? 1 : 0, text, len);
}

/* Pushes the events of this step to the connection. */
static void flush_events(srv_worker *w, int done) {
    if (w->job->req.stream && (w->ev_len || done)) {
        job_stream(w->job, w->ev, w->ev_len, done);
        w->t_sent = sala_time();
    }
    w->ev_len = 0;
}

/* An open stream that has been silent for a while (a long prefill) gets an SSE comment, which clients
 * ignore, so proxies and clients with idle timeouts keep the connection. */
static void keep_alive(srv_worker *w) {
    double every = w->srv->opt.keep_alive_s;
    if (!w->stream_open || every <= 0 || sala_time() - w->t_sent < every)
        return;
    static const char ka[] = ": keep-alive\n\n";
    job_stream(w->job, ka, sizeof ka - 1, 0);
    w->t_sent = sala_time();
}

static int on_token(void *ud, int32_t token, const char *text, size_t len) {
    srv_worker *w = ud;
    if (token >= 0)
        w->n_tok++;
    if (len) {
        if (w->think)
            sala_think_push(w->think, text, len);
        else
            emit_text(w, 0, text, len);
    }
    flush_events(w, 0);
    keep_alive(w);
    return job_should_stop(w->job);
}

static int on_progress(void *ud, int64_t done, int64_t total) {
    srv_worker *w = ud;
    if (!w->job)
        return 0;
    keep_alive(w);
    return job_should_stop(w->job);
}

static void usage_json(sala_buf *b, int64_t np, int64_t ng) {
    sala_buf_puts(b, "{\"prompt_tokens\":");
    jb_int(b, np);
    sala_buf_puts(b, ",\"completion_tokens\":");
    jb_int(b, ng);
    sala_buf_puts(b, ",\"total_tokens\":");
    jb_int(b, np + ng);
    sala_buf_puts(b, "}");
}

static const char *finish_reason(sala_stop_reason r) {
    switch (r) {
    case SALA_STOP_EOS:
    case SALA_STOP_STRING:
        return "stop";
    case SALA_STOP_MAX_TOKENS:
    case SALA_STOP_CONTEXT:
        return "length";
    default:
        return "stop";
    }
}

/* Renders / tokenizes the prompt. Returns 0 with *ids (malloc'd), or -1 with *e. */
static int job_prompt(srv_worker *w, srv_job *j, int32_t **ids, int64_t *n, int *starts_in_think, srv_error *e) {
    srv_server *S = w->srv;
    const srv_request *r = &j->req;
    *ids = NULL;
    *n = 0;
    *starts_in_think = 0;
    if (r->endpoint == SRV_EP_COMPLETION && r->prompt_ids) {
        for (int64_t i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] >= S->info.vocab) {
                srv_error_set(e, 400, "invalid_request_error", "prompt", "invalid_value",
                              "Invalid 'prompt': token id %d is outside the vocabulary (%d ids).",
                              (int)r->prompt_ids[i], S->info.vocab);
                return -1;
            }
        *ids = xmalloc((size_t)r->n_prompt_ids * sizeof **ids);
        memcpy(*ids, r->prompt_ids, (size_t)r->n_prompt_ids * sizeof **ids);
        *n = r->n_prompt_ids;
    } else {
        char *text = NULL;
        int add_bos = 0;
        if (r->endpoint == SRV_EP_CHAT) {
            sala_chat_message *m = xmalloc((size_t)r->n_msgs * sizeof *m);
            for (int i = 0; i < r->n_msgs; i++)
                m[i] = (sala_chat_message){r->msgs[i].role, r->msgs[i].content};
            sala_status st = sala_chat_render(S->tpl, m, r->n_msgs, SALA_CHAT_ADD_GENERATION_PROMPT, &text);
            free(m);
            if (st != SALA_OK) {
                srv_error_set(e, 400, "invalid_request_error", "messages", NULL, "Cannot format the messages: %s",
                              sala_last_error());
                return -1;
            }
            *starts_in_think = sala_chat_template_opens_think(S->tpl);
        } else {
            /* as `sala run` does: the tokenizer's BOS in front of a plain prompt (the chat template writes
               its own) */
            text = xstrdup(r->prompt);
            add_bos = sala_tokenizer_bos(S->tok) >= 0;
        }
        size_t tl = strlen(text);
        /* every token covers at most max_piece_bytes bytes: longer texts cannot fit, skip tokenizing them */
        if (S->max_piece_bytes && tl / S->max_piece_bytes > (size_t)S->n_ctx) {
            free(text);
            srv_error_set(e, 400, "invalid_request_error", r->endpoint == SRV_EP_CHAT ? "messages" : "prompt",
                          "context_length_exceeded",
                          "This model's maximum context length is %" PRId64 " tokens; the prompt (%zu bytes) is far "
                          "longer. Please reduce the length of the %s.",
                          S->n_ctx, tl, r->endpoint == SRV_EP_CHAT ? "messages" : "prompt");
            return -1;
        }
        sala_status st = sala_tokenizer_encode(S->tok, text, tl, add_bos, ids, n);
        free(text);
        if (st != SALA_OK) {
            free(*ids);
            *ids = NULL;
            srv_error_set(e, 500, "server_error", NULL, NULL, "Tokenization failed: %s", sala_last_error());
            return -1;
        }
    }
    if (*n == 0 || *n >= S->n_ctx) {
        free(*ids);
        *ids = NULL;
    }
    if (*n == 0) {
        srv_error_set(e, 400, "invalid_request_error", "prompt", "invalid_value", "The prompt is empty.");
        return -1;
    }
    if (*n >= S->n_ctx) {
        srv_error_set(e, 400, "invalid_request_error", r->endpoint == SRV_EP_CHAT ? "messages" : "prompt",
                      "context_length_exceeded",
                      "This model's maximum context length is %" PRId64 " tokens. However, your %s resulted in %" PRId64
                      " tokens, leaving no room for the completion. Please reduce the length of the %s.",
                      S->n_ctx, r->endpoint == SRV_EP_CHAT ? "messages" : "prompt", *n,
                      r->endpoint == SRV_EP_CHAT ? "messages" : "prompt");
        return -1;
    }
    return 0;
}

static void job_run(srv_worker *w, srv_job *j) {
    srv_server *S = w->srv;
    const srv_request *r = &j->req;
    srv_error e;
    if (job_should_stop(j)) {
        if (S->opt.log)
            fprintf(stderr, "serve: %s cancelled before it started (client gone)\n", j->id);
        job_drop(j);
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->state = JOB_RUNNING;
    pthread_mutex_unlock(&j->mu);

    int32_t *ids = NULL;
    int64_t n = 0;
    int in_think = 0;
    if (job_prompt(w, j, &ids, &n, &in_think, &e)) {
        srv_job_fail(j, &e);
        return;
    }
    sala_sampler_params sp = sala_sampler_default_params();
    sp.temperature = (float)r->temperature;
    sp.top_p = (float)r->top_p;
    sp.top_k = r->top_k;
    sp.min_p = (float)r->min_p;
    sp.repeat_penalty = (float)r->repeat_penalty;
    sp.presence_penalty = (float)r->presence_penalty;
    sp.frequency_penalty = (float)r->frequency_penalty;
    sp.seed = r->has_seed ? r->seed : SALA_SEED_RANDOM;
    sala_sampler *smp = NULL;
    if (sala_sampler_new(&sp, &smp) != SALA_OK) {
        srv_error_set(&e, 400, "invalid_request_error", NULL, "invalid_value", "Invalid sampling parameters: %s",
                      sala_last_error());
        free(ids);
        srv_job_fail(j, &e);
        return;
    }

    w->n_tok = 0;
    w->acc_len[0] = w->acc_len[1] = 0;
    w->ev_len = 0;
    w->stream_open = 0;
    w->think = r->endpoint == SRV_EP_CHAT ? sala_think_new(in_think, on_think, w) : NULL;
    sala_session_reset(w->sess);

    if (r->stream) {
        /* headers and the opening chunk go out now; the prefill follows */
        sala_buf b = {w->ev, w->ev_len, w->ev_cap};
        if (r->endpoint == SRV_EP_CHAT) {
            ev_begin_chunk(w, &b);
            sala_buf_puts(&b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                       "\"finish_reason\":null}");
            ev_end_chunk(w, &b);
        }
        w->ev = b.p, w->ev_len = b.n, w->ev_cap = b.cap;
        flush_events(w, 0);
        /* job_stream only appends when there is something: make sure the stream is marked started */
        job_stream(j, NULL, 0, 0);
        w->stream_open = 1;
        w->t_sent = sala_time();
    }
    if (r->echo) {
        if (r->prompt)
            emit_text(w, 0, r->prompt, strlen(r->prompt));
        else {
            char *t = sala_tokenizer_decode(S->tok, ids, n, 0);
            if (t)
                emit_text(w, 0, t, strlen(t));
            free(t);
        }
    }

    sala_generate_params gp = sala_generate_default_params();
    gp.model = S->model;
    gp.tokenizer = S->tok;
    gp.sampler = smp;
    gp.max_tokens = r->max_tokens;
    gp.eos_ids = S->eos;
    gp.n_eos = S->n_eos;
    gp.stop = (const char *const *)r->stop;
    gp.n_stop = r->n_stop;
    gp.on_token = on_token;
    gp.ud = w;
    sala_generate_result res;
    memset(&res, 0, sizeof res);
    sala_status st = sala_generate(w->sess, ids, n, &gp, &res);
    free(ids);
    sala_sampler_free(smp);
    if (w->think) {
        sala_think_flush(w->think);
        sala_think_free(w->think);
        w->think = NULL;
    }
    job_set_stats(j, n, res.n_gen, NULL);

    if (res.stop == SALA_STOP_CALLBACK || st == SALA_ERR_INTERRUPTED || job_should_stop(j)) {
        if (S->opt.log)
            fprintf(stderr, "serve: %s cancelled after %" PRId64 " + %" PRId64 " tokens (client gone), slot %d free\n",
                    j->id, n, res.n_gen, w->index);
        job_drop(j);
        return;
    }
    if (st != SALA_OK) {
        int ctx = st == SALA_ERR_CONTEXT;
        srv_error_set(&e, ctx ? 400 : 500, ctx ? "invalid_request_error" : "server_error", NULL,
                      ctx ? "context_length_exceeded" : NULL, "%s: %s", ctx ? "Prompt too long" : "Generation failed",
                      sala_last_error());
        if (!r->stream) {
            srv_job_fail(j, &e);
            return;
        }
        char *ej = srv_error_json(&e);
        sala_buf b = {w->ev, w->ev_len, w->ev_cap};
        sala_buf_puts(&b, "data: ");
        sala_buf_puts(&b, ej);
        sala_buf_puts(&b, "\n\ndata: [DONE]\n\n");
        free(ej);
        w->ev = b.p, w->ev_len = b.n, w->ev_cap = b.cap;
        job_set_stats(j, n, res.n_gen, "error");
        flush_events(w, 1);
        return;
    }
    const char *fin = finish_reason(res.stop);
    job_set_stats(j, n, res.n_gen, fin);
    int64_t ng = res.n_gen;
    if (r->stream) {
        sala_buf b = {w->ev, w->ev_len, w->ev_cap};
        ev_begin_chunk(w, &b);
        sala_buf_puts(&b, r->endpoint == SRV_EP_CHAT ? "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":"
                                              : "{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":");
        jb_cstr(&b, fin);
        sala_buf_puts(&b, "}");
        ev_end_chunk(w, &b);
        if (r->include_usage) {
            ev_begin_chunk(w, &b);
            sala_buf_puts(&b, "],\"usage\":");
            usage_json(&b, n, ng);
            sala_buf_puts(&b, "}\n\n");
        }
        sala_buf_puts(&b, "data: [DONE]\n\n");
        w->ev = b.p, w->ev_len = b.n, w->ev_cap = b.cap;
        flush_events(w, 1);
        return;
    }
    sala_buf b = {0};
    sala_buf_puts(&b, "{\"id\":");
    jb_cstr(&b, j->id);
    if (r->endpoint == SRV_EP_CHAT) {
        sala_buf_puts(&b, ",\"object\":\"chat.completion\",\"created\":");
        jb_int(&b, j->created);
        sala_buf_puts(&b, ",\"model\":");
        jb_cstr(&b, S->opt.model_id);
        sala_buf_puts(&b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
        jb_str(&b, w->acc[0] ? w->acc[0] : "", w->acc_len[0]);
        if (w->acc_len[1]) {
            sala_buf_puts(&b, ",\"reasoning_content\":");
            jb_str(&b, w->acc[1], w->acc_len[1]);
        }
        sala_buf_puts(&b, "},\"logprobs\":null,\"finish_reason\":");
    } else {
        sala_buf_puts(&b, ",\"object\":\"text_completion\",\"created\":");
        jb_int(&b, j->created);
        sala_buf_puts(&b, ",\"model\":");
        jb_cstr(&b, S->opt.model_id);
        sala_buf_puts(&b, ",\"choices\":[{\"text\":");
        jb_str(&b, w->acc[0] ? w->acc[0] : "", w->acc_len[0]);
        sala_buf_puts(&b, ",\"index\":0,\"logprobs\":null,\"finish_reason\":");
    }
    jb_cstr(&b, fin);
    sala_buf_puts(&b, "}],\"usage\":");
    usage_json(&b, n, ng);
    sala_buf_puts(&b, "}");
    job_answer(j, b.p, b.n);
}

static void *worker_main(void *arg) {
    srv_worker *w = arg;
    srv_server *S = w->srv;
    /* omp_set_num_threads() is per thread: give this thread the model's thread count too */
    sala_set_threads(sala_get_threads());
    for (;;) {
        pthread_mutex_lock(&S->qmu);
        while (!S->stopping && !S->qhead)
            pthread_cond_wait(&S->qcv, &S->qmu);
        if (S->stopping) {
            pthread_mutex_unlock(&S->qmu);
            break;
        }
        srv_job *j = S->qhead;
        S->qhead = j->next;
        if (!S->qhead)
            S->qtail = NULL;
        S->qlen--;
        S->busy++;
        w->job = j;
        pthread_mutex_unlock(&S->qmu);

        job_run(w, j);

        pthread_mutex_lock(&S->qmu);
        w->job = NULL;
        S->busy--;
        pthread_mutex_unlock(&S->qmu);
        srv_job_unref(j);
    }
    return NULL;
}

sala_status srv_workers_start(struct srv_server *S) {
    S->workers = xcalloc((size_t)S->opt.parallel, sizeof *S->workers);
    for (int i = 0; i < S->opt.parallel; i++) {
        srv_worker *w = &S->workers[i];
        w->srv = S;
        w->index = i;
        sala_session_params sp = sala_session_default_params();
        sp.n_ctx = S->opt.n_ctx;
        sp.chunk = S->opt.chunk;
        sp.progress = on_progress;
        sp.progress_ud = w;
        sala_status st = sala_session_new(S->model, &sp, &w->sess);
        if (st != SALA_OK) {
            srv_workers_stop(S);
            return st;
        }
        S->n_ctx = sala_session_n_ctx(w->sess);
        if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
            sala_session_free(w->sess);
            w->sess = NULL;
            srv_workers_stop(S);
            return sala_set_error(SALA_ERR_NOMEM, "cannot start worker thread %d", i);
        }
        S->n_workers = i + 1;
    }
    return SALA_OK;
}

void srv_workers_stop(struct srv_server *S) {
    pthread_mutex_lock(&S->qmu);
    S->stopping = 1;
    srv_job *q = S->qhead;
    S->qhead = S->qtail = NULL;
    S->qlen = 0;
    for (int i = 0; i < S->n_workers; i++) {
        srv_job *j = S->workers[i].job;
        if (!j)
            continue;
        pthread_mutex_lock(&j->mu);
        j->cancelled = 1;
        pthread_mutex_unlock(&j->mu);
    }
    pthread_cond_broadcast(&S->qcv);
    pthread_mutex_unlock(&S->qmu);
    srv_error e;
    srv_error_set(&e, 503, "server_error", NULL, "server_shutting_down", "The server is shutting down.");
    while (q) {
        srv_job *next = q->next;
        srv_job_fail(q, &e);
        srv_job_unref(q);
        q = next;
    }
    for (int i = 0; i < S->n_workers; i++)
        pthread_join(S->workers[i].th, NULL);
    if (S->workers)
        for (int i = 0; i < S->opt.parallel; i++) {
            srv_worker *w = &S->workers[i];
            if (w->sess)
                sala_session_free(w->sess);
            free(w->acc[0]);
            free(w->acc[1]);
            free(w->ev);
        }
    free(S->workers);
    S->workers = NULL;
    S->n_workers = 0;
}
