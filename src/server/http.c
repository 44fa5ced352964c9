/* http.c — the libmicrohttpd side of `sala serve`: listening socket, routing, authentication, body
 * collection with a size limit, error answers, and the hand-off of validated requests to the slot queue
 * (worker.c). Threads and the suspend/resume protocol are described in internal.h.
 *
 * Every answer is decided only once the request body has been read completely (a small body that is
 * left unread when the server answers and closes makes the kernel send a reset that can destroy the
 * answer on its way). The exception is a body announced (Content-Length) above the limit: with
 * "Expect: 100-continue" the client waits for our go-ahead, so 413 goes out at once; without it the body is
 * read and thrown away when it is at most SRV_DRAIN_FACTOR times the limit, else 413 goes out at once and
 * the connection is closed. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/internal.h"
#include "util.h"

#define SRV_DRAIN_FACTOR 4

enum { R_NONE = 0, R_HEALTH, R_MODELS, R_MODEL_ONE, R_CHAT, R_COMPL };

typedef struct {
    int route;
    int answered; /* a response is queued */
    int has_err;  /* an error answer decided before the body was read */
    srv_error err;
    const char *allow; /* Allow header for 405 */
    char *body;
    size_t len, cap;
    int too_big;
    int overloaded; /* the body did not fit the server-wide budget: 503 */
    srv_job *job;
    double t0;
    int status;
    char method[16];
    char path[128];
} srv_conn;

srv_options srv_default_options(void) {
    srv_options o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.port = 8080;
    o.model_id = "sala";
    o.parallel = 1;
    o.max_queue = 256;
    o.max_body = (size_t)16 << 20;
    o.timeout_s = 120;
    o.keep_alive_s = 10;
    o.log = 1;
    return o;
}

/* Request bodies are buffered whole; all of them together may hold at most body_budget() bytes, so a flood
 * of large uploads gets 503 instead of exhausting memory. */
static size_t body_budget(const srv_server *S) {
    size_t b = S->opt.max_body * 8;
    return b < ((size_t)64 << 20) ? (size_t)64 << 20 : b;
}

static void body_release(srv_server *S, srv_conn *rc) {
    free(rc->body);
    rc->body = NULL;
    atomic_fetch_sub(&S->body_bytes, (long long)rc->cap);
    rc->cap = 0;
}

/* ---------------------------------------------------------------- answers */

static enum MHD_Result respond_buf(struct MHD_Connection *c, srv_conn *rc, int status, char *body, size_t len,
                                   const char *allow) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result r = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    rc->status = status;
    rc->answered = 1;
    return r;
}

static enum MHD_Result respond_error(struct MHD_Connection *c, srv_conn *rc, const srv_error *e, const char *allow) {
    char *body = srv_error_json(e);
    return respond_buf(c, rc, e->status, body, strlen(body), allow);
}

static enum MHD_Result respond_json(struct MHD_Connection *c, srv_conn *rc, int status, cJSON *root) {
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    SALA_CHECK(s != NULL);
    return respond_buf(c, rc, status, s, strlen(s), NULL);
}

