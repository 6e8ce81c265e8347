/*
 * shale.c -- the `shale` command-line tool: put, get, del, scan, stat and check on a
 * database directory, through the public API (include/shale.h) only.
 *
 * Shape.  `shale COMMAND [OPTIONS] DB ARGS...`.  Each command is a row of
 * `commands[]`: its name, how many positional arguments it takes, which
 * options apply to it, its usage text and the function that runs it.  The
 * options of every command are parsed by one getopt_long table (GNU getopt
 * permutes, so options may come before or after the positional arguments;
 * `--` ends them, for a KEY or VALUE that starts with '-'); an option that
 * does not apply to the command is a usage error rather than silently
 * ignored.
 *
 * Opening.  `put` creates the database if it is missing (unless
 * --no-create); every other command opens with create_if_missing off, and
 * get, scan and stat also read-only, so reading never creates or changes a
 * database and a mistyped path fails with "no such database" instead of
 * leaving an empty one behind.  A named tree that does not exist is an error
 * for get, scan and del (del checks with a read-only open first, because
 * opening a tree read-write creates it).
 *
 * Bytes.  Keys and values are the argument strings as given, or hex with
 * --hex (which also prints them as hex).  Output escapes bytes outside
 * printable ASCII as \xNN and a backslash as \\ (so a scan line is always one
 * line with one tab), unless --raw asks for the bytes as they are.
 *
 * Exit status: 0 success; 1 a library error or a key not found (the message
 * on stderr is "shale: <op>: <reason>"); 2 a usage error.  Usage text asked
 * for with --help goes to stdout with status 0.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shale.h"
#include "tool_stats.h"

enum { EXIT_OK = 0, EXIT_ERR = 1, EXIT_USAGE = 2 };

/* Which options a command accepts (a bit mask per command). */
enum {
    A_TREE = 1u << 0,
    A_HEX = 1u << 1,
    A_RAW = 1u << 2,
    A_SCAN = 1u << 3,   /* --from --to --reverse --limit --keys-only */
    A_CREATE = 1u << 4, /* --create --no-create */
    A_OVERWRITE = 1u << 5,
};

/* getopt_long codes of the long-only options. */
enum {
    O_TREE = 256,
    O_HEX,
    O_RAW,
    O_FROM,
    O_TO,
    O_REVERSE,
    O_LIMIT,
    O_KEYS_ONLY,
    O_CREATE,
    O_NO_CREATE,
    O_OVERWRITE,
};

/* A byte string from the command line: p/n, and mem to free if decoded. */
typedef struct bytes {
    const uint8_t *p;
    size_t n;
    uint8_t *mem;
} bytes;

/* Everything the command line said. */
typedef struct cli_opts {
    const char *tree; /* NULL: the default tree */
    const char *from;
    const char *to;
    uint64_t limit; /* 0: no limit */
    unsigned given; /* A_* bits of the options that were given */
    bool hex, raw, reverse, keys_only, no_create, overwrite, help;
} cli_opts;

struct command;

/* One invocation: the command, its options and positional arguments. */
typedef struct cli {
    const struct command *cmd;
    cli_opts o;
    char **args; /* args[0] is DB */
    int nargs;
    shale_db *db;
    shale_tree *tree;
} cli;

/* A command: name, positional argument count, allowed options, usage. */
typedef struct command {
    const char *name;
    int nargs;
    unsigned allowed;
    const char *synopsis;
    const char *help;
    int (*run)(cli *c);
} command;

