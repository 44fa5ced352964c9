/* internal.h — shared state of the HTTP layer (http.c) and the slot workers (worker.c) of `sala serve`.
 *
 * Design note
 * -----------
 * Threads. libmicrohttpd runs ONE internal polling thread (epoll/poll, MHD_USE_AUTO_INTERNAL_THREAD) that
 * accepts, reads headers and bodies, parses/validates JSON and writes responses; it never runs the model.
 * `--parallel N` worker threads each own one sala_session (a "slot"). A request that passed validation
 * becomes a srv_job, is appended to one FIFO queue (fair: first come, first served by whichever slot frees
 * first) and its connection is suspended (MHD_suspend_connection), so the polling thread goes on serving
 * everyone else while the prefill runs. More than --max-queue waiting jobs: 503 at once.
 *
 * Job handoff. The worker tokenizes (a prompt past the context gives a 400 from here), resets its session
 * and runs sala_generate(). Results flow back through the job, under job->mu:
 *   - non-streaming: the worker stores status + JSON body, marks the job DONE and resumes the connection;
 *     MHD calls the access handler again, which queues that body;
 *   - streaming: the worker sets job->sse and appends SSE events ("data: {...}\n\n") to job->out and
 *     resumes the connection; the access handler queues a chunked response whose content reader hands out
 *     job->out; when the reader finds nothing to send it suspends the connection itself (allowed from a
 *     content reader) and returns 0; the worker's next append resumes it. DONE + empty buffer = end of
 *     stream (the last event is "data: [DONE]").
 * The suspend/resume protocol: whoever suspends sets job->suspended = 1 while holding job->mu (the MHD thread
 * only); whoever wants to resume flips it 1 -> 0 under job->mu and then calls MHD_resume_connection()
 * outside the lock (job_wake()). So a connection is resumed exactly once per suspension, never when it is
 * not suspended, and a suspended connection cannot be closed under our feet (MHD does not touch it).
 *
 * Disconnects. Three paths, whichever comes first, all ending in job->cancelled = 1:
 *   1. MHD closes a connection (send error, timeout) -> the request-completed callback marks the job
 *      cancelled and drops the connection's reference;
 *   2. while a connection is suspended MHD does not watch it, so the worker checks the socket itself: a
 *      non-blocking recv(MSG_PEEK) returning 0 (FIN) or an error (RST) means the client is gone. This runs
 *      before a queued job starts, in the prefill's progress callback (each chunk) and after every token;
 *      the fd is valid because the connection cannot be closed while suspended;
 *   3. server shutdown cancels everything.
 * A cancelled job stops at the next token or prefill chunk (sala_generate's callback / the session's
 * progress callback return non-zero), the worker takes the next job at once, and the connection is
 * resumed so MHD closes it.
 *
 * Lifetimes. A job is reference counted: the connection (dropped in the request-completed callback), the
 * queue/worker (dropped when the worker is done with it) and the SSE response (dropped by the content
 * reader's free callback). Lock order: queue mutex, then job mutex; MHD is never called with job->mu held
 * except MHD_suspend_connection from the MHD thread itself.
 *
 * Shutdown (srv_stop): quiesce the listener, cancel queued jobs (they answer 503) and running ones, join
 * the workers, wait until no connection is suspended (stopping MHD with suspended connections is not
 * allowed), then stop the daemon. */
#ifndef SALA_SRV_INTERNAL_H
#define SALA_SRV_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "sala_generate.h"
#include "server/request.h"
#include "server/server.h"

typedef enum { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE } srv_job_state;

typedef struct srv_job srv_job;
struct srv_job {
    pthread_mutex_t mu;
    int refs;
    struct srv_server *srv;
    srv_request req;
    struct MHD_Connection *conn; /* NULL once the request completed */
    int fd;                      /* the connection's socket, peeked only while suspended */
    int suspended;
    int cancelled;
    srv_job_state state;
    int sse;    /* answer is an event stream (job->out) */
    int status; /* answer when !sse and DONE: status + body (NULL = none: just close) */
    char *body;
    size_t body_len;
    char *out; /* SSE bytes not yet handed to MHD: [out_off, out_len) */
    size_t out_len, out_off, out_cap;
    char id[40];
    int64_t created;
    int64_t n_prompt, n_gen; /* for the log */
    const char *finish;
    srv_job *next; /* queue link */
};

typedef struct srv_worker {
    struct srv_server *srv;
    int index;
    pthread_t th;
    sala_session *sess;
    srv_job *job; /* current job (guarded by the queue mutex for readers other than us) */
    /* per-request generation state */
    sala_think *think;
    char *acc[2]; /* non-streaming: accumulated content [0] and reasoning [1] */
    size_t acc_len[2], acc_cap[2];
    char *ev; /* streaming: events produced by the current token */
    size_t ev_len, ev_cap;
    int64_t n_tok;
    int stream_open; /* the current job's SSE stream has started */
    double t_sent;   /* when the stream last got bytes (keep-alive comments) */
} srv_worker;

struct srv_server {
    srv_options opt;
    sala_model *model;
    const sala_tokenizer *tok;
    const sala_chat_template *tpl;
    sala_model_info info;
    int64_t n_ctx;
    size_t max_piece_bytes; /* longest token piece: bounds the tokens of a text from below */
    int32_t eos[16];
    int n_eos;
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    srv_job *qhead, *qtail;
    int qlen, busy, stopping;
    srv_worker *workers;
    int n_workers;
    atomic_int n_suspended;
    atomic_llong body_bytes; /* request bodies buffered right now (http.c) */
    atomic_ullong id_counter;
    uint64_t id_salt;
    int64_t started;
};

/* worker.c */
sala_status srv_workers_start(struct srv_server *S);
void srv_workers_stop(struct srv_server *S); /* cancels and joins; queued jobs answer 503 */
/* Appends to the FIFO queue and suspends the connection; -1 when the queue is full or the server stops. */
int srv_queue_submit(struct srv_server *S, srv_job *j);
srv_job *srv_job_new(struct srv_server *S, srv_request *req, struct MHD_Connection *c);
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j);
/* Under j->mu: flips suspended 1 -> 0 and returns 1 when the caller must call MHD_resume_connection. */
int srv_job_take_suspended(srv_job *j);
/* Resumes the connection if it is suspended (takes j->mu). */
void srv_job_wake(srv_job *j);
/* A ready-made error answer (status + error JSON) for a job that has not started streaming. */
void srv_job_fail(srv_job *j, const srv_error *e);

#endif
