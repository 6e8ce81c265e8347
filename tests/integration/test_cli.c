/*
 * test_cli.c -- the `shale` command-line tool, run as a program.
 *
 * Each test runs the built binary "$SHALE_TOOLS/shale" (the Makefile sets
 * SHALE_TOOLS to build, build-asan or build-tsan; "build" when unset) with
 * fork and execv, its stdout and stderr sent to files in the test's scratch
 * directory, and checks the exit status and both outputs.  Under the asan
 * build the CLI itself runs with ASan and LeakSanitizer, so a leak or a
 * memory error in it fails the test through its exit status and stderr.
 *
 * Contract checked: 0 success, 1 library error or key not found, 2 usage
 * error; --help on every level goes to stdout with status 0; errors go to
 * stderr only; reading commands never create a database; a database held
 * open elsewhere is reported as such.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/testutil.h"
#include "shale.h"

#define MAX_ARGS 32

/* What one run of the CLI produced. */
typedef struct cli_result {
    int status; /* exit status, or 128 + signal */
    char *out;  /* stdout, NUL-terminated (may hold NULs before outlen) */
    size_t outlen;
    char *err; /* stderr, NUL-terminated */
    size_t errlen;
} cli_result;

static char scratch[512];
static char dbpath[600];

/* cli_setup -- a fresh scratch directory; dbpath names a database inside it. */
static void cli_setup(void)
{
    cr_assert_eq(tu_tmpdir(scratch, sizeof scratch), 0, "cannot make a scratch directory");
    snprintf(dbpath, sizeof dbpath, "%s/db", scratch);
}

/* cli_teardown -- remove the scratch directory. */
static void cli_teardown(void)
{
    tu_rmrf(scratch);
}

TestSuite(cli, .init = cli_setup, .fini = cli_teardown);

/* shale_bin -- the path of the CLI binary under test. */
static const char *shale_bin(void)
{
    static char path[1024];
    const char *dir = getenv("SHALE_TOOLS");
    snprintf(path, sizeof path, "%s/shale", dir && *dir ? dir : "build");
    return path;
}

/* slurp -- read the whole file at path into a new NUL-terminated buffer. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap + 1);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* child_exec -- in the child: redirect stdout/stderr to the files and exec. */
static void child_exec(char **argv, const char *outp, const char *errp)
{
    int out = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int in = open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || in < 0)
        _exit(125);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    execv(argv[0], argv);
    _exit(126);
}

/* run_argv -- run the CLI with argv (argv[0] is set here) and collect r. */
static void run_argv(cli_result *r, char **argv)
{
    char outp[700], errp[700];
    snprintf(outp, sizeof outp, "%s/stdout", scratch);
    snprintf(errp, sizeof errp, "%s/stderr", scratch);
    argv[0] = (char *)shale_bin();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork failed");
    if (pid == 0)
        child_exec(argv, outp, errp);
    int ws;
    cr_assert_eq(waitpid(pid, &ws, 0), pid);
    r->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    cr_assert_neq(r->status, 126, "cannot execute %s", argv[0]);
    r->out = slurp(outp, &r->outlen);
    r->err = slurp(errp, &r->errlen);
}

/* run -- run the CLI with the given arguments (NULL-terminated). */
static cli_result run(const char *arg, ...)
{
    char *argv[MAX_ARGS];
    cli_result r;
    va_list ap;
    int n = 1;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, MAX_ARGS - 1);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    run_argv(&r, argv);
    return r;
}

/* result_free -- release the outputs of r. */
static void result_free(cli_result *r)
{
    free(r->out);
    free(r->err);
}

/* expect -- r exited with status and printed exactly out (NULL: anything). */
static void expect(cli_result *r, int status, const char *out)
{
    cr_expect_eq(r->status, status, "exit status %d, want %d; stderr: %s", r->status, status,
                 r->err);
    if (out)
        cr_expect_str_eq(r->out, out);
}

/* expect_ok -- run succeeded (status 0, nothing on stderr) and printed out. */
static void expect_ok(cli_result r, const char *out)
{
    expect(&r, 0, out);
    cr_expect_str_eq(r.err, "", "unexpected stderr: %s", r.err);
    result_free(&r);
}

/* expect_fail -- run exited with status, printed nothing, and stderr holds msg. */
static void expect_fail(cli_result r, int status, const char *msg)
{
    expect(&r, status, "");
    cr_expect_not_null(strstr(r.err, msg), "stderr '%s' lacks '%s'", r.err, msg);
    result_free(&r);
}