static int usage_error(const command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int run_put(cli *c);
static int run_get(cli *c);
static int run_del(cli *c);
static int run_scan(cli *c);
static int run_stat(cli *c);
static int run_check(cli *c);
static int run_compact(cli *c);
static int run_export(cli *c);
static int run_import(cli *c);

static const command commands[] = {
    {"put", 3, A_TREE | A_HEX | A_CREATE, "put DB KEY VALUE",
     "Set KEY to VALUE.  Creates the database DB if it is missing.\n"
     "  --create       create DB if missing (the default)\n"
     "  --no-create    fail if DB does not exist\n",
     run_put},
    {"get", 2, A_TREE | A_HEX | A_RAW, "get DB KEY",
     "Print the value of KEY and a newline.  Exit 1 with \"not found\" on\n"
     "stderr when KEY is absent.\n",
     run_get},
    {"del", 2, A_TREE | A_HEX, "del DB KEY",
     "Delete KEY (succeeds whether or not it was present).\n", run_del},
    {"scan", 1, A_TREE | A_HEX | A_RAW | A_SCAN,
     "scan DB [--from K] [--to K] [--reverse] [--limit N] [--keys-only]",
     "Print \"key<TAB>value\" lines in key order.\n"
     "  --from K       start at the first key >= K\n"
     "  --to K         stop before K (the range is [from, to))\n"
     "  --reverse      largest key first\n"
     "  --limit N      print at most N entries\n"
     "  --keys-only    print keys only\n",
     run_scan},
    {"stat", 1, 0, "stat DB",
     "Print the database's statistics (they cover every tree) as\n"
     "\"name: value\" lines.\n",
     run_stat},
    {"check", 1, 0, "check DB",
     "Read every page of every segment, verifying checksums, key order within\n"
     "and across pages and each parent's counts, and that every page of the\n"
     "file is exactly one of header, live or free.  Prints the page counts;\n"
     "on a fault prints it (naming the page) and exits 1.\n",
     run_check},
    {"compact", 2, 0, "compact DB OUT",
     "Write every live key of DB (all trees) into a new database OUT, in one\n"
     "freshly written segment with no free space.  DB is only read.  OUT must\n"
     "not exist.  Shows progress on a terminal.\n",
     run_compact},
    {"export", 2, 0, "export DB FILE",
     "Write every tree of DB (names, keys, values) into a new dump FILE, as of\n"
     "one instant: a versioned, checksummed format (src/lsm/dump.c).  FILE must\n"
     "not exist.  Shows progress on a terminal.\n",
     run_export},
    {"import", 2, A_OVERWRITE, "import DB FILE [--overwrite]",
     "Add the trees and keys of dump FILE to DB (created if missing).  The\n"
     "whole dump is checked first: a damaged or truncated one, or one holding\n"
     "a key DB already has, is refused with nothing written (the key named).\n"
     "  --overwrite    keys DB already has take the dump's values\n",
     run_import},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* The help of the shared options, each shown only where it applies. */
static const struct opt_help {
    unsigned bit; /* A_*; 0: every command */
    const char *text;
} opt_help[] = {
    {A_TREE, "  --tree NAME    use tree NAME instead of the default tree\n"},
    {A_HEX, "  --hex          KEY, VALUE, --from and --to are hex; print keys and\n"
            "                 values as hex\n"},
    {A_RAW, "  --raw          print keys and values as raw bytes (default: bytes\n"
            "                 outside printable ASCII are shown as \\xNN, '\\' as \\\\)\n"},
    {0, "  -h, --help     print this help\n"},
    /* "--" matters where a KEY or VALUE is given: the commands that take --tree */
    {A_TREE, "  --             end of options (for a KEY or VALUE starting with '-')\n"},
};

static const char exit_help[] =
    "\nExit status: 0 success, 1 error or key not found, 2 usage error.\n";

static const struct option long_opts[] = {
    {"tree", required_argument, NULL, O_TREE},
    {"hex", no_argument, NULL, O_HEX},
    {"raw", no_argument, NULL, O_RAW},
    {"from", required_argument, NULL, O_FROM},
    {"to", required_argument, NULL, O_TO},
    {"reverse", no_argument, NULL, O_REVERSE},
    {"limit", required_argument, NULL, O_LIMIT},
    {"keys-only", no_argument, NULL, O_KEYS_ONLY},
    {"create", no_argument, NULL, O_CREATE},
    {"no-create", no_argument, NULL, O_NO_CREATE},
    {"overwrite", no_argument, NULL, O_OVERWRITE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* --- usage ------------------------------------------------------------------ */

/* options_usage -- the shared options that apply to a command with mask allowed. */
static void options_usage(FILE *f, unsigned allowed)
{
    fprintf(f, "Options:\n");
    for (size_t i = 0; i < sizeof opt_help / sizeof opt_help[0]; i++)
        if (opt_help[i].bit == 0 || (opt_help[i].bit & allowed))
            fputs(opt_help[i].text, f);
    fputs(exit_help, f);
}

/* top_usage -- the top-level usage text, to f. */
static void top_usage(FILE *f)
{
    fprintf(f, "usage: shale COMMAND [OPTIONS] DB [ARGS...]\n"
               "       shale --help | --version\n\nCommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  shale %s\n", commands[i].synopsis);
    fprintf(f, "\nEvery command takes --help.  get, scan and stat open the database\n"
               "read-only; only put creates a missing database.\n\n");
    options_usage(f, ~0u);
}

/* cmd_usage -- one command's usage text, to stdout. */
static void cmd_usage(const command *cmd)
{
    printf("usage: shale %s [OPTIONS]\n\n%s\n", cmd->synopsis, cmd->help);
    options_usage(stdout, cmd->allowed);
}

/* usage_error -- report a usage problem to stderr; returns EXIT_USAGE. */
static int usage_error(const command *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("shale: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "\nTry 'shale %s --help'.\n", cmd->name);
    else
        fprintf(stderr, "\nTry 'shale --help'.\n");
    return EXIT_USAGE;
}

/* lib_error -- report a library error as "shale: op: reason"; returns EXIT_ERR. */
static int lib_error(const char *op, int rc)
{
    fprintf(stderr, "shale: %s: %s\n", op, shale_strerror(rc));
    return EXIT_ERR;
}

/* --- bytes in and out -------------------------------------------------------- */

/* hex_digit -- the value of hex digit ch, or -1. */
static int hex_digit(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* hex_decode -- decode s into a new buffer; false if s is not even-length hex. */
static bool hex_decode(const char *s, bytes *out)
{
    size_t len = strlen(s);
    if (len % 2)
        return false;
    out->mem = malloc(len / 2 + 1);
    if (!out->mem)
        return false;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_digit((unsigned char)s[2 * i]), lo = hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out->mem);
            out->mem = NULL;
            return false;
        }
        out->mem[i] = (uint8_t)(hi << 4 | lo);
    }
    out->p = out->mem;
    out->n = len / 2;
    return true;
}

/* arg_bytes -- the bytes an argument stands for (hex-decoded with --hex). */
static bool arg_bytes(const cli *c, const char *s, bytes *out)
{
    *out = (bytes){(const uint8_t *)s, strlen(s), NULL};
    return c->o.hex ? hex_decode(s, out) : true;
}

/* put_bytes -- print p[0..n) as hex, raw, or escaped, per the options. */
static void put_bytes(const cli_opts *o, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (o->raw && !o->hex) {
        fwrite(b, 1, n, stdout);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (o->hex)
            printf("%02x", b[i]);
        else if (b[i] == '\\')
            fputs("\\\\", stdout);
        else if (b[i] >= 0x20 && b[i] < 0x7f)
            putchar(b[i]);
        else
            printf("\\x%02x", b[i]);
    }
}

/* finish_output -- flush stdout; EXIT_ERR with a message if writing failed. */
static int finish_output(int status)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "shale: write: %s\n", strerror(errno));
        return EXIT_ERR;
    }
    return status;
}

