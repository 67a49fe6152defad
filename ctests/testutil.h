/* Helpers of the C tests: checks that report file:line and the library's
 * last error, and a client of python/fs_testdata/driver.py (the Python ZODB
 * committer and oracle) over two pipes.
 *
 * Environment (set by the harness, tests/c_api.rs):
 *   WCFS_TEST_MNT     mountpoint where a wcfsd serves WCFS_TEST_DATAFS
 *   WCFS_TEST_DATAFS  the data.fs it serves
 *   WCFS_TEST_OID     a ZBigFile in it (16 hex digits; 4 blocks of 4096 bytes)
 *   WCFS_PYTHON       Python with ZODB
 *   WCFS_TEST_DRIVER  path of driver.py
 *   WCFS_TEST_ZURL    the zurl of WCFS_TEST_DATAFS (test_join)
 *   WCFS_TEST_WCFSD   the installed wcfsd (test_join stops its daemon with it)
 * A test that needs them and does not find them exits 77 (CTest: skipped). */
#ifndef WCFS_TESTUTIL_H
#define WCFS_TESTUTIL_H

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <wcfs.h>

#define SKIP 77

#define FAIL(...)                                                          \
    do {                                                                   \
        fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);              \
        fprintf(stderr, __VA_ARGS__);                                      \
        fprintf(stderr, "\n  (wcfs_last_error: %s)\n", wcfs_last_error()); \
        exit(1);                                                           \
    } while (0)

#define CHECK(cond, ...)       \
    do {                       \
        if (!(cond))           \
            FAIL(__VA_ARGS__); \
    } while (0)

/* A call that must succeed. */
#define OK(call)                                                      \
    do {                                                              \
        int rc_ = (call);                                             \
        CHECK(rc_ == 0, "%s = %d (%s)", #call, rc_, strerror(-rc_));  \
    } while (0)

/* A call that must fail with -err and leave a message naming `func`. */
#define FAILS(call, err, func)                                                   \
    do {                                                                         \
        int rc_ = (call);                                                        \
        CHECK(rc_ == -(err), "%s = %d, want -%s", #call, rc_, #err);             \
        CHECK(strstr(wcfs_last_error(), func) != NULL,                           \
              "%s: last error %s does not name %s", #call, wcfs_last_error(), func); \
    } while (0)

static inline const char *env_or_skip(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "SKIP: $%s not set (run through tests/c_api.rs)\n", name);
        exit(SKIP);
    }
    return v;
}

static inline uint64_t parse_hex(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (errno || end == s)
        FAIL("not a hex id: %s", s);
    return (uint64_t)v;
}

/* --- the Python driver --- */

struct driver {
    pid_t pid;
    FILE *in;  /* commands */
    FILE *out; /* answers */
};

static inline void driver_start(struct driver *d, const char *datafs) {
    const char *py = env_or_skip("WCFS_PYTHON");
    const char *script = env_or_skip("WCFS_TEST_DRIVER");
    int cmd[2], ans[2];
    CHECK(pipe(cmd) == 0 && pipe(ans) == 0, "pipe: %s", strerror(errno));
    d->pid = fork();
    CHECK(d->pid >= 0, "fork: %s", strerror(errno));
    if (d->pid == 0) {
        dup2(cmd[0], 0);
        dup2(ans[1], 1);
        close(cmd[0]); close(cmd[1]); close(ans[0]); close(ans[1]);
        execl(py, py, script, datafs, (char *)NULL);
        perror("exec python driver");
        _exit(127);
    }
    close(cmd[0]);
    close(ans[1]);
    d->in = fdopen(cmd[1], "w");
    d->out = fdopen(ans[0], "r");
    CHECK(d->in && d->out, "fdopen");
}

/* Sends one JSON command; returns the answer line (static buffer) after
 * checking that it starts with `want` ("ok", "tid", ...). */
static inline const char *driver_cmd(struct driver *d, const char *want, const char *fmt, ...) {
    static char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vfprintf(d->in, fmt, ap);
    va_end(ap);
    fputc('\n', d->in);
    fflush(d->in);
    CHECK(fgets(line, sizeof line, d->out) != NULL, "python driver died");
    line[strcspn(line, "\n")] = 0;
    CHECK(strncmp(line, want, strlen(want)) == 0, "driver: want %s, got %s", want, line);
    return line + strlen(want) + (line[strlen(want)] == ' ');
}

static inline uint64_t driver_new(struct driver *d, size_t blksize) {
    return parse_hex(driver_cmd(d, "oid", "{\"op\":\"new\",\"blksize\":%zu}", blksize));
}

static inline uint64_t driver_commit(struct driver *d) {
    return parse_hex(driver_cmd(d, "tid", "{\"op\":\"commit\"}"));
}

/* The whole file as Python sees it at `at`: malloc'd, *len set. */
static inline uint8_t *driver_content(struct driver *d, uint64_t oid, uint64_t at, size_t *len) {
    const char *n = driver_cmd(d, "data",
                               "{\"op\":\"content\",\"file\":\"%016llx\",\"at\":\"%016llx\"}",
                               (unsigned long long)oid, (unsigned long long)at);
    *len = (size_t)strtoull(n, NULL, 10);
    uint8_t *buf = malloc(*len ? *len : 1);
    CHECK(buf, "malloc");
    CHECK(fread(buf, 1, *len, d->out) == *len, "short data from driver");
    return buf;
}

static inline void driver_stop(struct driver *d) {
    fprintf(d->in, "{\"op\":\"quit\"}\n");
    fclose(d->in);
    fclose(d->out);
    int st;
    waitpid(d->pid, &st, 0);
}

/* Waits until the daemon's head/ shows `tid`. */
static inline void wait_head(wcfs_WCFS *wc, wcfs_tid tid) {
    for (int i = 0; i < 4000; i++) {
        wcfs_tid head;
        OK(wcfs_head_at(wc, &head));
        if (head >= tid)
            return;
        usleep(5000);
    }
    FAIL("head/at did not reach %016llx in 20s", (unsigned long long)tid);
}

/* The test's seed: $WCFS_TEST_SEED or the clock; printed to reproduce. */
static inline unsigned test_seed(const char *test) {
    const char *s = getenv("WCFS_TEST_SEED");
    unsigned seed = s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)(time(NULL) ^ getpid());
    fprintf(stderr, "%s: seed %u (reproduce with WCFS_TEST_SEED=%u)\n", test, seed, seed);
    return seed;
}

/* Runs `fn(arg)` in a forked child; returns the child's wait status. */
static inline int in_child(void (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
    return st;
}

#endif
