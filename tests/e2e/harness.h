/*
 * End-to-end test harness: run a real `bearbnb` process and talk to it over
 * real sockets with libcurl (HTTP/1.1 or HTTP/2 with prior knowledge).
 *
 * Environment (set by tests/meson.build `e2e_env`):
 *   BEARBNB_BIN         the program (required)
 *   BEARBNB_PLUGIN_DIR  passed through to the host unchanged
 *   BNB_E2E_KEEP=1      keep the temp data dir (for debugging); its path is printed
 *   BNB_E2E_TOPOLOGY    all-in-one (default) or distributed (see below)
 *
 * Typical test:
 *
 *     e2e_host_t *h = NULL;
 *     assert_int_equal(e2e_host_start(&h, NULL), 0);      // fresh dir + port, /readyz 200
 *     char *tok = e2e_token(h, "alice", "host", 0);       // caller frees with free()
 *     e2e_resp_t r;
 *     assert_int_equal(e2e_call(h, E2E_HTTP2, "POST", "/rooms", tok, "{...}", &r), 0);
 *     assert_int_equal(r.status, 201);
 *     assert_int_equal(r.http_version, 20);
 *     e2e_resp_free(&r);
 *     free(tok);
 *     assert_int_equal(e2e_host_stop(h), 0);              // SIGTERM; exit status must be 0
 *     e2e_host_free(h);                                   // removes the temp dir
 *
 * Every function here returns 0 or -1 (or the value documented), prints a
 * reason on stderr on failure, and never aborts the test by itself, so it can
 * be used in cmocka setup/teardown as well as in test bodies.
 * Thread-safety: e2e_http/e2e_call and e2e_client_* may be used from several
 * threads at once (one e2e_client_t per thread). The host-control functions
 * (start/stop/kill/restart/free) belong to one thread.
 */
#ifndef BNB_E2E_HARNESS_H
#define BNB_E2E_HARNESS_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- host process --------------------------------------------------------- */

typedef struct e2e_host e2e_host_t;

typedef struct e2e_host_opts {
    /* Extra environment for the host, "NAME=value" strings, NULL-terminated
     * (override inherited values), or NULL. */
    const char *const *env;
    /* Extra command-line arguments after --listen/--data, NULL-terminated, or NULL. */
    const char *const *args;
    /* Bound for /readyz == 200; 0 = 15000 ms. */
    int ready_timeout_ms;
    /* 1: do not wait for readiness (e2e_host_wait_ready can be called later). */
    int no_wait;
    /* Distributed topology only: processes per service, 1 (0 = 1) or 2. With 2,
     * a second stack "room2", "reservation2", "payment2", "dashboard2" and
     * "edge2" runs beside the first: each second process shares its service's
     * database and Kafka consumer group, reservation2 calls payment2 and room2,
     * edge2 routes to the second stack (reach it with e2e_host_part(h, "edge2")). */
    int replicas;
} e2e_host_opts_t;

/* Make a fresh temp data dir, pick a free loopback port, spawn
 * `$BEARBNB_BIN --listen 127.0.0.1:<port> --data <dir> <args...>` with stdout
 * and stderr going to <dir>/host.log, and wait for GET /readyz == 200.
 * On failure *out is NULL, the log tail is printed, everything is cleaned up. */
int e2e_host_start(e2e_host_t **out, const e2e_host_opts_t *opts);
/* Poll GET /readyz until 200 (0) or timeout_ms passes / the process exits (-1,
 * log tail printed). */
int e2e_host_wait_ready(e2e_host_t *h, int timeout_ms);
/* Send SIGTERM and wait (up to 30 s) for the process. Returns its exit status
 * (0..255; 23 = ASan/LSan report), 128+signal when killed by a signal, or -1
 * when it did not exit in time (it is then SIGKILLed) or was not running.
 * On a non-zero result the log tail is printed. */
int e2e_host_stop(e2e_host_t *h);
/* Send SIGTERM without waiting (for "SIGTERM mid-burst" tests); then call
 * e2e_host_wait_exit. */