/* --- opening ------------------------------------------------------------------ */

/* open_error -- explain a failed shale_open of path; returns EXIT_ERR. */
static int open_error(const char *path, int rc)
{
    if (rc == SHALE_EBUSY)
        fprintf(stderr, "shale: open: %s: database is open in another process\n", path);
    else if (rc == SHALE_ENOENT)
        fprintf(stderr, "shale: open: %s: no such database\n", path);
    else
        fprintf(stderr, "shale: open: %s: %s\n", path, shale_strerror(rc));
    return EXIT_ERR;
}

/* open_db -- open DB (args[0]) read-only or writable, creating it if asked. */
static int open_db(cli *c, bool writable, bool create)
{
    shale_options opts;
    shale_options_default(&opts);
    opts.read_only = !writable;
    opts.create_if_missing = create;
    int rc = shale_open(c->args[0], &opts, &c->db);
    if (rc != SHALE_OK) {
        c->db = NULL;
        return open_error(c->args[0], rc);
    }
    return EXIT_OK;
}

/* open_tree -- get the handle of the chosen tree; a missing tree read-only is an error. */
static int open_tree(cli *c)
{
    int rc = shale_open_tree(c->db, c->o.tree, &c->tree);
    if (rc == SHALE_OK)
        return EXIT_OK;
    if (rc == SHALE_EREADONLY || rc == SHALE_ENOENT) {
        fprintf(stderr, "shale: tree: %s: no such tree\n", c->o.tree ? c->o.tree : "");
        return EXIT_ERR;
    }
    return lib_error("tree", rc);
}

