/* Synchronous service calls with a timeout and a circuit breaker per target:
 * in-process when the target plugin is loaded here, HTTP otherwise. */
#include "gateway.h"
#include "host.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bnb_breaker_t *bnb__breaker_for(bnb_host_t *h, const char *service)
{
    bnb_breaker_t *b = NULL;
    pthread_mutex_lock(&h->breakers_mu);
    for (size_t i = 0; i < h->nbreakers; i++)
        if (strcmp(h->breakers[i].service, service) == 0)
            b = h->breakers[i].b;
    if (b == NULL && h->nbreakers < sizeof(h->breakers) / sizeof(h->breakers[0])) {
        b = bnb__breaker_new(&h->breaker_cfg);
        if (b != NULL) {
            snprintf(h->breakers[h->nbreakers].service, sizeof(h->breakers[0].service), "%s", service);
            h->breakers[h->nbreakers++].b = b;
        }
    }
    pthread_mutex_unlock(&h->breakers_mu);
    return b;
}

void bnb__breakers_export(bnb_host_t *h)
{
    int64_t now = bnb__mono_ms();
    pthread_mutex_lock(&h->breakers_mu);
    for (size_t i = 0; i < h->nbreakers; i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "service=\"%s\"", h->breakers[i].service);
        bnb__metrics_set(h->metrics, "bearbnb_breaker_state", labels,
                         (double)bnb__breaker_state(h->breakers[i].b, now));
    }
    pthread_mutex_unlock(&h->breakers_mu);
}

static bnb_inst_t *local_plugin(bnb_host_t *h, const char *name)
{
    for (size_t i = 0; i < h->nplugins; i++)
        if (strcmp(h->plugins[i]->name, name) == 0)
            return h->plugins[i];
    return NULL;
}

/* 0 and the answer, or <0 when the target did not answer */
static int call_local(bnb_host_t *h, bnb_inst_t *target, const char *method, const char *path, const json_t *body,
                      int *status, json_t **resp)
{
    if (atomic_load(&target->paused))
        return BNB_EAGAIN;
    bnb_req_t r;
    memset(&r, 0, sizeof(r));
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    int m = bnb__router_match(h->router, method, path, plen, &r.match, NULL, 0);
    bnb_route_entry_t *e = m == 200 ? r.match.route : NULL;
    if (e == NULL || e->ctx != target) {
        bnb__route_match_clear(&r.match);
        *status = m == 200 ? 404 : m;
        *resp = NULL;
        return 0;
    }
    r.ctx = target;
    r.route = e;
    r.method = strdup(method);
    r.path = strndup(path, plen);
    r.query = q ? strdup(q + 1) : NULL;
    r.body = body ? json_deep_copy(body) : NULL;
    bnb_exec_t *ex = bnb__exec;
    if (ex != NULL) {
        if (ex->user) {
            snprintf(r.id.sub, sizeof(r.id.sub), "%s", ex->user);
            snprintf(r.id.role, sizeof(r.id.role), "%s", ex->role ? ex->role : "");
            r.has_id = 1;
        }
        r.bearer = ex->bearer ? strdup(ex->bearer) : NULL;
        memcpy(r.exec.request_id, ex->request_id, sizeof(r.exec.request_id));
        memcpy(r.exec.correlation_id, ex->correlation_id, sizeof(r.exec.correlation_id));
        memcpy(r.exec.traceparent, ex->traceparent, sizeof(r.exec.traceparent));
    }
    int allowed = e->who == BNB_ROLE_ANYONE || e->who == BNB_ROLE_SERVICE ||
                  (r.has_id && (e->who == BNB_ROLE_USER || (e->who == BNB_ROLE_HOST && !strcmp(r.id.role, "host")) ||
                                (e->who == BNB_ROLE_GUEST && !strcmp(r.id.role, "guest"))));
    if (!allowed)
        bnb__problem_json(&r, r.has_id ? 403 : 401, NULL, "the caller's identity may not use this route");
    else
        bnb__req_run(&r);
    *status = r.status;
    *resp = r.resp;
    r.resp = NULL;
    bnb__req_free_parts(&r);
    return 0;
}