int e2e_host_signal(e2e_host_t *h, int sig);
/* Wait up to timeout_ms for the process after a signal; same result as e2e_host_stop. */
int e2e_host_wait_exit(e2e_host_t *h, int timeout_ms);
/* SIGKILL and reap (a crash). */
void e2e_host_kill(e2e_host_t *h);
/* Start again on the same data dir, port, env and args (after stop/kill) and
 * wait for readiness. 0 or -1. */
int e2e_host_restart(e2e_host_t *h);
/* Kill the process if still running, remove the temp dir, free. NULL ok. */
void e2e_host_free(e2e_host_t *h);

int e2e_host_port(const e2e_host_t *h);
pid_t e2e_host_pid(const e2e_host_t *h); /* 0 when not running */
const char *e2e_host_dir(const e2e_host_t *h);
const char *e2e_host_log_path(const e2e_host_t *h);
/* The last `max` bytes of the host log, NUL-terminated; caller frees with free(). */
char *e2e_host_log_tail(const e2e_host_t *h, size_t max);

/* Mint a bearer token: `$BEARBNB_BIN token --data <dir> --sub <sub> --role <role>
 * [--ttl <ttl_s>]` (ttl_s 0 = the default). Caller frees with free(); NULL on failure. */
char *e2e_token(const e2e_host_t *h, const char *sub, const char *role, long ttl_s);

/* Sign arbitrary claims (a JSON object text, e.g. an already expired `exp`,
 * a wrong `iss`) with HS256 and the host's dev key <dir>/jwt.key (hex as
 * the host writes it, else raw bytes). The key file must exist (start the
 * host or mint a token first). Caller frees with free(); NULL on failure. */
char *e2e_token_claims(const e2e_host_t *h, const char *claims_json);

/* ---- distributed topology --------------------------------------------------
 * With BNB_E2E_TOPOLOGY=distributed (and BNB_TEST_KAFKA, BNB_TEST_MYSQL_URL,
 * BNB_TEST_MONGO_URL from `scripts/infra env`), e2e_host_start runs the
 * cluster layout instead of one process: one `bearbnb` per plugin (room,
 * reservation and notification on MySQL, payment and dashboard on MongoDB
 * (BNB_E2E_ALL_MONGO=1: every service on MongoDB), each with its own
 * fresh database; every channel on Kafka under a fresh kafka.namespace;
 * gateway.enforce on) plus the edge (no plugin, gateway routes to the
 * services), all sharing one signing key (<dir>/jwt.key) and one gateway
 * secret. opts->env and opts->args go to every process (the topology's own
 * settings win); ready_timeout_ms defaults to 60000. The rest of the API is
 * unchanged:
 *   - e2e_host_port/pid/log_path/log_tail name the edge; e2e_host_dir is the
 *     top directory (jwt.key, and one sub-directory per process);
 *   - e2e_http/e2e_call go to the edge, except: POST /admin/plugins/{name}/...
 *     goes to that plugin's process, /admin/events to the reservation
 *     process, and GET /metrics and GET /admin/dead-letters gather every
 *     running process (metrics texts concatenated, services first, each
 *     preceded by "# e2e process <name>"; dead-letter arrays joined);
 *   - stop/signal/wait_exit/kill act on every process (the first non-zero
 *     exit status is returned); restart starts every process that is not
 *     running and waits until all are ready;
 *   - e2e_host_free also drops the databases (best effort; Kafka topics of the
 *     namespace stay);
 *   - the edge reaches payment over h2c (as the lead's deployment does);
 *     BNB_E2E_H2C=0 makes it plain HTTP/1.1 instead.
 * An e2e_client_t only talks to the port it was made for. */

/* 1 when h runs the distributed topology. */
int e2e_host_distributed(const e2e_host_t *h);
/* One process of a distributed topology: "room", "reservation", "payment",
 * "dashboard", "notification" or "edge" (borrowed, owned by h); NULL in all-in-one mode or for
 * another name. Every e2e_host_* function works on it for per-process
 * crashes: e2e_host_kill(part), e2e_host_restart(part) (same port, data dir,
 * database and namespace), e2e_host_pid(part), e2e_host_port(part),
 * e2e_http(part, ...) (straight to that process, no routing). Never pass it
 * to e2e_host_free. */
e2e_host_t *e2e_host_part(e2e_host_t *h, const char *name);

/* ---- HTTP ------------------------------------------------------------------ */