/* open_all -- open the database and the tree. */
static int open_all(cli *c, bool writable, bool create)
{
    int st = open_db(c, writable, create);
    return st != EXIT_OK ? st : open_tree(c);
}

/* close_db -- close the database; a failure to close turns success into EXIT_ERR. */
static int close_db(cli *c, int status)
{
    int rc = shale_close(c->db);
    c->db = NULL;
    if (rc != SHALE_OK && rc != SHALE_NOTFOUND) {
        lib_error("close", rc);
        return EXIT_ERR;
    }
    return status;
}

/* --- commands ------------------------------------------------------------------ */

/* run_put -- shale put DB KEY VALUE. */
static int run_put(cli *c)
{
    bytes k, v;
    if (!arg_bytes(c, c->args[1], &k))
        return usage_error(c->cmd, "KEY is not valid hex: '%s'", c->args[1]);
    if (!arg_bytes(c, c->args[2], &v)) {
        free(k.mem);
        return usage_error(c->cmd, "VALUE is not valid hex: '%s'", c->args[2]);
    }
    int st = open_all(c, true, !c->o.no_create);
    if (st == EXIT_OK) {
        int rc = shale_insert(c->tree, k.p, k.n, v.p, v.n, NULL);
        st = rc == SHALE_OK ? EXIT_OK : lib_error("put", rc);
    }
    if (c->db)
        st = close_db(c, st);
    free(k.mem);
    free(v.mem);
    return st;
}

/* run_get -- shale get DB KEY. */
static int run_get(cli *c)
{
    bytes k;
    shale_buf val = SHALE_BUF_INIT;
    if (!arg_bytes(c, c->args[1], &k))
        return usage_error(c->cmd, "KEY is not valid hex: '%s'", c->args[1]);
    int st = open_all(c, false, false);
    if (st == EXIT_OK) {
        int rc = shale_get(c->tree, k.p, k.n, &val);
        if (rc == SHALE_OK) {
            put_bytes(&c->o, val.data, val.len);
            putchar('\n');
            st = finish_output(EXIT_OK);
        } else if (rc == SHALE_NOTFOUND) {
            fprintf(stderr, "not found\n");
            st = EXIT_ERR;
        } else {
            st = lib_error("get", rc);
        }
    }
    if (c->db)
        st = close_db(c, st);
    shale_buf_free(&val);
    free(k.mem);
    return st;
}

/* tree_must_exist -- for a named tree, check read-only that it exists. */
static int tree_must_exist(cli *c)
{
    if (!c->o.tree || !c->o.tree[0])
        return EXIT_OK;
    int st = open_all(c, false, false);
    if (c->db)
        st = close_db(c, st);
    return st;
}

/* run_del -- shale del DB KEY. */
static int run_del(cli *c)
{
    bytes k;
    if (!arg_bytes(c, c->args[1], &k))
        return usage_error(c->cmd, "KEY is not valid hex: '%s'", c->args[1]);
    int st = tree_must_exist(c);
    if (st == EXIT_OK)
        st = open_all(c, true, false);
    if (st == EXIT_OK) {
        int rc = shale_remove(c->tree, k.p, k.n, NULL);
        st = rc == SHALE_OK ? EXIT_OK : lib_error("del", rc);
    }
    if (c->db)
        st = close_db(c, st);
    free(k.mem);
    return st;
}

/* print_entry -- one scan line: key, and unless --keys-only a tab and the value. */
static void print_entry(const cli_opts *o, shale_iter *it)
{
    size_t kl, vl;
    const void *k = shale_iter_key(it, &kl);
    put_bytes(o, k, kl);
    if (!o->keys_only) {
        const void *v = shale_iter_value(it, &vl);
        putchar('\t');
        put_bytes(o, v, vl);
    }
    putchar('\n');
}