static int call_remote(bnb_host_t *h, const char *base, const char *method, const char *path, const json_t *body,
                       int *status, json_t **resp)
{
    CURL *c = curl_easy_init();
    if (c == NULL)
        return BNB_ENOMEM;
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", base, path);
    struct curl_slist *hdr = NULL;
    char line[1200];
    bnb_exec_t *ex = bnb__exec;
    if (ex != NULL && ex->bearer) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", ex->bearer);
        hdr = curl_slist_append(hdr, line);
    }
    if (ex != NULL && ex->request_id[0]) {
        snprintf(line, sizeof(line), "X-Request-Id: %s", ex->request_id);
        hdr = curl_slist_append(hdr, line);
    }
    if (ex != NULL && ex->correlation_id[0]) {
        snprintf(line, sizeof(line), "X-Correlation-Id: %s", ex->correlation_id);
        hdr = curl_slist_append(hdr, line);
    }
    if (ex != NULL && ex->traceparent[0]) {
        snprintf(line, sizeof(line), "traceparent: %s", ex->traceparent);
        hdr = curl_slist_append(hdr, line);
    }
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (bnb__gateway_has_secret()) {
        /* service to service: signed like the gateway, so an enforcing service accepts it */
        const char *user = ex && ex->user ? ex->user : "", *role = ex && ex->role ? ex->role : "";
        char sig[200];
        bnb__gateway_sign(BNB_SIGNED_SERVICE, method, path, ex ? ex->request_id : "", user, role, payload,
                          payload ? strlen(payload) : 0, bnb__now_ms() / 1000, sig, sizeof(sig));
        snprintf(line, sizeof(line), "X-Bnb-Gateway: %s", sig);
        hdr = curl_slist_append(hdr, line);
        if (user[0]) {
            snprintf(line, sizeof(line), "X-Bnb-User: %s", user);
            hdr = curl_slist_append(hdr, line);
            snprintf(line, sizeof(line), "X-Bnb-Role: %s", role);
            hdr = curl_slist_append(hdr, line);
        }
    }
    if (payload != NULL) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    }
    bnb_buf_t b = {NULL, 0, 4 * 1024 * 1024};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* sent as signed */
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->call_timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->call_timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, bnb__curl_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode cc = curl_easy_perform(c);
    int rc = 0;
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        rc = BNB_ETIMEDOUT;
    } else if (cc != CURLE_OK) {
        bnb__log(BNB_LOG_WARN, "call %s %s failed: %s", method, url, curl_easy_strerror(cc));
        rc = BNB_EAGAIN;
    } else {
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        *status = (int)code;
        *resp = b.len ? json_loadb(b.p, b.len, 0, NULL) : NULL;
    }
    free(b.p);
    free(payload);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return rc;
}

int bnb__call(bnb_ctx_t *pctx, const char *service, const char *method, const char *path, const json_t *body,
              int *status, json_t **resp)
{
    bnb_inst_t *ctx = pctx->inst;
    bnb_host_t *h = ctx->host;
    *status = 0;
    *resp = NULL;
    if (pctx->exec != NULL)
        pctx->exec->no_cache = 1; /* the answer depends on another service */
    if (service == NULL || method == NULL || path == NULL || path[0] != '/')
        return BNB_EINVAL;
    bnb_breaker_t *b = bnb__breaker_for(h, service);
    char labels[96];
    if (b == NULL || !bnb__breaker_allow(b, bnb__mono_ms())) {
        snprintf(labels, sizeof(labels), "service=\"%s\",outcome=\"rejected\"", service);
        bnb__metrics_add(h->metrics, "bearbnb_calls_total", labels, 1);
        bnb__breakers_export(h);
        return BNB_EAGAIN;
    }
    int64_t t0 = bnb__mono_ms();
    bnb_inst_t *target = local_plugin(h, service);
    int rc;
    if (target != NULL) {
        rc = call_local(h, target, method, path, body, status, resp);
    } else {
        char key[64];
        snprintf(key, sizeof(key), "services.%s.url", service);
        const char *base = bnb__config_str(h->cfg, key);
        if (base == NULL || base[0] == '\0') {
            bnb__log(BNB_LOG_ERROR, "call to %s: not loaded here and %s is not set", service,
                     bnb__config_env_name(key));
            rc = BNB_EAGAIN;
        } else {
            rc = call_remote(h, base, method, path, body, status, resp);
        }
    }
    int64_t took = bnb__mono_ms() - t0;
    int ok = rc == 0 && *status < 500 && took <= h->call_timeout_ms;
    if (rc == 0 && !ok && *status >= 500) {
        json_decref(*resp);
        *resp = NULL;
        rc = BNB_EAGAIN;
    }
    bnb__breaker_record(b, ok, bnb__mono_ms());
    snprintf(labels, sizeof(labels), "service=\"%s\",outcome=\"%s\"", service,
             ok                    ? "success"
             : rc == BNB_ETIMEDOUT ? "timeout"
                                   : "failure");
    bnb__metrics_add(h->metrics, "bearbnb_calls_total", labels, 1);
    bnb__breakers_export(h);
    return rc;
}

size_t bnb__curl_collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    bnb_buf_t *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > b->max)
        return 0; /* libcurl fails the transfer */
    char *np = realloc(b->p, b->len + n + 1);
    if (np == NULL)
        return 0;
    memcpy(np + b->len, ptr, n);
    b->p = np;
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}