/* exists -- whether path exists. */
static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

Test(cli, help_goes_to_stdout_and_exits_zero)
{
    const char *flags[] = {"--help", "-h", "help"};
    for (size_t i = 0; i < 3; i++) {
        cli_result r = run(flags[i], NULL);
        expect(&r, 0, NULL);
        cr_expect_not_null(strstr(r.out, "usage: shale"));
        cr_expect_not_null(strstr(r.out, "Exit status: 0"));
        cr_expect_str_eq(r.err, "");
        result_free(&r);
    }
}

Test(cli, every_command_has_help)
{
    const char *cmds[] = {"put", "get", "del", "scan", "stat", "check", "compact"};
    for (size_t i = 0; i < 7; i++) {
        char want[64];
        snprintf(want, sizeof want, "usage: shale %s", cmds[i]);
        cli_result r = run(cmds[i], "--help", NULL);
        expect(&r, 0, NULL);
        cr_expect_not_null(strstr(r.out, want), "%s --help: %s", cmds[i], r.out);
        result_free(&r);
        r = run(cmds[i], "-h", NULL);
        expect(&r, 0, NULL);
        cr_expect_not_null(strstr(r.out, want));
        result_free(&r);
    }
}

Test(cli, version_prints_the_library_version)
{
    expect_ok(run("--version", NULL), "shale " SHALE_VERSION_STRING "\n");
}