/* scan_iter -- walk it in the chosen direction, printing up to --limit entries. */
static int scan_iter(const cli_opts *o, shale_iter *it)
{
    uint64_t n = 0;
    int rc = o->reverse ? shale_iter_last(it) : shale_iter_first(it);
    while (rc == SHALE_OK && (o->limit == 0 || n < o->limit)) {
        print_entry(o, it);
        n++;
        if (ferror(stdout))
            return SHALE_EIO;
        rc = o->reverse ? shale_iter_prev(it) : shale_iter_next(it);
    }
    return rc == SHALE_NOTFOUND ? SHALE_OK : rc;
}

/* scan_bounded -- open an iterator over [from, to) and scan it. */
static int scan_bounded(cli *c, const bytes *lo, const bytes *hi)
{
    shale_iter *it = NULL;
    int rc = shale_iter_open(c->tree, &it);
    if (rc == SHALE_OK && (c->o.from || c->o.to))
        rc = shale_iter_set_bounds(it, c->o.from ? lo->p : NULL, lo->n, c->o.to ? hi->p : NULL,
                                   hi->n);
    if (rc == SHALE_OK)
        rc = scan_iter(&c->o, it);
    shale_iter_close(it);
    if (rc == SHALE_EIO && ferror(stdout))
        return finish_output(EXIT_OK);
    return rc == SHALE_OK ? finish_output(EXIT_OK) : lib_error("scan", rc);
}

/* run_scan -- shale scan DB [--from K] [--to K] [--reverse] [--limit N] [--keys-only]. */
static int run_scan(cli *c)
{
    bytes lo = {NULL, 0, NULL}, hi = {NULL, 0, NULL};
    int st = EXIT_OK;
    if (c->o.from && !arg_bytes(c, c->o.from, &lo))
        return usage_error(c->cmd, "--from is not valid hex: '%s'", c->o.from);
    if (c->o.to && !arg_bytes(c, c->o.to, &hi)) {
        free(lo.mem);
        return usage_error(c->cmd, "--to is not valid hex: '%s'", c->o.to);
    }
    st = open_all(c, false, false);
    if (st == EXIT_OK)
        st = scan_bounded(c, &lo, &hi);
    if (c->db)
        st = close_db(c, st);
    free(lo.mem);
    free(hi.mem);
    return st;
}

/* run_stat -- shale stat DB. */
static int run_stat(cli *c)
{
    shale_stats s;
    int st = open_db(c, false, false);
    if (st != EXIT_OK)
        return st;
    int rc = shale_stats_get(c->db, &s);
    if (rc == SHALE_OK) {
        printf("database: %s\n", c->args[0]);
        ts_print(stdout, "  ", &s);
        st = finish_output(EXIT_OK);
    } else {
        st = lib_error("stat", rc);
    }
    return close_db(c, st);
}

/* run_check -- shale check DB. */
static int run_check(cli *c)
{
    shale_verify_report r;
    int st = open_db(c, false, false);
    if (st != EXIT_OK)
        return st;
    int rc = shale_verify(c->db, &r);
    if (rc == SHALE_OK) {
        printf("%s: ok: %" PRIu64 " pages (%" PRIu64 " header, %" PRIu64 " live, %" PRIu64
               " free), %" PRIu64 " nodes, %" PRIu64 " entries\n",
               c->args[0], r.file_pages, r.header_pages, r.live_pages, r.free_pages, r.nodes,
               r.entries);
        st = finish_output(EXIT_OK);
    } else if (rc == SHALE_ECORRUPT) {
        fprintf(stderr, "shale: check: %s: %s\n", c->args[0], r.fault);
        st = EXIT_ERR;
    } else {
        st = lib_error("check", rc);
    }
    return close_db(c, st);
}

/* compact_progress -- a progress bar on stderr (a terminal only); ctx is
 * the verb shown. */
