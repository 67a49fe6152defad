/* Argument and handle errors that need no daemon: NULL, garbage and
 * wrong-kind handles, NULL out-parameters and strings give -EINVAL with a
 * message, value getters give their neutral value, nothing crashes, and
 * the error text is per thread. */
#include "testutil.h"

#include <pthread.h>

static void version_is_semver(void) {
    const char *v = wcfs_version();
    unsigned a, b, c;
    char tail;
    CHECK(v && sscanf(v, "%u.%u.%u%c", &a, &b, &c, &tail) == 3, "version %s", v ? v : "(null)");
}

static void null_handles(void) {
    wcfs_WCFS *wc = (wcfs_WCFS *)1;
    wcfs_Conn *conn = (wcfs_Conn *)1;
    wcfs_FileH *fh = (wcfs_FileH *)1;
    wcfs_Mapping *m = (wcfs_Mapping *)1;
    wcfs_tid tid;

    FAILS(wcfs_join(NULL, 0, &wc), EINVAL, "wcfs_join");
    CHECK(wc == NULL, "failed join leaves *out NULL");
    FAILS(wcfs_join("file:///nonexistent/data.fs", 0, NULL), EINVAL, "wcfs_join");
    FAILS(wcfs_attach(NULL, &wc), EINVAL, "wcfs_attach");
    FAILS(wcfs_attach("", &wc), EINVAL, "wcfs_attach");
    FAILS(wcfs_attach("/", NULL), EINVAL, "wcfs_attach");

    CHECK(wcfs_mountpoint(NULL) == NULL, "mountpoint(NULL)");
    CHECK(strstr(wcfs_last_error(), "wcfs_mountpoint"), "message: %s", wcfs_last_error());
    FAILS(wcfs_head_at(NULL, &tid), EINVAL, "wcfs_head_at");
    FAILS(wcfs_close(NULL), EINVAL, "wcfs_close");
    FAILS(wcfs_connect(NULL, 1, &conn), EINVAL, "wcfs_connect");
    CHECK(conn == NULL, "failed connect leaves *out NULL");

    CHECK(wcfs_conn_at(NULL) == 0, "conn_at(NULL)");
    CHECK(strstr(wcfs_last_error(), "wcfs_conn_at"), "message: %s", wcfs_last_error());
    FAILS(wcfs_conn_resync(NULL, 1), EINVAL, "wcfs_conn_resync");
    FAILS(wcfs_conn_close(NULL), EINVAL, "wcfs_conn_close");
    FAILS(wcfs_conn_open(NULL, 1, &fh), EINVAL, "wcfs_conn_open");
    CHECK(fh == NULL, "failed open leaves *out NULL");

    CHECK(wcfs_fileh_blksize(NULL) == 0, "blksize(NULL)");
    CHECK(strstr(wcfs_last_error(), "wcfs_fileh_blksize"), "message: %s", wcfs_last_error());
    FAILS(wcfs_fileh_close(NULL), EINVAL, "wcfs_fileh_close");
    FAILS(wcfs_fileh_mmap(NULL, 0, 1, &m), EINVAL, "wcfs_fileh_mmap");
    CHECK(m == NULL, "failed mmap leaves *out NULL");

    CHECK(wcfs_mapping_mem_start(NULL) == NULL, "mem_start(NULL)");
    CHECK(wcfs_mapping_mem_stop(NULL) == NULL, "mem_stop(NULL)");
    CHECK(wcfs_mapping_blk_start(NULL) == -EINVAL, "blk_start(NULL)");
    FAILS(wcfs_mapping_remmap_blk(NULL, 0), EINVAL, "wcfs_mapping_remmap_blk");
    FAILS(wcfs_mapping_unmap(NULL), EINVAL, "wcfs_mapping_unmap");
}

/* Pointers that were never handles: small integers, a stack address, all
 * ones. None may be dereferenced. */
static void garbage_handles(void) {
    int local;
    void *bogus[] = {(void *)1, (void *)0x1000, (void *)&local, (void *)~(uintptr_t)0};
    for (size_t i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
        wcfs_FileH *fh;
        wcfs_Mapping *m;
        wcfs_tid tid;
        FAILS(wcfs_head_at((wcfs_WCFS *)bogus[i], &tid), EINVAL, "wcfs_head_at");
        FAILS(wcfs_conn_open((wcfs_Conn *)bogus[i], 1, &fh), EINVAL, "wcfs_conn_open");
        FAILS(wcfs_fileh_mmap((wcfs_FileH *)bogus[i], 0, 1, &m), EINVAL, "wcfs_fileh_mmap");
        FAILS(wcfs_mapping_unmap((wcfs_Mapping *)bogus[i]), EINVAL, "wcfs_mapping_unmap");
        FAILS(wcfs_close((wcfs_WCFS *)bogus[i]), EINVAL, "wcfs_close");
        CHECK(strstr(wcfs_last_error(), "not a"), "message: %s", wcfs_last_error());
    }
}

/* Attaching where no daemon serves fails with some errno and a message (the
 * exact errno is the library's: ENOENT, ENOTCONN, ...). */
static void attach_nowhere(void) {
    wcfs_WCFS *wc = (wcfs_WCFS *)1;
    int rc = wcfs_attach("/nonexistent/wcfs-mountpoint", &wc);
    CHECK(rc < 0, "attach to nowhere = %d", rc);
    CHECK(wc == NULL, "failed attach leaves *out NULL");
    CHECK(strlen(wcfs_last_error()) > strlen("wcfs_attach: "), "message: %s", wcfs_last_error());
    char tmp[] = "/tmp/wcfs-ctest-XXXXXX";
    CHECK(mkdtemp(tmp), "mkdtemp");
    rc = wcfs_attach(tmp, &wc); /* a plain directory: no .wcfs/zurl */
    CHECK(rc < 0, "attach to a plain directory = %d", rc);
    rmdir(tmp);
}

static void *fail_in_thread(void *arg) {
    (void)arg;
    FAILS(wcfs_conn_close(NULL), EINVAL, "wcfs_conn_close");
    return NULL;
}

/* The error text belongs to the thread: another thread's failure does not
 * replace ours, and success does not clear it. */
static void last_error_is_per_thread(void) {
    FAILS(wcfs_fileh_close(NULL), EINVAL, "wcfs_fileh_close");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fail_in_thread, NULL) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK(strstr(wcfs_last_error(), "wcfs_fileh_close"), "lost our message: %s", wcfs_last_error());
    (void)wcfs_version();
    CHECK(strstr(wcfs_last_error(), "wcfs_fileh_close"), "success cleared message: %s", wcfs_last_error());
}

int main(void) {
    version_is_semver();
    null_handles();
    garbage_handles();
    attach_nowhere();
    last_error_is_per_thread();
    CHECK(wcfs_live_handles() == 0, "live handles left: %zu", wcfs_live_handles());
    printf("test_args: ok (libwcfs %s)\n", wcfs_version());
    return 0;
}
