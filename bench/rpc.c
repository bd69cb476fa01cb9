/* See bench/rpc.h.  The protocol client is tools/ctlclient.c; this adds the
 * frame sizes of each call, Stats helpers and the echo baseline's I/O. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/rpc.h"
#include "proto/wire.h"

int brpc_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int brpc_read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

Spand__Response *brpc_call(brpc_t *c, Spand__Request *req)
{
    Spand__Response *r = NULL;
    if (ctl_call(&c->ctl, req, &r) != 0)
        return NULL;
    c->req_bytes = SPAND_FRAME_HDR + spand__request__get_packed_size(req);
    c->resp_bytes = SPAND_FRAME_HDR + spand__response__get_packed_size(r);
    return r;
}

void brpc_free(Spand__Response *r)
{
    if (r)
        spand__response__free_unpacked(r, NULL);
}

int brpc_connect(brpc_t *c, const char *path, bool hello)
{
    int rc = ctl_connect(&c->ctl, path, 0);
    if (rc != 0 || !hello)
        return rc;
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__Hello h = SPAND__HELLO__INIT;
    h.protocol_version = SPAND_PROTOCOL_VERSION;
    h.client_name = "spanbench";
    req.body_case = SPAND__REQUEST__BODY_HELLO;
    req.hello = &h;
    Spand__Response *r = brpc_call(c, &req);
    if (!r || r->error || r->body_case != SPAND__RESPONSE__BODY_HELLO) {
        fprintf(stderr, "spanbench: Hello to %s failed: %s\n", path,
                r ? r->message : "no answer");
        rc = -EPROTO;
    }
    brpc_free(r);
    if (rc)
        brpc_close(c);
    return rc;
}

void brpc_close(brpc_t *c)
{
    ctl_close(&c->ctl);
}

Spand__Response *brpc_stats(brpc_t *c)
{
    Spand__Request req = SPAND__REQUEST__INIT;
    Spand__StatsRequest s = SPAND__STATS_REQUEST__INIT;
    req.body_case = SPAND__REQUEST__BODY_STATS;
    req.stats = &s;
    Spand__Response *r = brpc_call(c, &req);
    if (!r || r->error || r->body_case != SPAND__RESPONSE__BODY_STATS) {
        fprintf(stderr, "spanbench: Stats failed: %s\n", r ? r->message : "no answer");
        brpc_free(r);
        return NULL;
    }
    return r;
}

int64_t brpc_counter(const Spand__StatsReply *s, const char *name)
{
    for (size_t i = 0; i < s->n_counters; i++)
        if (strcmp(s->counters[i]->name, name) == 0)
            return (int64_t)s->counters[i]->value;
    return -1;
}
