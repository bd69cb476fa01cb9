/* See shm/layout.h for the overview.
 *
 * spanctl: ask a running spand what it holds, and tell it to give memory
 * back.  `key: value` lines for people and scripts, --json for programs.
 * The counters come from the daemon by name (SHM_STAT_FIELDS drives them),
 * so a counter added there shows up here without a change.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/ctlclient.h"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

static const char *sock_path;
static bool json;

static void usage(FILE *f)
{
    fprintf(f,
"usage: spanctl [-s|--socket PATH] [-j|--json] COMMAND\n"
"       spanctl -h|--help | --version\n"
"\n"
"Commands:\n"
"  ping       check that spand answers\n"
"  stats      what the daemon holds (key: value lines; --json for JSON)\n"
"  classes    per size class: spans in central and held, live and free objects\n"
"  clients    attached client sessions\n"
"  release    give every free page back to the kernel now\n"
"  verify     run the daemon's heap verifier\n"
"\n"
"The socket defaults to $SPAND_SOCKET, else $XDG_RUNTIME_DIR/spand.sock,\n"
"else /tmp/spand-$UID/spand.sock.\n"
"Exit status: 0 ok, 1 the daemon refused or verify failed, 2 bad usage,\n"
"3 cannot reach the daemon.\n");
}

/* ---- talking to the daemon ---- */

static const char *path_for_msgs(void)
{
    static char def[SPAND_PATH_MAX];
    if (sock_path)
        return sock_path;
    if (spand_default_socket(def, sizeof def) != 0)
        return "(default path too long)";
    return def;
}

/* Send `req`, return the answer or exit with a message. */
static Spand__Response *call(ctl_client_t *c, Spand__Request *req)
{
    Spand__Response *resp = NULL;
    int rc = ctl_call(c, req, &resp);
    if (rc != 0) {
        fprintf(stderr, "spanctl: no answer from spand at %s: %s\n", path_for_msgs(),
                strerror(-rc));
        exit(EXIT_CONNECT);
    }
    if (resp->error != 0) {
        fprintf(stderr, "spanctl: spand refused: %s (%s)\n",
                resp->message && *resp->message ? resp->message : "no reason given",
                strerror((int)resp->error));
        exit(EXIT_ERROR);
    }
    /* an answer's body has the field number of its request's (spand.proto) */
    if ((int)resp->body_case != (int)req->body_case) {
        fprintf(stderr, "spanctl: spand answered request body %d with body %d\n",
                (int)req->body_case, (int)resp->body_case);
        exit(EXIT_ERROR);
    }
    return resp;
}

/* ---- output ---- */