/* ---------------------------------------------------------------- SSE response */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    srv_job *j = cls;
    pthread_mutex_lock(&j->mu);
    if (j->cancelled) {
        pthread_mutex_unlock(&j->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (j->out_len > j->out_off) {
        size_t n = j->out_len - j->out_off;
        if (n > max)
            n = max;
        memcpy(buf, j->out + j->out_off, n);
        j->out_off += n;
        if (j->out_off == j->out_len)
            j->out_off = j->out_len = 0;
        pthread_mutex_unlock(&j->mu);
        return (ssize_t)n;
    }
    if (j->state == JOB_DONE) {
        pthread_mutex_unlock(&j->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* nothing to send yet: sleep until the worker has more (it resumes us) */
    MHD_suspend_connection(j->conn);
    j->suspended = 1;
    atomic_fetch_add(&j->srv->n_suspended, 1);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

static void sse_free(void *cls) {
    srv_job_unref(cls);
}

/* Called again after the worker resumed the connection (before any response was queued). */
static enum MHD_Result on_resumed(struct MHD_Connection *c, srv_conn *rc) {
    srv_job *j = rc->job;
    pthread_mutex_lock(&j->mu);
    if (j->sse && !j->cancelled) {
        j->refs++; /* the response's reference, dropped by sse_free */
        pthread_mutex_unlock(&j->mu);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, sse_read, j, sse_free);
        if (!resp) {
            srv_job_unref(j);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        enum MHD_Result r = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        rc->status = 200;
        rc->answered = 1;
        return r;
    }
    if (j->state == JOB_DONE && j->body) {
        char *body = j->body;
        size_t len = j->body_len;
        int status = j->status;
        j->body = NULL;
        pthread_mutex_unlock(&j->mu);
        return respond_buf(c, rc, status, body, len, NULL);
    }
    if (j->cancelled || j->state == JOB_DONE) {
        pthread_mutex_unlock(&j->mu);
        return MHD_NO; /* no answer to give: close */
    }
    /* woken without anything to do: wait again */
    MHD_suspend_connection(c);
    j->suspended = 1;
    atomic_fetch_add(&j->srv->n_suspended, 1);
    pthread_mutex_unlock(&j->mu);
    return MHD_YES;
}

/* ---------------------------------------------------------------- routing */

static int route_of(const char *url, const char **arg) {
    *arg = NULL;
    if (strncmp(url, "/v1/", 4) == 0)
        url += 3;
    if (strcmp(url, "/health") == 0)
        return R_HEALTH;
    if (strcmp(url, "/models") == 0)
        return R_MODELS;
    if (strncmp(url, "/models/", 8) == 0 && url[8]) {
        *arg = url + 8;
        return R_MODEL_ONE;
    }
    if (strcmp(url, "/chat/completions") == 0)
        return R_CHAT;
    if (strcmp(url, "/completions") == 0)
        return R_COMPL;
    return R_NONE;
}

static int auth_ok(srv_server *S, struct MHD_Connection *c) {
    if (!S->opt.api_key)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t a = strlen(h), b = strlen(S->opt.api_key);
    unsigned diff = (unsigned)(a != b);
    for (size_t i = 0; i < a; i++)
        diff |= (unsigned char)h[i] ^ (unsigned char)S->opt.api_key[i % (b ? b : 1)];
    return diff == 0;
}

static cJSON *model_object(srv_server *S) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", S->opt.model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)S->started);
    cJSON_AddStringToObject(m, "owned_by", "sala");
    cJSON_AddNumberToObject(m, "max_model_len", (double)S->n_ctx);
    return m;
}

static enum MHD_Result answer_get(srv_server *S, struct MHD_Connection *c, srv_conn *rc, const char *arg) {
    if (rc->route == R_HEALTH) {
        cJSON *o = cJSON_CreateObject();
        pthread_mutex_lock(&S->qmu);
        int busy = S->busy, queued = S->qlen, stopping = S->stopping;
        pthread_mutex_unlock(&S->qmu);
        cJSON_AddStringToObject(o, "status", stopping ? "stopping" : "ok");
        cJSON_AddStringToObject(o, "model", S->opt.model_id);
        cJSON_AddNumberToObject(o, "slots", S->opt.parallel);
        cJSON_AddNumberToObject(o, "slots_busy", busy);
        cJSON_AddNumberToObject(o, "queued", queued);
        cJSON_AddNumberToObject(o, "n_ctx", (double)S->n_ctx);
        return respond_json(c, rc, stopping ? 503 : 200, o);
    }
    if (rc->route == R_MODELS) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "list");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), model_object(S));
        return respond_json(c, rc, 200, o);
    }
    /* R_MODEL_ONE */
    if (strcmp(arg, S->opt.model_id) == 0)
        return respond_json(c, rc, 200, model_object(S));
    srv_error e;
    srv_error_set(&e, 404, "invalid_request_error", "model", "model_not_found",
                  "The model '%.200s' does not exist. This server serves '%s'.", arg, S->opt.model_id);
    return respond_error(c, rc, &e, NULL);
}

