/*
 * BearBnB against a real Keycloak (scripts/infra up keycloak; BNB_TEST_KEYCLOAK_URL
 * and the admin credentials come from `scripts/infra env`):
 *   - tokens from Keycloak's token endpoint (realm `bearbnb`, client
 *     `bearbnb-tests`, users alice/host and bob/guest) drive the booking saga
 *     through the gateway in the distributed topology;
 *   - a token of another realm, one for another audience (client `other-app`)
 *     and an expired one are refused with 401 problem+json;
 *   - a key rotation done through Keycloak's admin REST API (a new
 *     rsa-generated key provider with a higher priority, the old one disabled)
 *     is picked up by the running gateway, and the old key's tokens stop working.
 * Realms this test creates are named bnbt<pid>..., made from
 * scripts/infra.d/keycloak-realm.json (BNB_KEYCLOAK_REALM_FILE) and deleted at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GOOD_CARD "4111111111111111"

static char KC[256]; /* http://127.0.0.1:8180 */
static char ADMIN_USER[64], ADMIN_PASS[64];
static char REALM_FILE[1024]; /* the project's realm file */

/* ---- a tiny HTTP client for Keycloak -------------------------------------------- */

typedef struct buf {
    char *p;
    size_t n;
} buf_t;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf_t *b = ud;
    size_t n = size * nmemb;
    char *q = realloc(b->p, b->n + n + 1);
    if (!q)
        return 0;
    memcpy(q + b->n, ptr, n);
    b->p = q;
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* One request to Keycloak. Returns the HTTP status (0 on a transport error);
 * *body (may be NULL) gets the answer, caller frees. */
static long kc_http(const char *method, const char *path, const char *bearer, const char *ctype, const char *data,
                    char **body)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hd = NULL;
    buf_t b = {0};
    char url[1024], h[4096];
    long status = 0;
    if (!c)
        return 0;
    snprintf(url, sizeof url, "%s%s", KC, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (bearer) {
        snprintf(h, sizeof h, "Authorization: Bearer %s", bearer);
        hd = curl_slist_append(hd, h);
    }
    if (data) {
        snprintf(h, sizeof h, "Content-Type: %s", ctype);
        hd = curl_slist_append(hd, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        print_message("keycloak: %s %s: transport error\n", method, url);
    curl_slist_free_all(hd);
    curl_easy_cleanup(c);
    if (body)
        *body = b.p ? b.p : strdup("");
    else
        free(b.p);
    return status;
}

/* An access token by the password grant; NULL (reason printed) on failure. */
static char *kc_token(const char *realm, const char *client, const char *secret, const char *user)
{
    char path[256], form[512], *body = NULL, *tok = NULL;
    snprintf(path, sizeof path, "/realms/%s/protocol/openid-connect/token", realm);
    snprintf(form, sizeof form,
             "grant_type=password&client_id=%s&client_secret=%s&username=%s&password=%s&scope=openid", client, secret,
             user, user);
    long st = kc_http("POST", path, NULL, "application/x-www-form-urlencoded", form, &body);
    json_t *j = st == 200 ? json_loads(body, 0, NULL) : NULL;
    const char *t = json_string_value(json_object_get(j, "access_token"));
    if (t)
        tok = strdup(t);
    else
        print_message("keycloak token %s/%s/%s: HTTP %ld %s\n", realm, client, user, st, body);
    json_decref(j);
    free(body);
    return tok;
}

static char *admin_token(void)
{
    char form[256], *body = NULL, *tok = NULL;
    snprintf(form, sizeof form, "grant_type=password&client_id=admin-cli&username=%s&password=%s", ADMIN_USER,
             ADMIN_PASS);
    long st = kc_http("POST", "/realms/master/protocol/openid-connect/token", NULL, "application/x-www-form-urlencoded",
                      form, &body);
    json_t *j = st == 200 ? json_loads(body, 0, NULL) : NULL;
    const char *t = json_string_value(json_object_get(j, "access_token"));
    if (t)
        tok = strdup(t);
    else
        print_message("keycloak admin token: HTTP %ld %s\n", st, body);
    json_decref(j);
    free(body);
    return tok;
}

/* The decoded JSON of a JWT's part 0 (header) or 1 (claims). */
static json_t *jwt_part(const char *tok, int part)
{
    const char *p = tok;
    for (int i = 0; i < part; i++)
        p = strchr(p, '.') + 1;
    size_t n = strcspn(p, ".");
    unsigned char *raw = malloc(n + 4);
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
                : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
                : ch >= '0' && ch <= '9' ? ch - '0' + 52
                : ch == '-'              ? 62
                : ch == '_'              ? 63
                                         : -1;
        if (v < 0)
            continue;
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            raw[o++] = (unsigned char)(acc >> bits);
        }
    }
    json_t *j = json_loadb((const char *)raw, o, 0, NULL);
    free(raw);
    return j;
}

