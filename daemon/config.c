/* See shm/layout.h for the overview.
 *
 * spand's configuration: defaults, then the config file (-c FILE), then the
 * command line, each overriding the one before.  The file holds one
 * `key = value` per line with the long option names as keys (`socket`,
 * `name`, `arena-size`, `base-address`, `scavenge-interval`, `large-pool`, `verbose`,
 * `foreground`, `allow-uid`, `socket-group`); `#` starts a comment.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/daemon.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: spand [-f|--foreground] [-s|--socket PATH] [-n|--name SHM_NAME]\n"
"             [-m|--arena-size SIZE] [--base-address ADDR]\n"
"             [--scavenge-interval SECONDS] [--large-pool SIZE]\n"
"             [-c|--config FILE] [-v|--verbose] [--allow-uid UID]\n"
"             [--socket-group GROUP] [-h|--help] [-V|--version]\n"
"\n"
"The spand memory-pool daemon: owns a shared-memory arena that processes\n"
"linked with libspanclient allocate from.\n"
"\n"
"  -f, --foreground        stay in the foreground and log to stderr\n"
"                          (default: daemonize, log to syslog)\n"
"  -s, --socket PATH       Unix socket (default: $SPAND_SOCKET, else\n"
"                          $XDG_RUNTIME_DIR/spand.sock, else\n"
"                          /tmp/spand-$UID/spand.sock); pid file PATH.pid\n"
"  -n, --name SHM_NAME     shared-memory object name (default /spand-$UID)\n"
"  -m, --arena-size SIZE   bytes to reserve; K, M, G, T suffixes (default 4G)\n"
"      --base-address ADDR address every process maps the arena at\n"
"                          (default 0x200000000000)\n"
"      --scavenge-interval SECONDS\n"
"                          give idle free pages back this often; pages idle\n"
"                          half that long go (default 5; 0 turns it off)\n"
"      --large-pool SIZE   freed large objects of 40 KiB..1 MiB that clients\n"
"                          keep for reuse, up to SIZE bytes in the shared\n"
"                          pool (each client thread also keeps up to 8 of\n"
"                          its own); K, M, G, T suffixes, at most the arena\n"
"                          (default an eighth of it, 512M with the default\n"
"                          4G; 0 turns both off); idle ones go back to the\n"
"                          heap within one scavenge interval whatever the size\n"
"  -c, --config FILE       read `key = value` lines (long option names)\n"
"  -v, --verbose           log more (twice: libevent too)\n"
"      --allow-uid UID     let this user connect too (repeatable)\n"
"      --socket-group GROUP  socket mode 0660 with this group, whose\n"
"                          members may connect\n"
"  -h, --help              this text\n"
"  -V, --version           the version, protocol and arena layout\n");
}

/* The config-file line being applied (load_file), so that a bad setting
 * found there is named with its place; NULL for the command line. */
static const char *conf_path;
static unsigned conf_line;

static void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "spand: ");
    if (conf_path != NULL)
        fprintf(stderr, "%s:%u: ", conf_path, conf_line);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'spand --help'.\n");
    exit(2);
}

static bool parse_bool(const char *v)
{
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on"))
        return true;
    if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off"))
        return false;
    die_usage("not a yes/no value: %s", v);
    return false;
}

static unsigned long parse_ulong(const char *v, unsigned long max, const char *what)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 0);
    if (errno || end == v || *end != '\0' || *v == '-' || n > max)
        die_usage(what, v);
    return n;
}

static void set_socket(spd_config_t *cfg, const char *v)
{
    char cwd[4096];
    int n;
    if (v[0] == '/')
        n = snprintf(cfg->socket, sizeof cfg->socket, "%s", v);
    else if (getcwd(cwd, sizeof cwd) == NULL)
        die_usage("cannot make the socket path %s absolute", v);
    else
        n = snprintf(cfg->socket, sizeof cfg->socket, "%s/%s", cwd, v);
    if (n < 0 || (size_t)n >= sizeof cfg->socket)
        die_usage("socket path too long (at most 107 bytes): %s", v);
}

static void set_name(spd_config_t *cfg, const char *v)
{
    const char *bare = v[0] == '/' ? v + 1 : v;
    if (*bare == '\0' || strchr(bare, '/') || strlen(bare) + 2 > sizeof cfg->shm_name)
        die_usage("bad shared-memory name (one component, no '/' inside): %s", v);
    snprintf(cfg->shm_name, sizeof cfg->shm_name, "/%s", bare);
}

static void set_group(spd_config_t *cfg, const char *v)
{
    struct group *g = getgrnam(v);
    if (g == NULL && isdigit((unsigned char)v[0]))
        g = getgrgid((gid_t)parse_ulong(v, 0xffffffffUL, "bad group: %s"));
    if (g == NULL)
        die_usage("no such group: %s", v);
    cfg->have_group = true;
    cfg->group = g->gr_gid;
    snprintf(cfg->group_name, sizeof cfg->group_name, "%s", g->gr_name);
}

static void add_uid(spd_config_t *cfg, const char *v)
{
    struct passwd *pw = getpwnam(v);
    uid_t uid = pw ? pw->pw_uid : (uid_t)parse_ulong(v, 0xfffffffeUL, "no such user: %s");
    if (cfg->nallow_uids == SPD_MAX_ALLOW_UIDS)
        die_usage("too many --allow-uid (at most 16): %s", v);
    cfg->allow_uids[cfg->nallow_uids++] = uid;
}