static void compact_progress(void *ctx, uint64_t done, uint64_t total)
{
    const char *verb = ctx ? ctx : "compacting";
    unsigned pct = total ? (unsigned)(done >= total ? 100 : done * 100 / total) : 100;
    char bar[41];
    memset(bar, '#', pct * 40 / 100);
    memset(bar + pct * 40 / 100, '.', 40 - pct * 40 / 100);
    bar[40] = 0;
    fprintf(stderr, "\r%s [%s] %3u%% %" PRIu64 " entries", verb, bar, pct, done);
    fflush(stderr);
}

/* run_compact -- shale compact DB OUT. */
static int run_compact(cli *c)
{
    bool tty = isatty(STDERR_FILENO);
    int rc = shale_compact(c->args[0], c->args[1], tty ? compact_progress : NULL, NULL);
    if (tty)
        fputc('\n', stderr);
    if (rc != SHALE_OK)
        return lib_error("compact", rc);
    printf("%s: compacted into %s\n", c->args[0], c->args[1]);
    return finish_output(EXIT_OK);
}

/* run_export -- shale export DB FILE. */
static int run_export(cli *c)
{
    int st = open_db(c, false, false);
    if (st != EXIT_OK)
        return st;
    bool tty = isatty(STDERR_FILENO);
    int rc = shale_export(c->db, c->args[1], tty ? compact_progress : NULL, "exporting");
    if (tty)
        fputc('\n', stderr);
    if (rc != SHALE_OK)
        return close_db(c, lib_error("export", rc));
    printf("%s: exported to %s\n", c->args[0], c->args[1]);
    return close_db(c, finish_output(EXIT_OK));
}

/* run_import -- shale import DB FILE [--overwrite]. */
static int run_import(cli *c)
{
    int st = open_db(c, true, true);
    if (st != EXIT_OK)
        return st;
    bool tty = isatty(STDERR_FILENO);
    shale_buf conflict = SHALE_BUF_INIT;
    int rc = shale_import(c->db, c->args[1], c->o.overwrite ? SHALE_IMPORT_OVERWRITE : 0,
                          &conflict, tty ? compact_progress : NULL, "importing");
    if (tty)
        fputc('\n', stderr);
    if (rc == SHALE_EEXIST && conflict.data) {
        const char *tree = conflict.data;
        size_t tl = strlen(tree);
        fprintf(stderr, "shale: import: %s: key already in tree '%s': ", c->args[1], tree);
        for (size_t i = tl + 1; i < conflict.len; i++) {
            unsigned char ch = ((unsigned char *)conflict.data)[i];
            if (ch >= 0x20 && ch < 0x7f && ch != '\\')
                fputc(ch, stderr);
            else
                fprintf(stderr, "\\x%02x", ch);
        }
        fputs(" (nothing imported; --overwrite replaces existing keys)\n", stderr);
        shale_buf_free(&conflict);
        return close_db(c, EXIT_ERR);
    }
    shale_buf_free(&conflict);
    if (rc != SHALE_OK)
        return close_db(c, lib_error("import", rc));
    printf("%s: imported %s\n", c->args[0], c->args[1]);
    return close_db(c, finish_output(EXIT_OK));
}

/* --- argument parsing ------------------------------------------------------------ */

/* find_command -- the command named name, or NULL. */
static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* opt_class -- the A_* bit an option code belongs to (0 for --help). */
static unsigned opt_class(int code)
{
    switch (code) {
    case O_TREE:
        return A_TREE;
    case O_HEX:
        return A_HEX;
    case O_RAW:
        return A_RAW;
    case O_CREATE:
    case O_NO_CREATE:
        return A_CREATE;
    case O_OVERWRITE:
        return A_OVERWRITE;
    case 'h':
        return 0;
    default:
        return A_SCAN;
    }
}

/* parse_limit -- a positive decimal count; false if s is not one. */
static bool parse_limit(const char *s, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0)
        return false;
    *out = v;
    return true;
}