Test(cli, usage_errors_exit_two)
{
    expect_fail(run(NULL), 2, "missing command");
    expect_fail(run("frob", dbpath, NULL), 2, "unknown command 'frob'");
    expect_fail(run("--frob", NULL), 2, "unknown option");
    expect_fail(run("get", dbpath, "k", "--bogus", NULL), 2, "unknown option '--bogus'");
    expect_fail(run("get", dbpath, NULL), 2, "missing arguments");
    expect_fail(run("get", dbpath, "k", "extra", NULL), 2, "unexpected argument 'extra'");
    expect_fail(run("put", dbpath, "k", NULL), 2, "missing arguments");
    expect_fail(run("get", dbpath, "k", "--reverse", NULL), 2, "does not apply");
    expect_fail(run("scan", dbpath, "--tree", NULL), 2, "needs an argument");
    expect_fail(run("scan", dbpath, "--limit", "0", NULL), 2, "--limit");
    expect_fail(run("scan", dbpath, "--limit", "x", NULL), 2, "--limit");
    expect_fail(run("put", "--hex", dbpath, "zz", "00", NULL), 2, "not valid hex");
    expect_fail(run("put", "--hex", dbpath, "abc", "00", NULL), 2, "not valid hex");
    expect_fail(run("get", "--hex", "--raw", dbpath, "00", NULL), 2, "exclude");
    char longname[SHALE_MAX_TREE_NAME + 2];
    memset(longname, 't', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    expect_fail(run("put", "--tree", longname, dbpath, "k", "v", NULL), 2, "at most");
    cr_expect(!exists(dbpath), "a usage error created the database");
}

Test(cli, put_then_get)
{
    expect_ok(run("put", dbpath, "hello", "world", NULL), "");
    expect_ok(run("get", dbpath, "hello", NULL), "world\n");
    expect_ok(run("put", dbpath, "hello", "again", NULL), "");
    expect_ok(run("get", dbpath, "hello", NULL), "again\n");
}

Test(cli, get_of_a_missing_key_says_not_found)
{
    expect_ok(run("put", dbpath, "a", "1", NULL), "");
    cli_result r = run("get", dbpath, "b", NULL);
    expect(&r, 1, "");
    cr_expect_str_eq(r.err, "not found\n");
    result_free(&r);
}

Test(cli, reading_a_missing_database_fails_without_creating_it)
{
    expect_fail(run("get", dbpath, "k", NULL), 1, "no such database");
    expect_fail(run("scan", dbpath, NULL), 1, "no such database");
    expect_fail(run("stat", dbpath, NULL), 1, "no such database");
    expect_fail(run("del", dbpath, "k", NULL), 1, "no such database");
    expect_fail(run("put", "--no-create", dbpath, "k", "v", NULL), 1, "no such database");
    cr_expect(!exists(dbpath), "a command created the database");
    expect_ok(run("put", "--create", dbpath, "k", "v", NULL), "");
    cr_expect(exists(dbpath));
}

Test(cli, del_removes_a_key)
{
    expect_ok(run("put", dbpath, "k", "v", NULL), "");
    expect_ok(run("del", dbpath, "k", NULL), "");
    expect_fail(run("get", dbpath, "k", NULL), 1, "not found");
    expect_ok(run("del", dbpath, "k", NULL), "");
}

/* put_abcd -- store a..d in a shuffled order. */
static void put_abcd(void)
{
    const char *keys[] = {"c", "a", "d", "b"};
    for (size_t i = 0; i < 4; i++) {
        char v[8];
        snprintf(v, sizeof v, "v%s", keys[i]);
        expect_ok(run("put", dbpath, keys[i], v, NULL), "");
    }
}

Test(cli, scan_prints_entries_in_key_order)
{
    put_abcd();
    expect_ok(run("scan", dbpath, NULL), "a\tva\nb\tvb\nc\tvc\nd\tvd\n");
    expect_ok(run("scan", dbpath, "--keys-only", NULL), "a\nb\nc\nd\n");
    expect_ok(run("scan", dbpath, "--reverse", NULL), "d\tvd\nc\tvc\nb\tvb\na\tva\n");
}

Test(cli, scan_honours_bounds_and_limit)
{
    put_abcd();
    expect_ok(run("scan", dbpath, "--from", "b", "--to", "d", NULL), "b\tvb\nc\tvc\n");
    expect_ok(run("scan", dbpath, "--from", "bb", NULL), "c\tvc\nd\tvd\n");
    expect_ok(run("scan", dbpath, "--to", "b", NULL), "a\tva\n");
    expect_ok(run("scan", dbpath, "--limit", "2", NULL), "a\tva\nb\tvb\n");
    expect_ok(run("scan", dbpath, "--reverse", "--limit", "1", "--to", "d", NULL), "c\tvc\n");
    expect_ok(run("scan", dbpath, "--from", "x", NULL), "");
}

Test(cli, trees_are_separate_keyspaces)
{
    expect_ok(run("put", dbpath, "k", "default", NULL), "");
    expect_ok(run("put", "--tree", "t1", dbpath, "k", "in-t1", NULL), "");
    expect_ok(run("get", dbpath, "k", NULL), "default\n");
    expect_ok(run("get", dbpath, "k", "--tree", "t1", NULL), "in-t1\n");
    expect_ok(run("scan", dbpath, "--tree", "t1", NULL), "k\tin-t1\n");
    expect_ok(run("del", dbpath, "k", "--tree", "t1", NULL), "");
    expect_ok(run("get", dbpath, "k", NULL), "default\n");
    expect_fail(run("get", dbpath, "k", "--tree", "t1", NULL), 1, "not found");
}

Test(cli, a_missing_tree_is_an_error_and_is_not_created)
{
    expect_ok(run("put", dbpath, "k", "v", NULL), "");
    expect_fail(run("get", dbpath, "k", "--tree", "nope", NULL), 1, "no such tree");
    expect_fail(run("scan", dbpath, "--tree", "nope", NULL), 1, "no such tree");
    expect_fail(run("del", dbpath, "k", "--tree", "nope", NULL), 1, "no such tree");
    expect_fail(run("scan", dbpath, "--tree", "nope", NULL), 1, "no such tree");
}

Test(cli, hex_keys_and_values_round_trip)
{
    expect_ok(run("put", "--hex", dbpath, "00ff", "0a0B00", NULL), "");
    expect_ok(run("get", "--hex", dbpath, "00FF", NULL), "0a0b00\n");
    expect_ok(run("scan", "--hex", dbpath, NULL), "00ff\t0a0b00\n");
    expect_ok(run("scan", dbpath, NULL), "\\x00\\xff\t\\x0a\\x0b\\x00\n");
    expect_ok(run("scan", "--hex", dbpath, "--from", "00", "--to", "01", NULL), "00ff\t0a0b00\n");
}

Test(cli, unprintable_bytes_are_escaped_unless_raw)
{
    expect_ok(run("put", dbpath, "k", "a\tb\\c\x01\xc3\xa9", NULL), "");
    expect_ok(run("get", dbpath, "k", NULL), "a\\x09b\\\\c\\x01\\xc3\\xa9\n");
    expect_ok(run("get", "--raw", dbpath, "k", NULL), "a\tb\\c\x01\xc3\xa9\n");
    expect_ok(run("scan", "--raw", dbpath, NULL), "k\ta\tb\\c\x01\xc3\xa9\n");
}

Test(cli, raw_output_keeps_nul_bytes)
{
    expect_ok(run("put", "--hex", dbpath, "6b", "610062", NULL), "");
    cli_result r = run("get", "--raw", dbpath, "k", NULL);
    expect(&r, 0, NULL);
    cr_expect_eq(r.outlen, 4);
    cr_expect_eq(memcmp(r.out, "a\0b\n", 4), 0);
    result_free(&r);
}

Test(cli, empty_key_and_value_are_stored)
{
    expect_ok(run("put", dbpath, "", "", NULL), "");
    expect_ok(run("get", dbpath, "", NULL), "\n");
    expect_ok(run("scan", dbpath, NULL), "\t\n");
    expect_ok(run("put", dbpath, "e", "", NULL), "");
    expect_ok(run("get", dbpath, "e", NULL), "\n");
}

Test(cli, an_oversized_key_is_a_library_error)
{
    char *key = malloc(SHALE_MAX_KEY_SIZE + 2);
    memset(key, 'k', SHALE_MAX_KEY_SIZE + 1);
    key[SHALE_MAX_KEY_SIZE + 1] = '\0';
    expect_fail(run("put", dbpath, key, "v", NULL), 1, "shale: put: ");
    free(key);
}

Test(cli, double_dash_allows_leading_dashes)
{
    expect_ok(run("put", dbpath, "--", "-k", "-v", NULL), "");
    expect_ok(run("get", dbpath, "--", "-k", NULL), "-v\n");
}

Test(cli, check_passes_a_sound_database_and_names_a_bad_page)
{
    char key[16];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "key%03d", i);
        expect_ok(run("put", dbpath, key, "some value", NULL), "");
    }
    cli_result r = run("check", dbpath, NULL);
    expect(&r, 0, NULL);
    cr_expect_not_null(strstr(r.out, ": ok:"), "%s", r.out);
    result_free(&r);
    expect_fail(run("check", "/nonexistent/db", NULL), 1, "shale: ");
    /* damage the page that holds the data (the last page written) */
    char path[700];
    snprintf(path, sizeof path, "%s/data", dbpath);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    cr_assert_gt(size, 3 * 4096);
    int hit = 0;
    for (long off = 2 * 4096 + 100; off < size; off += 4096) { /* every data page */
        cr_assert_eq(fseek(f, off, SEEK_SET), 0);
        int c = fgetc(f);
        cr_assert_eq(fseek(f, off, SEEK_SET), 0);
        fputc(c ^ 1, f);
        hit++;
    }
    fclose(f);
    cr_assert_gt(hit, 0);
    r = run("check", dbpath, NULL);
    cr_expect_eq(r.status, 1, "status %d: %s %s", r.status, r.out, r.err);
    cr_expect_not_null(strstr(r.err, "shale: "), "%s", r.err);
    result_free(&r);
}