static void claim(const char *tok, int part, const char *name, char *out, size_t outlen)
{
    json_t *j = jwt_part(tok, part);
    snprintf(out, outlen, "%s", json_string_value(json_object_get(j, name)) ?: "");
    json_decref(j);
}

/* A fresh realm from the project's realm file: named `name`, its own keys;
 * `short_client` adds a client whose tokens live 2 s. 0 or -1. */
static int realm_create(const char *admin, const char *name, int short_client)
{
    json_error_t e;
    json_t *r = json_load_file(REALM_FILE, 0, &e);
    if (!r) {
        print_message("cannot read %s: %s\n", REALM_FILE, e.text);
        return -1;
    }
    json_object_set_new(r, "realm", json_string(name));
    if (short_client) {
        json_t *clients = json_object_get(r, "clients");
        json_t *c = json_deep_copy(json_array_get(clients, 1)); /* bearbnb-tests */
        json_object_set_new(c, "clientId", json_string("bearbnb-short"));
        json_object_set_new(c, "attributes", json_pack("{s:s}", "access.token.lifespan", "2"));
        json_array_append_new(clients, c);
    }
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    char *body = NULL;
    long st = kc_http("POST", "/admin/realms", admin, "application/json", text, &body);
    if (st != 201)
        print_message("create realm %s: HTTP %ld %s\n", name, st, body);
    free(text);
    free(body);
    return st == 201 ? 0 : -1;
}

static void realm_delete(const char *name)
{
    char path[256];
    char *admin = admin_token();
    snprintf(path, sizeof path, "/admin/realms/%s", name);
    if (admin)
        kc_http("DELETE", path, admin, NULL, NULL, NULL);
    free(admin);
}

/* ---- BearBnB helpers -------------------------------------------------------------- */

