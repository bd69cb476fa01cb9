/* See shm/layout.h for the overview.  Helpers of the client tests: ask a
 * running spand for Stats, Clients and Verify; move bytes through pipes. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tests/client_helper.h"
#include "tools/ctlclient.h"

Spand__Response *ct_call(const char *sock, Spand__Request *req)
{
    ctl_client_t c;
    Spand__Response *resp = NULL;
    if (ctl_connect(&c, sock, 10000) != 0)
        return NULL;
    int rc = ctl_call(&c, req, &resp);
    ctl_close(&c);
    if (rc != 0)
        return NULL;
    if (resp->error != 0) {
        fprintf(stderr, "spand: error %u: %s\n", resp->error, resp->message);
        spand__response__free_unpacked(resp, NULL);
        resp = NULL;
    }
    return resp;
}

bool ct_stats(const char *sock, uint64_t *live_objects, uint64_t *live_bytes,
              uint32_t *clients)
{
    Spand__StatsRequest body = SPAND__STATS_REQUEST__INIT;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &body;
    Spand__Response *r = ct_call(sock, &req);
    if (r == NULL || r->body_case != SPAND__RESPONSE__BODY_STATS) {
        if (r)
            spand__response__free_unpacked(r, NULL);
        return false;
    }
    if (live_objects)
        *live_objects = r->stats->live_objects;
    if (live_bytes)
        *live_bytes = r->stats->live_bytes;
    if (clients)
        *clients = r->stats->clients;
    spand__response__free_unpacked(r, NULL);
    return true;
}

/* The Clients answer, or NULL. */
long long ct_counter(const char *sock, const char *name)
{
    Spand__StatsRequest body = SPAND__STATS_REQUEST__INIT;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &body;
    Spand__Response *r = ct_call(sock, &req);
    long long v = -1;
    if (r != NULL && r->body_case == SPAND__RESPONSE__BODY_STATS)
        for (size_t i = 0; i < r->stats->n_counters; i++)
            if (strcmp(r->stats->counters[i]->name, name) == 0)
                v = (long long)r->stats->counters[i]->value;
    if (r)
        spand__response__free_unpacked(r, NULL);
    return v;
}

static Spand__Response *clients_of(const char *sock)
{
    Spand__Clients body = SPAND__CLIENTS__INIT;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_CLIENTS;
    req.clients = &body;
    Spand__Response *r = ct_call(sock, &req);
    if (r != NULL && r->body_case != SPAND__RESPONSE__BODY_CLIENTS) {
        spand__response__free_unpacked(r, NULL);
        r = NULL;
    }
    return r;
}

long ct_client_spans(const char *sock, pid_t pid)
{
    Spand__Response *r = clients_of(sock);
    if (r == NULL)
        return -2;
    long spans = -1;
    for (size_t i = 0; i < r->clients->n_clients; i++)
        if (r->clients->clients[i]->pid == (uint32_t)pid)
            spans = r->clients->clients[i]->spans;
    spand__response__free_unpacked(r, NULL);
    return spans;
}

long ct_client_sessions(const char *sock, pid_t pid)
{
    Spand__Response *r = clients_of(sock);
    if (r == NULL)
        return -2;
    long n = 0;
    for (size_t i = 0; i < r->clients->n_clients; i++)
        n += r->clients->clients[i]->pid == (uint32_t)pid;
    spand__response__free_unpacked(r, NULL);
    return n;
}

bool ct_verify(const char *sock, char *msg, size_t len)
{
    Spand__Verify body = SPAND__VERIFY__INIT;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_VERIFY;
    req.verify = &body;
    Spand__Response *r = ct_call(sock, &req);
    if (r == NULL || r->body_case != SPAND__RESPONSE__BODY_VERIFY) {
        snprintf(msg, len, "no answer to Verify");
        if (r)
            spand__response__free_unpacked(r, NULL);
        return false;
    }
    bool ok = r->verify->ok;
    snprintf(msg, len, "%s", r->verify->message ? r->verify->message : "");
    spand__response__free_unpacked(r, NULL);
    return ok;
}

bool ct_scavenge(const char *sock)
{
    Spand__Scavenge body = SPAND__SCAVENGE__INIT;
    Spand__Request req = SPAND__REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_SCAVENGE;
    req.scavenge = &body;
    Spand__Response *r = ct_call(sock, &req);
    bool ok = r != NULL && r->body_case == SPAND__RESPONSE__BODY_SCAVENGE;
    if (r)
        spand__response__free_unpacked(r, NULL);
    return ok;
}

bool ct_nothing_live(const char *sock, uint64_t max_objects)
{
    uint64_t objs = 1, bytes = 1;
    uint32_t clients = 1;
    char msg[256];
    bool swept = ct_scavenge(sock);
    if (!ct_stats(sock, &objs, &bytes, &clients)) {
        fprintf(stderr, "Stats failed\n");
        return false;
    }
    bool ok = swept && clients == 0 && objs <= max_objects && (max_objects > 0 || bytes == 0);
    if (!ok || objs > 0)
        fprintf(stderr, "%slive objects %llu (at most %llu), bytes %llu, clients %u\n",
                swept ? "" : "Scavenge failed; ", (unsigned long long)objs,
                (unsigned long long)max_objects, (unsigned long long)bytes, clients);
    if (!ct_verify(sock, msg, sizeof msg)) {
        fprintf(stderr, "verify: %s\n", msg);
        ok = false;
    }
    return ok;
}

bool ct_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

bool ct_read_all(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}