static enum MHD_Result answer_post(srv_server *S, struct MHD_Connection *c, srv_conn *rc) {
    srv_error e;
    srv_request req;
    if (rc->too_big) {
        srv_error_set(&e, 413, "invalid_request_error", NULL, "request_too_large",
                      "The request body is larger than this server's limit of %zu bytes (see --max-body).",
                      S->opt.max_body);
        return respond_error(c, rc, &e, NULL);
    }
    srv_endpoint ep = rc->route == R_CHAT ? SRV_EP_CHAT : SRV_EP_COMPLETION;
    if (rc->overloaded) {
        srv_error_set(&e, 503, "server_error", NULL, "server_overloaded",
                      "The server is overloaded: too many large requests are being uploaded. Please retry later.");
        return respond_error(c, rc, &e, NULL);
    }
    int bad = srv_request_parse(rc->body ? rc->body : "", rc->len, ep, &req, &e);
    body_release(S, rc);
    if (bad)
        return respond_error(c, rc, &e, NULL);
    if (req.model && strcmp(req.model, S->opt.model_id) != 0) {
        srv_error_set(&e, 404, "invalid_request_error", "model", "model_not_found",
                      "The model '%.200s' does not exist. This server serves '%s'.", req.model, S->opt.model_id);
        srv_request_free(&req);
        return respond_error(c, rc, &e, NULL);
    }
    srv_job *j = srv_job_new(S, &req, c);
    if (srv_queue_submit(S, j) != 0) {
        srv_job_unref(j);
        pthread_mutex_lock(&S->qmu);
        int stopping = S->stopping;
        pthread_mutex_unlock(&S->qmu);
        if (stopping)
            srv_error_set(&e, 503, "server_error", NULL, "server_shutting_down", "The server is shutting down.");
        else
            srv_error_set(&e, 503, "server_error", NULL, "server_overloaded",
                          "The server is overloaded: %d requests are already waiting. Please retry later.",
                          S->opt.max_queue);
        return respond_error(c, rc, &e, NULL);
    }
    rc->job = j; /* the connection's reference */
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    srv_server *S = cls;
    srv_conn *rc = *con_cls;
    if (!rc) {
        /* headers are in: decide what we can before the body */
        rc = xcalloc(1, sizeof *rc);
        *con_cls = rc;
        rc->t0 = sala_time();
        snprintf(rc->method, sizeof rc->method, "%s", method);
        snprintf(rc->path, sizeof rc->path, "%s", url);
        const char *arg;
        rc->route = route_of(url, &arg);
        int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        int is_post = strcmp(method, "POST") == 0;
        int post_route = rc->route == R_CHAT || rc->route == R_COMPL;
        if (rc->route != R_HEALTH && !auth_ok(S, c)) {
            rc->has_err = 1;
            srv_error_set(&rc->err, 401, "invalid_request_error", NULL, "invalid_api_key",
                          S->opt.api_key && MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization")
                              ? "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'."
                              : "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.");
        } else if (rc->route == R_NONE) {
            rc->has_err = 1;
            srv_error_set(&rc->err, 404, "invalid_request_error", NULL, "unknown_url", "Invalid URL (%.16s %.200s).",
                          method, url);
        } else if (post_route ? !is_post : !is_get) {
            rc->has_err = 1;
            rc->allow = post_route ? "POST" : "GET, HEAD";
            srv_error_set(&rc->err, 405, "invalid_request_error", NULL, "method_not_allowed",
                          "Method %.16s is not allowed for %.200s; use %s.", method, url, rc->allow);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long clen = cl ? strtoull(cl, NULL, 10) : 0;
        if (clen > S->opt.max_body) {
            const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
            if (!rc->has_err) {
                rc->has_err = 1;
                srv_error_set(&rc->err, 413, "invalid_request_error", NULL, "request_too_large",
                              "The request body (%llu bytes) is larger than this server's limit of %zu bytes "
                              "(see --max-body).",
                              clen, S->opt.max_body);
            }
            rc->too_big = 1;
            if ((expect && strcasecmp(expect, "100-continue") == 0) || clen / SRV_DRAIN_FACTOR > S->opt.max_body)
                return respond_error(c, rc, &rc->err, rc->allow);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (rc->answered)
            return MHD_YES;
        if (rc->has_err || rc->too_big || rc->overloaded || rc->route == R_HEALTH || rc->route == R_MODELS ||
            rc->route == R_MODEL_ONE) {
            /* drained, not kept; bounded so a body without Content-Length cannot run forever */
            rc->len += n;
            if (rc->len / SRV_DRAIN_FACTOR > S->opt.max_body)
                return MHD_NO;
            if (rc->len > S->opt.max_body)
                rc->too_big = 1;
            return MHD_YES;
        }
        if (rc->len + n > S->opt.max_body) {
            rc->too_big = 1;
            body_release(S, rc);
            rc->len += n;
            return MHD_YES;
        }
        if (rc->len + n + 1 > rc->cap) {
            size_t cap = rc->cap ? rc->cap : 4096;
            while (cap < rc->len + n + 1)
                cap *= 2;
            if (cap > S->opt.max_body + 1)
                cap = S->opt.max_body + 1;
            long long grow = (long long)(cap - rc->cap);
            char *p = NULL;
            if (atomic_fetch_add(&S->body_bytes, grow) + grow <= (long long)body_budget(S))
                p = realloc(rc->body, cap);
            if (!p) {
                atomic_fetch_sub(&S->body_bytes, grow);
                rc->overloaded = 1;
                body_release(S, rc);
                rc->len += n;
                return MHD_YES;
            }
            rc->body = p;
            rc->cap = cap;
        }
        memcpy(rc->body + rc->len, upload, n);
        rc->len += n;
        rc->body[rc->len] = 0;
        return MHD_YES;
    }
    /* the request is complete (or we were resumed) */
    if (rc->answered)
        return MHD_YES;
    if (rc->job)
        return on_resumed(c, rc);
    if (rc->has_err)
        return respond_error(c, rc, &rc->err, rc->allow);
    if (rc->route == R_CHAT || rc->route == R_COMPL)
        return answer_post(S, c, rc);
    const char *arg;
    route_of(url, &arg);
    return answer_get(S, c, rc, arg);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    srv_server *S = cls;
    srv_conn *rc = *con_cls;
    if (!rc)
        return;
    *con_cls = NULL;
    int64_t np = 0, ng = 0;
    const char *fin = "";
    if (rc->job) {
        srv_job *j = rc->job;
        pthread_mutex_lock(&j->mu);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK || j->state != JOB_DONE)
            j->cancelled = 1;
        j->conn = NULL;
        np = j->n_prompt, ng = j->n_gen, fin = j->finish;
        pthread_mutex_unlock(&j->mu);
        srv_job_unref(j);
    }
    if (S->opt.log) {
        static const char *why[] = {"", " (error)", " (timeout)", " (shutdown)", " (read error)", " (client gone)"};
        char tok[96] = "";
        if (rc->job)
            snprintf(tok, sizeof tok, " prompt %" PRId64 " + %" PRId64 " tokens, %s,", np, ng, fin);
        char st[16] = "(no answer)";
        if (rc->status)
            snprintf(st, sizeof st, "%d", rc->status);
        fprintf(stderr, "serve: %s %s -> %s%s %.3f s%s\n", rc->method, rc->path, st, tok, sala_time() - rc->t0,
                (unsigned)toe < 6 ? why[toe] : "");
    }
    body_release(S, rc);
    free(rc);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    srv_server *S = cls;
    if (!S->opt.log)
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    fprintf(stderr, "serve: http: %s\n", msg);
}

/* ---------------------------------------------------------------- start / stop */

static sala_status open_listener(const srv_options *o, int *fd_out, int *port_out, int *v6) {
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(o->host, port, &hints, &res);
    if (rc != 0)
        return sala_set_error(SALA_ERR_ARG, "cannot resolve host '%s': %s", o->host, gai_strerror(rc));
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) {
            *v6 = a->ai_family == AF_INET6;
            break;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return sala_set_error(SALA_ERR_IO, "cannot listen on %s:%d: %s%s", o->host, o->port, strerror(err),
                              err == EADDRINUSE ? " (another server on that port? pick one with --port)" : "");
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return SALA_OK;
}

sala_status srv_start(sala_model *model, const sala_tokenizer *tok, const sala_chat_template *tpl,
                      const srv_options *opt, srv_server **out) {
    *out = NULL;
    if (!model || !tok || !tpl || !opt || !opt->model_id)
        return sala_set_error(SALA_ERR_ARG, "srv_start: model, tokenizer, chat template and model id are required");
    if (opt->parallel < 1 || opt->parallel > 256)
        return sala_set_error(SALA_ERR_ARG, "--parallel must be between 1 and 256 (got %d)", opt->parallel);
    if (opt->max_queue < 0)
        return sala_set_error(SALA_ERR_ARG, "--max-queue must be >= 0");
    if (opt->max_body < 64)
        return sala_set_error(SALA_ERR_ARG, "--max-body must be at least 64 bytes");
    srv_server *S = xcalloc(1, sizeof *S);
    S->opt = *opt;
    S->model = model;
    S->tok = tok;
    S->tpl = tpl;
    sala_model_get_info(model, &S->info);
    pthread_mutex_init(&S->qmu, NULL);
    pthread_cond_init(&S->qcv, NULL);
    S->started = (int64_t)time(NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    S->id_salt = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
    int32_t eos[64];
    int ne = sala_generate_eos_ids(model, tok, eos, 64);
    if (ne > 16)
        ne = 16;
    memcpy(S->eos, eos, (size_t)ne * sizeof *eos);
    S->n_eos = ne;
    int nv = sala_tokenizer_n_vocab(tok);
    for (int i = 0; i < nv; i++) {
        const char *p = sala_tokenizer_piece(tok, i);
        size_t l = p ? strlen(p) : 0;
        if (l > S->max_piece_bytes)
            S->max_piece_bytes = l;
    }

    sala_status st = srv_workers_start(S);
    if (st != SALA_OK) {
        pthread_mutex_destroy(&S->qmu);
        pthread_cond_destroy(&S->qcv);
        free(S);
        return st;
    }
    int fd = -1, v6 = 0;
    st = open_listener(opt, &fd, &S->port, &v6);
    if (st == SALA_OK) {
        unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
        if (v6)
            flags |= MHD_USE_IPv6;
        S->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, S, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, S,
                                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, S,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(opt->timeout_s > 0 ? opt->timeout_s : 0),
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000, MHD_OPTION_END);
        if (!S->d) {
            close(fd);
            st = sala_set_error(SALA_ERR_IO, "cannot start the HTTP daemon on %s:%d", opt->host, S->port);
        }
    }
    if (st != SALA_OK) {
        srv_workers_stop(S);
        pthread_mutex_destroy(&S->qmu);
        pthread_cond_destroy(&S->qcv);
        free(S);
        return st;
    }
    *out = S;
    return SALA_OK;
}

int srv_port(const srv_server *s) {
    return s ? s->port : 0;
}

void srv_stop(srv_server *S) {
    if (!S)
        return;
    MHD_socket lfd = MHD_quiesce_daemon(S->d);
    srv_workers_stop(S);
    /* stopping the daemon with suspended connections is not allowed: every job has been woken by now;
       give MHD a moment to pick the resumed ones up */
    for (int i = 0; i < 500 && atomic_load(&S->n_suspended) > 0; i++)
        usleep(10000);
    usleep(20000);
    MHD_stop_daemon(S->d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    pthread_mutex_destroy(&S->qmu);
    pthread_cond_destroy(&S->qcv);
    free(S);
}