static void date_in(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static const char ROOM[] =
    "{\"name\":\"Fjord cabin\",\"description\":\"by the water\",\"city\":\"Bergen\",\"pricePerNight\":100,"
    "\"capacity\":2}";

static long call(e2e_host_t *h, const char *method, const char *path, const char *tok, const char *body, json_t **json)
{
    e2e_resp_t r;
    e2e_call(h, E2E_HTTP1, method, path, tok, body, &r);
    long st = r.status;
    if (json)
        *json = r.json ? json_incref(r.json) : NULL;
    if (st == 401 && !e2e_is_problem(&r, 401))
        st = -401; /* a 401 that is not problem+json fails the caller's check */
    e2e_resp_free(&r);
    return st;
}

typedef struct env {
    char v[4][512];
    const char *p[5];
} env_t;

static const char *const *auth_env(env_t *e, const char *realm, int leeway)
{
    snprintf(e->v[0], sizeof e->v[0], "BEARBNB_AUTH_JWKS_URL=%s/realms/%s/protocol/openid-connect/certs", KC, realm);
    snprintf(e->v[1], sizeof e->v[1], "BEARBNB_AUTH_ISSUER=%s/realms/%s", KC, realm);
    snprintf(e->v[2], sizeof e->v[2], "BEARBNB_AUTH_AUDIENCE=bearbnb");
    snprintf(e->v[3], sizeof e->v[3], "BEARBNB_AUTH_LEEWAY_S=%d", leeway);
    for (int i = 0; i < 4; i++)
        e->p[i] = e->v[i];
    e->p[4] = NULL;
    return e->p;
}

/* ---- the tests ------------------------------------------------------------------- */

typedef struct resv_wait {
    e2e_host_t *h;
    const char *path, *tok, *want;
} resv_wait_t;

static int resv_is(void *arg)
{
    resv_wait_t *w = arg;
    json_t *j = NULL;
    long st = call(w->h, "GET", w->path, w->tok, NULL, &j);
    int ok = st == 200 && strcmp(json_string_value(json_object_get(j, "status")) ?: "", w->want) == 0;
    json_decref(j);
    return ok;
}

/* The booking saga through the edge of the distributed topology, every call
 * with a Keycloak token; then the tokens BearBnB must refuse. */
static void test_distributed_saga_with_keycloak_tokens(void **state)
{
    (void)state;
    char other[64];
    snprintf(other, sizeof other, "bnbt%dother", (int)getpid());
    char *admin = admin_token();
    assert_non_null(admin);
    assert_int_equal(realm_create(admin, other, 0), 0);

    env_t env;
    e2e_host_opts_t o = {.env = auth_env(&env, "bearbnb", 30)};
    setenv("BNB_E2E_TOPOLOGY", "distributed", 1);
    e2e_host_t *h = NULL;
    int started = e2e_host_start(&h, &o);
    unsetenv("BNB_E2E_TOPOLOGY");
    assert_int_equal(started, 0);
    assert_true(e2e_host_distributed(h));

    char *alice = kc_token("bearbnb", "bearbnb-tests", "bearbnb-tests-secret", "alice");
    char *bob = kc_token("bearbnb", "bearbnb-tests", "bearbnb-tests-secret", "bob");
    assert_non_null(alice);
    assert_non_null(bob);
    char alice_sub[128], bob_sub[128];
    claim(alice, 1, "sub", alice_sub, sizeof alice_sub);
    claim(bob, 1, "sub", bob_sub, sizeof bob_sub);

    /* a host lists a room: its hostId is the Keycloak user id */
    json_t *room = NULL;
    assert_int_equal(call(h, "POST", "/rooms", alice, ROOM, &room), 201);
    const char *rid = json_string_value(json_object_get(room, "id"));
    assert_non_null(rid);
    assert_string_equal(json_string_value(json_object_get(room, "hostId")), alice_sub);
    /* roles come from realm_access.roles: the guest cannot list rooms */
    assert_int_equal(call(h, "POST", "/rooms", bob, ROOM, NULL), 403);

    /* the guest books and pays */
    char in[11], out[11], body[512], path[256];
    date_in(30, in);
    date_in(33, out);
    snprintf(body, sizeof body,
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":2,\"card\":\"%s\"}", rid, in, out,
             GOOD_CARD);
    json_t *res = NULL;
    long st = call(h, "POST", "/reservations", bob, body, &res);
    assert_true(st == 201 || st == 202);
    const char *resid = json_string_value(json_object_get(res, "id"));
    assert_non_null(resid);
    snprintf(path, sizeof path, "/reservations/%s", resid);
    resv_wait_t w = {h, path, bob, "CONFIRMED"};
    assert_int_equal(e2e_wait_until(30000, 200, resv_is, &w), 0);
    /* the room's host sees it, with the guest's Keycloak id */
    json_t *seen = NULL;
    assert_int_equal(call(h, "GET", path, alice, NULL, &seen), 200);
    assert_string_equal(json_string_value(json_object_get(seen, "guestId")) ?: "", bob_sub);
    json_decref(seen);
    /* the guest cancels: refunded, CANCELLED */
    assert_int_equal(call(h, "DELETE", path, bob, NULL, NULL), 202);
    w.want = "CANCELLED";
    assert_int_equal(e2e_wait_until(30000, 200, resv_is, &w), 0);

    /* refused: a token of another realm (same users, same client, its own keys and issuer) */
    char *foreign = kc_token(other, "bearbnb-tests", "bearbnb-tests-secret", "alice");
    assert_non_null(foreign);
    assert_int_equal(call(h, "POST", "/rooms", foreign, ROOM, NULL), 401);
    /* refused: a token of this realm for another audience */
    char *aud = kc_token("bearbnb", "other-app", "other-app-secret", "alice");
    assert_non_null(aud);
    json_t *ac = jwt_part(aud, 1);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(ac, "aud"), i, a) assert_string_not_equal(json_string_value(a), "bearbnb");
    json_decref(ac);
    assert_int_equal(call(h, "POST", "/rooms", aud, ROOM, NULL), 401);
    /* the good token still works after those */
    assert_int_equal(call(h, "GET", path, bob, NULL, NULL), 200);

    json_decref(room);
    json_decref(res);
    free(alice);
    free(bob);
    free(foreign);
    free(aud);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
    realm_delete(other);
    free(admin);
}