typedef enum {
    E2E_HTTP1 = 1, /* HTTP/1.1 */
    /* HTTP/2 over cleartext with prior knowledge. libcurl < 8.0 cannot reuse
     * such a connection (curl issue #10634: "Error in the HTTP2 framing
     * layer" on the second request), so there every request opens a fresh
     * connection; use E2E_HTTP2_UPGRADE for a persistent HTTP/2 connection. */
    E2E_HTTP2 = 2,
    /* HTTP/2 reached by an HTTP/1.1 `Upgrade: h2c` on the first request
     * (make that one a GET without body), then reused by an e2e_client_t. */
    E2E_HTTP2_UPGRADE = 3
} e2e_proto_t;

typedef struct e2e_resp {
    long status;          /* HTTP status, 0 when no response */
    int http_version;     /* version actually used: 10, 11, 20 (0 = none) */
    int curl_code;        /* CURLE_OK (0) or the transport error */
    long new_connections; /* connections opened for this request (0 = reused) */
    char error[256];      /* transport error text when curl_code != 0 */
    char content_type[128];
    char retry_after[64];
    char allow[128];
    char location[256];
    char replayed[16]; /* Idempotent-Replayed (issue 16): "true" on a stored answer */
    char *body;        /* NUL-terminated (possibly empty), caller frees via e2e_resp_free */
    size_t body_len;
    json_t *json; /* parsed body, or NULL when not JSON; freed by e2e_resp_free */
} e2e_resp_t;

typedef struct e2e_req {
    e2e_proto_t proto;
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* "/rooms?city=Bern" (appended to http://127.0.0.1:<port>) */
    const char *token;  /* bearer token, or NULL */
    const char *body;   /* request body, or NULL (none) */
    size_t body_len;    /* 0 = strlen(body) */
    /* Extra "Name: value" headers, NULL-terminated, or NULL. A body is sent
     * with "Content-Type: application/json" unless a Content-Type is given
     * here; "Authorization: ..." here replaces the bearer token. */
    const char *const *headers;
    long timeout_ms; /* 0 = 10000 */
} e2e_req_t;

/* A reusable connection (one curl easy handle). Not shared between threads. */
typedef struct e2e_client e2e_client_t;
e2e_client_t *e2e_client_new(int port);
void e2e_client_free(e2e_client_t *c);
/* Perform one request. Returns 0 when a complete HTTP response arrived, -1
 * on a transport error (out->curl_code/error say which). *out is always
 * initialised and must be released with e2e_resp_free. */
int e2e_client_do(e2e_client_t *c, const e2e_req_t *rq, e2e_resp_t *out);

/* One request on a fresh connection to h. Same result as e2e_client_do. */
int e2e_http(const e2e_host_t *h, const e2e_req_t *rq, e2e_resp_t *out);
/* Shorthand for e2e_http. body is JSON text or NULL. */
int e2e_call(const e2e_host_t *h, e2e_proto_t proto, const char *method, const char *path, const char *token,
             const char *body, e2e_resp_t *out);
void e2e_resp_free(e2e_resp_t *r);

/* 1 when r is an RFC 7807 problem: the status, a Content-Type starting with
 * application/problem+json, and a JSON object with string type/title/detail
 * and integer status == `status`. Prints what is wrong when 0. */
int e2e_is_problem(const e2e_resp_t *r, long status);

/* ---- raw sockets (requests byte for byte, frames by hand) -------------------- */

/* TCP connection to 127.0.0.1:port (TCP_NODELAY), or -1. */
int e2e_raw_connect(int port);
/* Send all of buf; 0 or -1. */
int e2e_raw_send(int fd, const void *buf, size_t len);
/* Read until the peer closes (*closed = 1) or nothing comes for idle_ms.
 * NUL-terminates; returns the bytes read. */
size_t e2e_raw_read(int fd, char *buf, size_t cap, int idle_ms, int *closed);

/* ---- time ------------------------------------------------------------------ */

/* Call cond(arg) every interval_ms (0 = 50) until it returns non-zero (0) or
 * timeout_ms passes (-1). */
int e2e_wait_until(int timeout_ms, int interval_ms, int (*cond)(void *arg), void *arg);
/* Monotonic milliseconds. */
long long e2e_now_ms(void);

#endif