Test(cli, compact_writes_a_copy_and_refuses_an_existing_one)
{
    char out[700];
    snprintf(out, sizeof out, "%s-compacted", dbpath);
    expect_ok(run("put", dbpath, "a", "1", NULL), "");
    expect_ok(run("put", dbpath, "b", "2", NULL), "");
    expect_ok(run("del", dbpath, "a", NULL), "");
    cli_result r = run("compact", dbpath, out, NULL);
    expect(&r, 0, NULL);
    cr_expect_not_null(strstr(r.out, "compacted into"), "%s", r.out);
    result_free(&r);
    expect_ok(run("scan", out, NULL), "b\t2\n");
    r = run("check", out, NULL);
    expect(&r, 0, NULL);
    cr_expect_not_null(strstr(r.out, " 0 free"), "%s", r.out);
    result_free(&r);
    expect_fail(run("compact", dbpath, out, NULL), 1, "exists");
    expect_fail(run("compact", dbpath, NULL), 2, "");
    tu_rmrf(out);
}

Test(cli, export_then_import_copies_every_tree_and_refuses_overlaps)
{
    char other[700], dump[700];
    snprintf(other, sizeof other, "%s-imported", dbpath);
    snprintf(dump, sizeof dump, "%s.dump", dbpath);
    expect_ok(run("put", dbpath, "a", "1", NULL), "");
    expect_ok(run("put", "--tree", "t", dbpath, "b", "2", NULL), "");
    cli_result r = run("export", dbpath, dump, NULL);
    expect(&r, 0, NULL);
    cr_expect_not_null(strstr(r.out, "exported to"), "%s", r.out);
    result_free(&r);
    expect_fail(run("export", dbpath, dump, NULL), 1, "exists");
    r = run("import", other, dump, NULL);
    expect(&r, 0, NULL);
    result_free(&r);
    expect_ok(run("scan", other, NULL), "a\t1\n");
    expect_ok(run("scan", "--tree", "t", other, NULL), "b\t2\n");
    /* again: every key exists; refused, the key named, nothing changed */
    expect_ok(run("put", other, "a", "changed", NULL), "");
    expect_fail(run("import", other, dump, NULL), 1, "key already in tree '': a");
    expect_ok(run("get", other, "a", NULL), "changed\n");
    r = run("import", "--overwrite", other, dump, NULL);
    expect(&r, 0, NULL);
    result_free(&r);
    expect_ok(run("get", other, "a", NULL), "1\n");
    /* a damaged dump */
    FILE *f = fopen(dump, "r+b");
    cr_assert_not_null(f);
    fseek(f, 14, SEEK_SET);
    fputc('#', f);
    fclose(f);
    expect_fail(run("import", other, dump, NULL), 1, "corrupt");
    expect_fail(run("import", other, NULL), 2, "");
    tu_rmrf(other);
    remove(dump);
}