/* Rotation through the admin REST API while the gateway runs; expiry. */
static void test_key_rotation_and_expiry(void **state)
{
    (void)state;
    char realm[64], path[512];
    snprintf(realm, sizeof realm, "bnbt%drot", (int)getpid());
    char *admin = admin_token();
    assert_non_null(admin);
    assert_int_equal(realm_create(admin, realm, 1), 0);

    env_t env;
    e2e_host_opts_t o = {.env = auth_env(&env, realm, -1)}; /* no leeway: a 2 s token expires in 2 s */
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, &o), 0);

    char *t1 = kc_token(realm, "bearbnb-tests", "bearbnb-tests-secret", "alice");
    assert_non_null(t1);
    char kid1[128], kid2[128];
    claim(t1, 0, "kid", kid1, sizeof kid1);
    assert_true(kid1[0]);
    assert_int_equal(call(h, "POST", "/rooms", t1, ROOM, NULL), 201);

    /* expired: a token of the 2 s client, used after 3 s */
    char *short_tok = kc_token(realm, "bearbnb-short", "bearbnb-tests-secret", "alice");
    assert_non_null(short_tok);
    assert_int_equal(call(h, "POST", "/rooms", short_tok, ROOM, NULL), 201);
    sleep(3);
    assert_int_equal(call(h, "POST", "/rooms", short_tok, ROOM, NULL), 401);

    /* rotate: a new RS256 key provider with a higher priority ... (a fresh
     * admin token: the master realm's live 60 s, and this machine may be slow) */
    free(admin);
    admin = admin_token();
    assert_non_null(admin);
    char *body = NULL;
    snprintf(path, sizeof path, "/admin/realms/%s", realm);
    assert_int_equal(kc_http("GET", path, admin, NULL, NULL, &body), 200);
    json_t *rj = json_loads(body, 0, NULL);
    free(body);
    char realm_id[128];
    snprintf(realm_id, sizeof realm_id, "%s", json_string_value(json_object_get(rj, "id")) ?: "");
    json_decref(rj);
    json_t *comp =
        json_pack("{s:s, s:s, s:s, s:s, s:{s:[s], s:[s], s:[s], s:[s], s:[s]}}", "name", "rsa-rotated", "providerId",
                  "rsa-generated", "providerType", "org.keycloak.keys.KeyProvider", "parentId", realm_id, "config",
                  "priority", "500", "enabled", "true", "active", "true", "algorithm", "RS256", "keySize", "2048");
    char *ct = json_dumps(comp, JSON_COMPACT);
    json_decref(comp);
    snprintf(path, sizeof path, "/admin/realms/%s/components", realm);
    assert_int_equal(kc_http("POST", path, admin, "application/json", ct, NULL), 201);
    free(ct);
    /* ... and the old signing providers disabled */
    snprintf(path, sizeof path, "/admin/realms/%s/components?type=org.keycloak.keys.KeyProvider", realm);
    assert_int_equal(kc_http("GET", path, admin, NULL, NULL, &body), 200);
    json_t *list = json_loads(body, 0, NULL);
    free(body);
    size_t i;
    json_t *c;
    int disabled = 0;
    json_array_foreach(list, i, c)
    {
        const char *prov = json_string_value(json_object_get(c, "providerId")) ?: "";
        const char *name = json_string_value(json_object_get(c, "name")) ?: "";
        if (strcmp(prov, "rsa-generated") != 0 || strcmp(name, "rsa-rotated") == 0)
            continue;
        json_object_set_new(json_object_get(c, "config"), "enabled", json_pack("[s]", "false"));
        char *upd = json_dumps(c, JSON_COMPACT);
        snprintf(path, sizeof path, "/admin/realms/%s/components/%s", realm,
                 json_string_value(json_object_get(c, "id")));
        assert_int_equal(kc_http("PUT", path, admin, "application/json", upd, NULL), 204);
        free(upd);
        disabled++;
    }
    json_decref(list);
    assert_true(disabled >= 1);

    /* a new token is signed with the new key; the running gateway takes it
     * (an unknown kid makes it fetch the JWKS again, at most every 10 s) */
    char *t2 = kc_token(realm, "bearbnb-tests", "bearbnb-tests-secret", "alice");
    assert_non_null(t2);
    claim(t2, 0, "kid", kid2, sizeof kid2);
    assert_string_not_equal(kid1, kid2);
    long st = 0;
    long long t0 = e2e_now_ms();
    while ((st = call(h, "POST", "/rooms", t2, ROOM, NULL)) != 201 && e2e_now_ms() - t0 < 30000)
        usleep(500 * 1000);
    assert_int_equal(st, 201);
    print_message("rotation picked up in %lld ms\n", e2e_now_ms() - t0);
    /* the disabled key left the JWKS: its tokens are refused now */
    assert_int_equal(call(h, "POST", "/rooms", t1, ROOM, NULL), 401);
    /* no restart happened: the same process answered throughout */
    e2e_resp_t m;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &m), 0);
    assert_non_null(strstr(m.body, "bearbnb_jwks_keys"));
    e2e_resp_free(&m);

    free(t1);
    free(t2);
    free(short_tok);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
    realm_delete(realm);
    free(admin);
}