/* apply_opt -- record one parsed option; EXIT_USAGE on a bad --limit. */
static int apply_opt(cli *c, int code, const char *arg)
{
    cli_opts *o = &c->o;
    switch (code) {
    case O_TREE:
        o->tree = arg;
        break;
    case O_HEX:
        o->hex = true;
        break;
    case O_RAW:
        o->raw = true;
        break;
    case O_FROM:
        o->from = arg;
        break;
    case O_TO:
        o->to = arg;
        break;
    case O_REVERSE:
        o->reverse = true;
        break;
    case O_KEYS_ONLY:
        o->keys_only = true;
        break;
    case O_CREATE:
        o->no_create = false;
        break;
    case O_NO_CREATE:
        o->no_create = true;
        break;
    case O_OVERWRITE:
        o->overwrite = true;
        break;
    case 'h':
        o->help = true;
        break;
    case O_LIMIT:
        if (!parse_limit(arg, &o->limit))
            return usage_error(c->cmd, "--limit wants a positive number, not '%s'", arg);
        break;
    }
    o->given |= opt_class(code);
    return EXIT_OK;
}

/* bad_option -- report the option getopt_long rejected (ch is '?' or ':'). */
static int bad_option(const cli *c, int ch, char **argv)
{
    const char *opt = argv[optind - 1];
    if (ch == ':')
        return usage_error(c->cmd, "option '%s' needs an argument", opt);
    return usage_error(c->cmd, "unknown option '%s'", opt);
}

/* parse_opts -- run getopt_long over argv (argv[0] is the command name). */
static int parse_opts(cli *c, int argc, char **argv)
{
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
        int st = (ch == '?' || ch == ':') ? bad_option(c, ch, argv) : apply_opt(c, ch, optarg);
        if (st != EXIT_OK)
            return st;
    }
    c->args = argv + optind;
    c->nargs = argc - optind;
    return EXIT_OK;
}

/* option_name -- the name of the first given option in mask, for messages. */
static const char *option_name(unsigned mask)
{
    if (mask & A_TREE)
        return "--tree";
    if (mask & A_HEX)
        return "--hex";
    if (mask & A_RAW)
        return "--raw";
    if (mask & A_CREATE)
        return "--create/--no-create";
    return "--from/--to/--reverse/--limit/--keys-only";
}

/* check_args -- the options given apply to the command, and the count of
 * positional arguments is right. */
static int check_args(const cli *c)
{
    unsigned stray = c->o.given & ~c->cmd->allowed;
    if (stray)
        return usage_error(c->cmd, "%s does not apply to this command", option_name(stray));
    if (c->nargs < c->cmd->nargs)
        return usage_error(c->cmd, "%s: missing arguments", c->cmd->name);
    if (c->nargs > c->cmd->nargs)
        return usage_error(c->cmd, "unexpected argument '%s'", c->args[c->cmd->nargs]);
    if (c->o.tree && strlen(c->o.tree) > SHALE_MAX_TREE_NAME)
        return usage_error(c->cmd, "--tree: a name is at most %u bytes", SHALE_MAX_TREE_NAME);
    if (c->o.raw && c->o.hex)
        return usage_error(c->cmd, "--raw and --hex exclude each other");
    return EXIT_OK;
}

/* run_command -- parse a command's options and arguments and run it. */
static int run_command(const command *cmd, int argc, char **argv)
{
    cli c = {.cmd = cmd};
    int st = parse_opts(&c, argc, argv);
    if (st != EXIT_OK)
        return st;
    if (c.o.help) {
        cmd_usage(cmd);
        return finish_output(EXIT_OK);
    }
    st = check_args(&c);
    return st != EXIT_OK ? st : cmd->run(&c);
}

/* main -- dispatch on the first argument. */
int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error(NULL, "missing command");
    const char *first = argv[1];
    if (strcmp(first, "help") == 0 && argc == 3 && find_command(argv[2])) {
        cmd_usage(find_command(argv[2]));
        return finish_output(EXIT_OK);
    }
    if (strcmp(first, "-h") == 0 || strcmp(first, "--help") == 0 || strcmp(first, "help") == 0) {
        top_usage(stdout);
        return finish_output(EXIT_OK);
    }
    if (strcmp(first, "--version") == 0) {
        printf("shale %s\n", SHALE_VERSION_STRING);
        return finish_output(EXIT_OK);
    }
    const command *cmd = find_command(first);
    if (!cmd)
        return usage_error(NULL, first[0] == '-' ? "unknown option '%s'" : "unknown command '%s'",
                           first);
    return run_command(cmd, argc - 1, argv + 1);
}
