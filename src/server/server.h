/* server.h — the OpenAI-compatible HTTP server behind `sala serve` (tools/cmd_serve.c).
 *
 * srv_start() binds the listening socket, starts libmicrohttpd's polling thread and one worker thread per
 * slot (each worker owns one sala_session), and returns at once; srv_stop() drains and frees everything.
 * The design (threads, queue, suspended connections, disconnect detection) is described in
 * src/server/internal.h; the endpoints and their JSON in docs/SERVER.md. */
#ifndef SALA_SRV_SERVER_H
#define SALA_SRV_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "sala.h"
#include "sala_chat.h"
#include "sala_tokenizer.h"

typedef struct {
    const char *host;     /* address to bind ("127.0.0.1", "::1", "0.0.0.0", a host name) */
    int port;             /* 0 = any free port (srv_port() tells which) */
    const char *api_key;  /* NULL = no authentication */
    const char *model_id; /* the name served in /v1/models and accepted in "model" */
    int parallel;         /* slots = sessions = worker threads */
    int max_queue;        /* requests waiting for a slot before new ones get 503 */
    size_t max_body;      /* request bodies above this get 413 */
    int timeout_s;        /* idle connection timeout (not counting time waiting for the engine) */
    double keep_alive_s;  /* SSE comment on a stream silent this long (0 = never) */
    int64_t n_ctx;        /* context of each session (0 = the model's) */
    int chunk;            /* prefill chunk (0 = default) */
    int log;              /* 1 = one line per request on stderr */
} srv_options;

srv_options srv_default_options(void);

typedef struct srv_server srv_server;

/* model, tok and tpl stay owned by the caller and must outlive the server. */
sala_status srv_start(sala_model *model, const sala_tokenizer *tok, const sala_chat_template *tpl,
                      const srv_options *opt, srv_server **out);
int srv_port(const srv_server *s);
/* Stops accepting, cancels queued and running requests, closes every connection, joins the threads. */
void srv_stop(srv_server *s);

#endif