/* The identity provider is down when the gateway starts: it serves, is not
 * ready and says why in its log, counts the failed fetches in /metrics, and
 * turns ready without a restart once the JWKS answers. The outage is a realm
 * that does not exist yet (its JWKS URL answers 404 until it is created). */
static void test_identity_provider_down_at_start(void **state)
{
    (void)state;
    char realm[64];
    snprintf(realm, sizeof realm, "bnbt%dlate", (int)getpid());
    env_t env;
    e2e_host_opts_t o = {.env = auth_env(&env, realm, 30), .no_wait = 1};
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, &o), 0);
    /* not ready for a while: the realm (its JWKS) does not exist */
    assert_int_equal(e2e_host_wait_ready(h, 3000), -1);
    char *log = e2e_host_log_tail(h, 65536);
    assert_non_null(strstr(log, "not ready: no JWKS yet"));
    assert_non_null(strstr(log, realm));
    free(log);
    e2e_resp_t m;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &m), 0);
    assert_non_null(strstr(m.body, "bearbnb_jwks_refresh_failures_total"));
    assert_null(strstr(m.body, "bearbnb_jwks_refresh_failures_total 0\n"));
    e2e_resp_free(&m);
    /* the identity provider comes up: ready without a restart */
    char *admin = admin_token();
    assert_non_null(admin);
    assert_int_equal(realm_create(admin, realm, 0), 0);
    assert_int_equal(e2e_host_wait_ready(h, 60000), 0);
    char *t = kc_token(realm, "bearbnb-tests", "bearbnb-tests-secret", "alice");
    assert_non_null(t);
    assert_int_equal(call(h, "POST", "/rooms", t, ROOM, NULL), 201);
    free(t);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
    realm_delete(realm);
    free(admin);
}

int main(void)
{
    const char *kc = getenv("BNB_TEST_KEYCLOAK_URL");
    const char *rf = getenv("BNB_KEYCLOAK_REALM_FILE");
    if (!kc || !*kc || !rf) {
        fprintf(stderr, "BNB_TEST_KEYCLOAK_URL is not set: run `scripts/infra up keycloak` and "
                        "`eval \"$(scripts/infra env)\"` (scripts/test does both)\n");
        return 1;
    }
    snprintf(KC, sizeof KC, "%s", kc);
    snprintf(REALM_FILE, sizeof REALM_FILE, "%s", rf);
    snprintf(ADMIN_USER, sizeof ADMIN_USER, "%s", getenv("BNB_TEST_KEYCLOAK_ADMIN") ?: "admin");
    snprintf(ADMIN_PASS, sizeof ADMIN_PASS, "%s", getenv("BNB_TEST_KEYCLOAK_ADMIN_PASSWORD") ?: "admin");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_provider_down_at_start),
        cmocka_unit_test(test_key_rotation_and_expiry),
        cmocka_unit_test(test_distributed_saga_with_keycloak_tokens),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