Test(cli, stat_prints_every_statistic)
{
    static const char *const names[] = {
        "segments:",     "young segments:", "pages used:", "pages free:", "pages pending:",
        "file size:",    "log bytes:",      "entries:",    "tombstones:", "memtable bytes:",
        "checkpoints:",  "flushes:",        "merges:",     "cache hits:", "cache misses:",
        "write stalls:", "recovered:",
    };
    expect_ok(run("put", dbpath, "k", "v", NULL), "");
    cli_result r = run("stat", dbpath, NULL);
    expect(&r, 0, NULL);
    cr_expect_str_eq(r.err, "");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_expect_not_null(strstr(r.out, names[i]), "stat lacks '%s':\n%s", names[i], r.out);
    result_free(&r);
    expect_fail(run("stat", dbpath, "--tree", "t", NULL), 2, "does not apply");
}

Test(cli, a_database_open_elsewhere_is_reported)
{
    shale_db *db = NULL;
    cr_assert_eq(shale_open(dbpath, NULL, &db), SHALE_OK);
    expect_fail(run("get", dbpath, "k", NULL), 1, "database is open in another process");
    expect_fail(run("put", dbpath, "k", "v", NULL), 1, "database is open in another process");
    expect_fail(run("stat", dbpath, NULL), 1, "database is open in another process");
    cr_assert_eq(shale_close(db), SHALE_OK);
    expect_ok(run("put", dbpath, "k", "v", NULL), "");
}

/* fill -- write n keys "key%06d" = "val%d" with a small memtable, so that
 * they end up in segments as well as in the log. */
static void fill(int n)
{
    shale_options opts;
    shale_db *db = NULL;
    shale_tree *t = NULL;
    shale_options_default(&opts);
    opts.memtable_size = 64u << 10;
    cr_assert_eq(shale_open(dbpath, &opts, &db), SHALE_OK);
    cr_assert_eq(shale_open_tree(db, NULL, &t), SHALE_OK);
    for (int i = 0; i < n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "key%06d", i);
        int vl = snprintf(v, sizeof v, "val%d", i);
        cr_assert_eq(shale_insert(t, k, strlen(k), v, (size_t)vl, NULL), SHALE_OK);
    }
    cr_assert_eq(shale_close(db), SHALE_OK);
}

/* count_lines -- the number of newlines in s. */
static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

Test(cli, reads_what_the_library_wrote)
{
    fill(5000);
    cli_result r = run("scan", dbpath, "--keys-only", NULL);
    expect(&r, 0, NULL);
    cr_expect_eq(count_lines(r.out), 5000);
    cr_expect_eq(strncmp(r.out, "key000000\nkey000001\n", 20), 0);
    result_free(&r);
    expect_ok(run("get", dbpath, "key004321", NULL), "val4321\n");
    expect_ok(run("scan", dbpath, "--from", "key004998", NULL),
              "key004998\tval4998\nkey004999\tval4999\n");
    expect_ok(run("scan", dbpath, "--reverse", "--limit", "1", NULL), "key004999\tval4999\n");
}