static void json_string(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

#define STATS_SCALARS(X)                                                        \
    X(daemon_pid) X(uptime_seconds) X(clients) X(spans)                         \
    X(arena_size) X(heap_bytes) X(free_bytes) X(unbacked_bytes)                 \
    X(resident_bytes) X(small_bytes) X(large_bytes) X(live_objects)             \
    X(live_bytes) X(large_pool_bytes) X(large_pool_hits) X(large_pool_puts)

static void print_stats(const Spand__StatsReply *r)
{
    const char *sep = "";
    if (json) {
        printf("{");
#define JSON_FIELD(f) printf("%s\"" #f "\": %llu", sep, (unsigned long long)r->f), sep = ", ";
        STATS_SCALARS(JSON_FIELD)
#undef JSON_FIELD
        printf(", \"counters\": {");
        for (size_t i = 0; i < r->n_counters; i++) {
            printf("%s", i ? ", " : "");
            json_string(r->counters[i]->name);
            printf(": %llu", (unsigned long long)r->counters[i]->value);
        }
        printf("}}\n");
        return;
    }
#define TEXT_FIELD(f) printf(#f ": %llu\n", (unsigned long long)r->f);
    STATS_SCALARS(TEXT_FIELD)
#undef TEXT_FIELD
    for (size_t i = 0; i < r->n_counters; i++)
        printf("%s: %llu\n", r->counters[i]->name, (unsigned long long)r->counters[i]->value);
}

static void print_classes(const Spand__StatsReply *r)
{
    if (!json)
        printf("%5s %6s %5s %8s %8s %12s %12s\n", "class", "size", "pages",
               "central", "held", "live", "free");
    else
        printf("[");
    for (size_t i = 0; i < r->n_classes; i++) {
        const Spand__ClassStats *c = r->classes[i];
        if (json)
            printf("%s{\"class\": %u, \"size\": %u, \"pages\": %u, \"spans_central\": %u, "
                   "\"spans_held\": %u, \"live_objects\": %llu, \"free_objects\": %llu}",
                   i ? ", " : "", c->sizeclass, c->size, c->npages, c->spans_central,
                   c->spans_held, (unsigned long long)c->live_objects,
                   (unsigned long long)c->free_objects);
        else
            printf("%5u %6u %5u %8u %8u %12llu %12llu\n", c->sizeclass, c->size, c->npages,
                   c->spans_central, c->spans_held, (unsigned long long)c->live_objects,
                   (unsigned long long)c->free_objects);
    }
    if (json)
        printf("]\n");
}

static void print_clients(const Spand__ClientsReply *r)
{
    if (!json)
        printf("%7s %8s %6s %-19s %7s %s\n", "session", "pid", "uid", "started", "spans",
               "name");
    else
        printf("[");
    for (size_t i = 0; i < r->n_clients; i++) {
        const Spand__ClientInfo *ci = r->clients[i];
        if (json) {
            printf("%s{\"session\": %u, \"pid\": %u, \"uid\": %u, \"started\": %llu, "
                   "\"spans\": %u, \"name\": ", i ? ", " : "", ci->session_id, ci->pid,
                   ci->uid, (unsigned long long)ci->started, ci->spans);
            json_string(ci->name);
            printf("}");
        } else {
            char when[32];
            time_t t = (time_t)ci->started;
            struct tm tm;
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
            printf("%7u %8u %6u %-19s %7u %s\n", ci->session_id, ci->pid, ci->uid, when,
                   ci->spans, ci->name ? ci->name : "");
        }
    }
    if (json)
        printf("]\n");
}

/* ---- commands ---- */

static int cmd_ping(ctl_client_t *c, Spand__Request *req)
{
    Spand__Ping ping = SPAND__PING__INIT;
    struct timespec t0, t1;
    ping.token = (uint64_t)time(NULL);
    req->body_case = SPAND__REQUEST__BODY_PING;
    req->ping = &ping;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    Spand__Response *r = call(c, req);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int ok = r->ping->token == ping.token;
    long us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
    if (json)
        printf("{\"ok\": %s, \"round_trip_us\": %ld}\n", ok ? "true" : "false", us);
    else
        printf("%s: spand at %s, %ld us\n", ok ? "pong" : "bad pong", path_for_msgs(), us);
    spand__response__free_unpacked(r, NULL);
    return ok ? EXIT_OK : EXIT_ERROR;
}

static int cmd_stats(ctl_client_t *c, Spand__Request *req, bool classes)
{
    Spand__StatsRequest st = SPAND__STATS_REQUEST__INIT;
    st.classes = classes;
    req->body_case = SPAND__REQUEST__BODY_STATS;
    req->stats = &st;
    Spand__Response *r = call(c, req);
    if (classes)
        print_classes(r->stats);
    else
        print_stats(r->stats);
    spand__response__free_unpacked(r, NULL);
    return EXIT_OK;
}

static int cmd_clients(ctl_client_t *c, Spand__Request *req)
{
    Spand__Clients cl = SPAND__CLIENTS__INIT;
    req->body_case = SPAND__REQUEST__BODY_CLIENTS;
    req->clients = &cl;
    Spand__Response *r = call(c, req);
    print_clients(r->clients);
    spand__response__free_unpacked(r, NULL);
    return EXIT_OK;
}

static int cmd_release(ctl_client_t *c, Spand__Request *req)
{
    Spand__Scavenge sc = SPAND__SCAVENGE__INIT;
    req->body_case = SPAND__REQUEST__BODY_SCAVENGE;
    req->scavenge = &sc;
    Spand__Response *r = call(c, req);
    if (json)
        printf("{\"released_bytes\": %llu}\n", (unsigned long long)r->scavenge->released_bytes);
    else
        printf("released_bytes: %llu\n", (unsigned long long)r->scavenge->released_bytes);
    spand__response__free_unpacked(r, NULL);
    return EXIT_OK;
}

static int cmd_verify(ctl_client_t *c, Spand__Request *req)
{
    Spand__Verify v = SPAND__VERIFY__INIT;
    req->body_case = SPAND__REQUEST__BODY_VERIFY;
    req->verify = &v;
    Spand__Response *r = call(c, req);
    bool ok = r->verify->ok;
    if (json) {
        printf("{\"ok\": %s, \"message\": ", ok ? "true" : "false");
        json_string(r->verify->message);
        printf("}\n");
    } else if (ok) {
        printf("ok\n");
    } else {
        printf("FAILED: %s\n", r->verify->message);
    }
    spand__response__free_unpacked(r, NULL);
    return ok ? EXIT_OK : EXIT_ERROR;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    /* options may come before or after the command */
    while ((ch = getopt_long(argc, argv, "s:jh", longopts, NULL)) != -1) {
        switch (ch) {
        case 's': sock_path = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("spanctl %s\n", PACKAGE_VERSION); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, optind == argc ? "spanctl: no command given\n"
                                       : "spanctl: one command at a time\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    static const char *const known[] = { "ping", "stats", "classes", "clients", "release",
                                         "verify" };
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok |= strcmp(cmd, known[i]) == 0;
    if (!ok) {
        fprintf(stderr, "spanctl: unknown command '%s'\n", cmd);
        usage(stderr);
        return EXIT_USAGE;
    }

    ctl_client_t c;
    int rc = ctl_connect(&c, sock_path, 10000);
    if (rc != 0) {
        fprintf(stderr, "spanctl: cannot connect to spand at %s: %s%s\n", path_for_msgs(),
                strerror(-rc), rc == -ENOENT || rc == -ECONNREFUSED
                                   ? " (is spand running? for another socket: -s PATH or $SPAND_SOCKET)"
                                   : "");
        return EXIT_CONNECT;
    }
    Spand__Request req = SPAND__REQUEST__INIT;
    if (!strcmp(cmd, "ping"))
        rc = cmd_ping(&c, &req);
    else if (!strcmp(cmd, "stats"))
        rc = cmd_stats(&c, &req, false);
    else if (!strcmp(cmd, "classes"))
        rc = cmd_stats(&c, &req, true);
    else if (!strcmp(cmd, "clients"))
        rc = cmd_clients(&c, &req);
    else if (!strcmp(cmd, "release"))
        rc = cmd_release(&c, &req);
    else
        rc = cmd_verify(&c, &req);
    ctl_close(&c);
    return rc;
}