/* One option, from the command line or the config file. */
static void apply(spd_config_t *cfg, const char *key, const char *v)
{
    if (!strcmp(key, "foreground"))
        cfg->foreground = v ? parse_bool(v) : true;
    else if (!strcmp(key, "verbose"))
        cfg->verbose = v ? (int)parse_ulong(v, 3, "bad verbosity: %s") : cfg->verbose + 1;
    else if (!strcmp(key, "socket"))
        set_socket(cfg, v);
    else if (!strcmp(key, "name"))
        set_name(cfg, v);
    else if (!strcmp(key, "arena-size")) {
        if (shm_parse_size(v, &cfg->arena_size) != 0)
            die_usage("bad size (a number with an optional K, M, G or T suffix): %s", v);
    } else if (!strcmp(key, "base-address"))
        cfg->base = parse_ulong(v, ~0UL, "bad address: %s");
    else if (!strcmp(key, "scavenge-interval"))
        cfg->scavenge_interval = (unsigned)parse_ulong(v, 86400, "bad interval "
                                                        "(0..86400 seconds): %s");
    else if (!strcmp(key, "large-pool")) {
        if (shm_parse_size(v, &cfg->large_pool) != 0)
            die_usage("bad size (a number with an optional K, M, G or T suffix): %s", v);
    } else if (!strcmp(key, "allow-uid"))
        add_uid(cfg, v);
    else if (!strcmp(key, "socket-group"))
        set_group(cfg, v);
    else
        die_usage("unknown setting: %s", key);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static void load_file(spd_config_t *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (f == NULL) {
        fprintf(stderr, "spand: cannot read config file %s: %s\n", path, strerror(errno));
        exit(2);
    }
    for (unsigned n = 1; fgets(line, sizeof line, f); n++) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line), *eq = strchr(s, '=');
        if (*s == '\0')
            continue;
        if (eq == NULL) {
            fprintf(stderr, "spand: %s:%u: expected `key = value`\n", path, n);
            exit(2);
        }
        *eq = '\0';
        conf_path = path;
        conf_line = n;
        apply(cfg, trim(s), trim(eq + 1));
        conf_path = NULL;
    }
    fclose(f);
}

static void defaults(spd_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (spand_default_socket(cfg->socket, sizeof cfg->socket) != 0)
        die_usage("the default socket path is too long; use -s%s", "");
    snprintf(cfg->shm_name, sizeof cfg->shm_name, "/spand-%u", (unsigned)getuid());
    cfg->arena_size = SHM_DEFAULT_ARENA_SIZE;
    cfg->base = SHM_DEFAULT_BASE;
    cfg->scavenge_interval = SPD_DEFAULT_SCAVENGE_SECS;
    cfg->large_pool = SPD_LARGE_POOL_AUTO;
}

static const struct option longopts[] = {
    { "foreground",        no_argument,       NULL, 'f' },
    { "socket",            required_argument, NULL, 's' },
    { "name",              required_argument, NULL, 'n' },
    { "arena-size",        required_argument, NULL, 'm' },
    { "base-address",      required_argument, NULL, 'B' },
    { "scavenge-interval", required_argument, NULL, 'I' },
    { "large-pool",        required_argument, NULL, 'P' },
    { "config",            required_argument, NULL, 'c' },
    { "verbose",           no_argument,       NULL, 'v' },
    { "allow-uid",         required_argument, NULL, 'U' },
    { "socket-group",      required_argument, NULL, 'G' },
    { "help",              no_argument,       NULL, 'h' },
    { "version",           no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 },
};

void spd_config_parse(spd_config_t *cfg, int argc, char **argv)
{
    int ch, idx;
    defaults(cfg);
    /* first pass: the config file and --help/--version only */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "fs:n:m:c:vhV", longopts, &idx)) != -1) {
        if (ch == 'c')
            load_file(cfg, optarg);
        else if (ch == 'h')
            usage(stdout), exit(0);
        else if (ch == 'V')
            printf("spand %s (protocol %u, arena layout %u)\n", PACKAGE_VERSION,
                   SPAND_PROTOCOL_VERSION, SHM_LAYOUT_VERSION), exit(0);
    }
    /* second pass: everything else, overriding the file */
    opterr = 1;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "fs:n:m:c:vhV", longopts, &idx)) != -1) {
        switch (ch) {
        case 'c': break;
        case 'f': apply(cfg, "foreground", NULL); break;
        case 'v': apply(cfg, "verbose", NULL); break;
        case 's': apply(cfg, "socket", optarg); break;
        case 'n': apply(cfg, "name", optarg); break;
        case 'm': apply(cfg, "arena-size", optarg); break;
        case 'B': apply(cfg, "base-address", optarg); break;
        case 'I': apply(cfg, "scavenge-interval", optarg); break;
        case 'P': apply(cfg, "large-pool", optarg); break;
        case 'U': apply(cfg, "allow-uid", optarg); break;
        case 'G': apply(cfg, "socket-group", optarg); break;
        default: fprintf(stderr, "Try 'spand --help'.\n"); exit(2);
        }
    }
    if (optind < argc)
        die_usage("unexpected argument: %s", argv[optind]);
    if (cfg->large_pool == SPD_LARGE_POOL_AUTO)
        cfg->large_pool = cfg->arena_size / SPD_LARGE_POOL_SHARE;
    if (cfg->large_pool > cfg->arena_size) {
        /* surely a mistake: -m and --large-pool mixed up, or a unit */
        char what[96];
        snprintf(what, sizeof what, "%llu bytes, more than the arena's %llu",
                 (unsigned long long)cfg->large_pool, (unsigned long long)cfg->arena_size);
        die_usage("bad large pool: %s", what);
    }
}
